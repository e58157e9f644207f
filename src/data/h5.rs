//! HDF5 files through `rust-hdf5`, a pure-Rust implementation: no system HDF5 library, so the
//! default build needs nothing beyond the Rust toolchain. This is the one place that talks to the
//! crate; the AVE layout, the synthetic writer and `extract` go through [`Dataset`] and
//! [`RowWriter`].
//!
//! The crate's typed reads only compare element sizes (f64 and i64 look alike), so the stored
//! type is classified here ([`StoredType`]) and callers check it before reading.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use rust_hdf5::{DatatypeMessage, H5Dataset, H5File, H5Type};

use super::error::DataError;

pub use rust_hdf5::Hdf5Error as Error;

/// What a dataset stores, as far as the AVE layout cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredType {
    /// IEEE float of this many bytes.
    Float(u32),
    /// Two's-complement (signed) or unsigned integer of this many bytes.
    Int { bytes: u32, signed: bool },
    /// Anything else (strings, compounds, ...).
    Other,
}

impl fmt::Display for StoredType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StoredType::Float(b) => write!(f, "float{}", 8 * b),
            StoredType::Int { bytes, signed } => {
                write!(f, "{}int{}", if signed { "" } else { "u" }, 8 * bytes)
            }
            StoredType::Other => f.write_str("a non-numeric type"),
        }
    }
}

/// Most bytes of data a dataset may declare per byte of its file. Deflate, the strongest filter
/// in HDF5 files, expands at most about 1032:1; a larger declaration is a damaged (or sparse,
/// never written) dataset, and reading it would allocate memory the file cannot fill.
pub const MAX_EXPANSION: u64 = 1032;

/// Checks that `dims` of `elem_bytes`-byte elements (`what`: the dataset's shape, or one
/// chunk's) fit the file (`file_len` bytes) as [`MAX_EXPANSION`] allows: the element count of
/// every read is then a valid `usize`, and no buffer (a read, a decompressed chunk) exceeds it.
fn check_declared_size(
    path: &Path,
    key: &str,
    what: &str,
    dims: &[usize],
    elem_bytes: u64,
    file_len: u64,
) -> Result<(), DataError> {
    let bytes = dims
        .iter()
        .try_fold(elem_bytes.max(1), |acc, &d| acc.checked_mul(d as u64));
    let limit = file_len.saturating_mul(MAX_EXPANSION);
    match bytes {
        Some(b) if b <= limit => Ok(()),
        _ => Err(DataError::Invalid {
            path: path.to_path_buf(),
            msg: format!(
                "dataset '{key}' declares {what} {dims:?} of {elem_bytes}-byte elements ({}), \
                 more than a {file_len}-byte file can hold (damaged file?)",
                bytes.map_or("more than 2^64 bytes".to_string(), |b| format!("{b} bytes"))
            ),
        }),
    }
}

fn h5err(path: &Path, context: impl Into<String>) -> impl FnOnce(Error) -> DataError {
    let (path, context) = (path.to_path_buf(), context.into());
    move |source| DataError::Hdf5 {
        path,
        context,
        source,
    }
}

/// One opened dataset of one file, with its shape and stored type.
pub struct Dataset {
    // Field order matters: the dataset handle goes before the file.
    ds: H5Dataset,
    _file: H5File,
    pub path: PathBuf,
    pub key: String,
    pub shape: Vec<usize>,
    pub stored: StoredType,
}

impl Dataset {
    /// Opens dataset `key` of `path`; `what` describes the file in the "missing" error.
    pub fn open(path: &Path, key: &str, what: &str) -> Result<Self, DataError> {
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => {
                return Err(DataError::Missing {
                    path: path.to_path_buf(),
                    what: what.to_string(),
                });
            }
            Err(e) => {
                return Err(DataError::Io {
                    path: path.to_path_buf(),
                    what: "cannot access file",
                    source: e,
                });
            }
        }
        let file_len = fs::metadata(path)
            .map_err(|e| DataError::Io {
                path: path.to_path_buf(),
                what: "cannot access file",
                source: e,
            })?
            .len();
        let file =
            H5File::open(path).map_err(h5err(path, "not a readable HDF5 file (truncated?)"))?;
        let names = file.dataset_names();
        if !names.iter().any(|n| n.trim_start_matches('/') == key) {
            return Err(DataError::Invalid {
                path: path.to_path_buf(),
                msg: format!("no dataset '{key}' (file contains {names:?})"),
            });
        }
        let ds = file
            .dataset(key)
            .map_err(h5err(path, format!("'{key}' is not a readable dataset")))?;
        let stored = match ds.datatype() {
            Ok(DatatypeMessage::FloatingPoint { size, .. }) => StoredType::Float(size),
            Ok(DatatypeMessage::FixedPoint { size, signed, .. }) => StoredType::Int {
                bytes: size,
                signed,
            },
            Ok(_) => StoredType::Other,
            Err(e) => {
                return Err(h5err(
                    path,
                    format!("dataset '{key}' has an unsupported data type"),
                )(e));
            }
        };
        let shape = ds.shape();
        let elem_bytes = match stored {
            StoredType::Float(b) | StoredType::Int { bytes: b, .. } => b.into(),
            StoredType::Other => 1,
        };
        check_declared_size(path, key, "shape", &shape, elem_bytes, file_len)?;
        if let Some(chunk) = ds.chunk_dims() {
            check_declared_size(path, key, "chunks of shape", &chunk, elem_bytes, file_len)?;
        }
        Ok(Dataset {
            shape,
            ds,
            _file: file,
            path: path.to_path_buf(),
            key: key.to_string(),
            stored,
        })
    }

    fn context(&self) -> String {
        format!("cannot read dataset '{}'", self.key)
    }

    /// Rows `start..start + count` (whole along the other axes), read into `T`, whose size the
    /// caller has matched to [`Dataset::stored`].
    pub fn read_rows<T: H5Type>(&self, start: usize, count: usize) -> Result<Vec<T>, DataError> {
        let mut starts = vec![0; self.shape.len()];
        let mut counts = self.shape.clone();
        starts[0] = start;
        counts[0] = count;
        self.ds.read_slice(&starts, &counts).map_err(h5err(
            &self.path,
            format!(
                "cannot read rows {start}..{} of dataset '{}'",
                start + count,
                self.key
            ),
        ))
    }

    /// Every value as f64: floats widened exactly, integers converted (labels are small).
    pub fn read_all_f64(&self) -> Result<Vec<f64>, DataError> {
        let err = h5err(&self.path, self.context());
        match self.stored {
            StoredType::Float(_) => self.ds.read_numeric_as::<f64>().map_err(err),
            _ => {
                let v = self.ds.read_numeric_as::<i128>().map_err(err)?;
                Ok(v.into_iter().map(|x| x as f64).collect())
            }
        }
    }

    /// Every value of an integer dataset, whatever its width and sign.
    pub fn read_all_int(&self) -> Result<Vec<i128>, DataError> {
        self.ds
            .read_numeric_as::<i128>()
            .map_err(h5err(&self.path, self.context()))
    }
}

/// Writes one dataset of a new file, row block by row block, under a temporary name in the
/// destination's directory; [`RowWriter::finish`] closes it (the crate syncs the data), renames it
/// into place and syncs the directory. Dropped unfinished, the temporary file is removed.
pub struct RowWriter<T: H5Type> {
    ds: Option<H5Dataset>,
    file: Option<H5File>,
    tmp: PathBuf,
    dest: PathBuf,
    shape: Vec<usize>,
    next: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: H5Type> RowWriter<T> {
    pub fn create(dest: &Path, key: &str, shape: &[usize]) -> Result<Self, DataError> {
        let dest = &crate::fsutil::resolve_link(dest).map_err(|e| DataError::Io {
            path: dest.to_path_buf(),
            what: "cannot resolve the symbolic link",
            source: e,
        })?;
        let tmp = crate::fsutil::tmp_path(dest);
        let created = H5File::create(&tmp).and_then(|file| {
            let ds = file.new_dataset::<T>().shape(shape).create(key)?;
            Ok((file, ds))
        });
        let (file, ds) = created.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            h5err(dest, "cannot create HDF5 file")(e)
        })?;
        Ok(RowWriter {
            ds: Some(ds),
            file: Some(file),
            tmp,
            dest: dest.to_path_buf(),
            shape: shape.to_vec(),
            next: 0,
            _t: std::marker::PhantomData,
        })
    }

    pub fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Writes the next whole rows (`data.len()` a multiple of the row length).
    pub fn write_rows(&mut self, data: &[T]) -> Result<(), DataError> {
        let row_len = self.row_len().max(1);
        let count = data.len() / row_len;
        assert_eq!(count * row_len, data.len(), "partial row");
        assert!(
            self.next + count <= self.shape[0],
            "more rows than the shape"
        );
        if count == 0 {
            return Ok(());
        }
        let mut starts = vec![0; self.shape.len()];
        let mut counts = self.shape.clone();
        starts[0] = self.next;
        counts[0] = count;
        let ds = self.ds.as_ref().expect("writer open");
        ds.write_slice(&starts, &counts, data).map_err(h5err(
            &self.dest,
            format!("cannot write rows {}..{}", self.next, self.next + count),
        ))?;
        self.next += count;
        Ok(())
    }

    /// Closes the file and moves it into place (every row must have been written).
    pub fn finish(mut self) -> Result<(), DataError> {
        if self.next != self.shape[0] {
            return Err(DataError::Invalid {
                path: self.dest.clone(),
                msg: format!("wrote {} of {} rows", self.next, self.shape[0]),
            });
        }
        drop(self.ds.take());
        let file = self.file.take().expect("writer open");
        file.close()
            .map_err(h5err(&self.dest, "cannot finish HDF5 file"))?;
        crate::fsutil::rename_durable(&self.tmp, &self.dest).map_err(|e| DataError::Io {
            path: self.dest.clone(),
            what: "cannot move the written file into place",
            source: e,
        })
    }
}

impl<T: H5Type> Drop for RowWriter<T> {
    fn drop(&mut self) {
        if self.file.is_some() {
            drop(self.ds.take());
            drop(self.file.take());
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a whole dataset `key` of `shape` into a new file at `dest` (atomically).
pub fn write<T: H5Type>(
    dest: &Path,
    key: &str,
    shape: &[usize],
    data: &[T],
) -> Result<(), DataError> {
    let mut w = RowWriter::create(dest, key, shape)?;
    w.write_rows(data)?;
    w.finish()
}

/// Rows of f32 values (features) stored as float32, or widened to float64.
pub enum FloatRowWriter {
    F32(RowWriter<f32>),
    F64(RowWriter<f64>, Vec<f64>),
}

impl FloatRowWriter {
    pub fn create(dest: &Path, key: &str, shape: &[usize], f64: bool) -> Result<Self, DataError> {
        Ok(if f64 {
            FloatRowWriter::F64(RowWriter::create(dest, key, shape)?, Vec::new())
        } else {
            FloatRowWriter::F32(RowWriter::create(dest, key, shape)?)
        })
    }

    pub fn write_rows(&mut self, data: &[f32]) -> Result<(), DataError> {
        match self {
            FloatRowWriter::F32(w) => w.write_rows(data),
            FloatRowWriter::F64(w, buf) => {
                buf.clear();
                buf.extend(data.iter().map(|&x| x as f64));
                w.write_rows(buf)
            }
        }
    }

    pub fn finish(self) -> Result<(), DataError> {
        match self {
            FloatRowWriter::F32(w) => w.finish(),
            FloatRowWriter::F64(w, _) => w.finish(),
        }
    }
}
