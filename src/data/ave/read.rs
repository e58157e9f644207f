//! Reading an AVE-layout directory: [`AveDir::open`] validates the files, the `read_*` methods
//! fetch rows (per contiguous run, hyperslabs) as `f32`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::validate::{
    check_audio_shape, check_order, check_same_rows, check_visual_shape, fmt_shape, invalid,
    labels_to_classes,
};
use super::{
    ANNOTATIONS_FILE, AUDIO_FILE, AVE_ROWS, DataError, FEATURE_KEY, FeatureDType, LABELS_FILE,
    LabelSource, NUM_LABELS, ORDER_KEY, Split, VISUAL_FILE, builtin_order,
};
use crate::data::annotations::{Annotation, BACKGROUND, T, builtin_annotations, load_annotations};
use crate::data::h5::{self, StoredType};

/// Upper bound on the stored bytes fetched by one hyperslab read.
const READ_CHUNK_BYTES: usize = 64 << 20;

/// One opened feature dataset (`visual_feature.h5` or `audio_feature.h5`).
struct FeatureFile {
    ds: h5::Dataset,
    path: PathBuf,
    /// Full shape, `shape[0] == N`.
    shape: Vec<usize>,
    dtype: FeatureDType,
}

impl FeatureFile {
    fn open(path: PathBuf, what: &str) -> Result<Self, DataError> {
        let ds = h5::Dataset::open(&path, FEATURE_KEY, what)?;
        let dtype = match ds.stored {
            StoredType::Float(4) => FeatureDType::F32,
            StoredType::Float(8) => FeatureDType::F64,
            other => {
                return Err(invalid(
                    &path,
                    format!(
                        "dataset '{FEATURE_KEY}' has dtype {other}; expected float32 or float64"
                    ),
                ));
            }
        };
        Ok(FeatureFile {
            shape: ds.shape.clone(),
            ds,
            path,
            dtype,
        })
    }

    fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Appends `rows` (in the given order) to `out`; on error `out` is left unchanged.
    fn read_rows(&self, rows: &[usize], out: &mut Vec<f32>) -> Result<(), DataError> {
        let n = self.shape[0];
        if let Some(&r) = rows.iter().find(|&&r| r >= n) {
            return Err(invalid(
                &self.path,
                format!("row {r} out of range (N = {n})"),
            ));
        }
        let row_len = self.row_len();
        let max_rows = (READ_CHUNK_BYTES / (row_len * self.dtype.size()).max(1)).max(1);
        let base = out.len();
        out.reserve(rows.len() * row_len);
        for (start, count) in row_runs(rows, max_rows) {
            if let Err(e) = self.read_run(start, count, out) {
                out.truncate(base);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Reads rows `start..start+count` with one hyperslab and appends them as f32.
    fn read_run(&self, start: usize, count: usize, out: &mut Vec<f32>) -> Result<(), DataError> {
        let row_len = self.row_len();
        let non_finite = |p: usize, v: f64| {
            invalid(
                &self.path,
                format!(
                    "non-finite value {v} in row {} (element {} of the row)",
                    start + p / row_len,
                    p % row_len
                ),
            )
        };
        match self.dtype {
            FeatureDType::F32 => {
                let v = self.ds.read_rows::<f32>(start, count)?;
                if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                    return Err(non_finite(p, v[p] as f64));
                }
                out.extend_from_slice(&v);
            }
            FeatureDType::F64 => {
                let v = self.ds.read_rows::<f64>(start, count)?;
                if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                    return Err(non_finite(p, v[p]));
                }
                if let Some(p) = v.iter().position(|x| x.abs() > f32::MAX as f64) {
                    return Err(invalid(
                        &self.path,
                        format!(
                            "value {} in row {} (element {} of the row) exceeds the float32 range",
                            v[p],
                            start + p / row_len,
                            p % row_len
                        ),
                    ));
                }
                out.extend(v.iter().map(|&x| x as f32));
            }
        }
        Ok(())
    }
}

/// Splits `rows` into runs `(start, count)` of consecutive increasing rows, each at most
/// `max_rows` long, preserving the request order.
fn row_runs(rows: &[usize], max_rows: usize) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let start = rows[i];
        let mut count = 1;
        while i + count < rows.len() && count < max_rows && rows[i + count] == start + count {
            count += 1;
        }
        runs.push((start, count));
        i += count;
    }
    runs
}

fn read_labels_file(path: &Path, n: usize) -> Result<Vec<u8>, DataError> {
    let ds = h5::Dataset::open(path, FEATURE_KEY, "labels")?;
    if ds.stored == StoredType::Other {
        return Err(invalid(
            path,
            format!(
                "dataset '{FEATURE_KEY}' has dtype {}; expected a float or integer type",
                ds.stored
            ),
        ));
    }
    if ds.shape != [n, T, NUM_LABELS] {
        return Err(invalid(
            path,
            format!(
                "dataset '{FEATURE_KEY}' has shape {} but the features have {n} rows; expected [{n},{T},{NUM_LABELS}]",
                fmt_shape(&ds.shape)
            ),
        ));
    }
    labels_to_classes(path, &ds.read_all_f64()?)
}

fn read_order_file(path: &Path, n: usize) -> Result<Vec<usize>, DataError> {
    let ds = h5::Dataset::open(path, ORDER_KEY, "split order")?;
    if ds.shape.len() != 1 {
        return Err(invalid(
            path,
            format!(
                "dataset '{ORDER_KEY}' has shape {}; expected one dimension",
                fmt_shape(&ds.shape)
            ),
        ));
    }
    if !matches!(ds.stored, StoredType::Int { .. }) {
        return Err(invalid(
            path,
            format!(
                "dataset '{ORDER_KEY}' has dtype {}; expected an integer type",
                ds.stored
            ),
        ));
    }
    check_order(path, &ds.read_all_int()?, n)
}

/// An opened, validated AVE-layout directory.
pub struct AveDir {
    dir: PathBuf,
    n: usize,
    visual: FeatureFile,
    audio: FeatureFile,
    /// Class (0..=28) of every segment, `n * T`, and where it came from.
    labels: Option<(LabelSource, Vec<u8>)>,
    /// `None`: order file missing and no built-in fallback.
    orders: [Option<Vec<usize>>; 3],
}

impl fmt::Debug for AveDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AveDir")
            .field("dir", &self.dir)
            .field("rows", &self.n)
            .field("visual_shape", &self.visual_shape())
            .field("visual_dtype", &self.visual.dtype)
            .field("audio_dim", &self.audio_dim())
            .field("audio_dtype", &self.audio.dtype)
            .field("labels", &self.label_source())
            .finish()
    }
}

impl AveDir {
    /// Opens and validates `dir` (files exist, keys, dtypes, shapes, label one-hot-ness, order
    /// indices). Feature values are checked for NaN/inf when rows are read.
    pub fn open(dir: &Path) -> Result<AveDir, DataError> {
        if !dir.is_dir() {
            return Err(DataError::Missing {
                path: dir.to_path_buf(),
                what: "AVE data directory".into(),
            });
        }
        let visual = FeatureFile::open(
            dir.join(VISUAL_FILE),
            "visual features (HDF5 dataset 'avadataset', [N,10,7,7,C] or [N,10,C])",
        )?;
        let audio = FeatureFile::open(
            dir.join(AUDIO_FILE),
            "audio features (HDF5 dataset 'avadataset', [N,10,C])",
        )?;
        check_visual_shape(&visual.path, &visual.shape)?;
        check_audio_shape(&audio.path, &audio.shape)?;
        check_same_rows(&visual.path, &visual.shape, &audio.path, audio.shape[0])?;
        let n = visual.shape[0];

        let labels_path = dir.join(LABELS_FILE);
        let ann_path = dir.join(ANNOTATIONS_FILE);
        let labels = if labels_path.exists() {
            Some((LabelSource::LabelsFile, read_labels_file(&labels_path, n)?))
        } else if ann_path.exists() {
            let anns = load_annotations(&ann_path)?;
            if anns.len() != n {
                return Err(invalid(
                    &ann_path,
                    format!(
                        "has {} annotation lines but the features have {n} rows",
                        anns.len()
                    ),
                ));
            }
            Some((LabelSource::AnnotationsFile, classes_of(&anns)))
        } else if n == AVE_ROWS {
            Some((LabelSource::Builtin, classes_of(&builtin_annotations())))
        } else {
            None
        };

        let mut orders: [Option<Vec<usize>>; 3] = [None, None, None];
        for split in Split::ALL {
            let p = dir.join(split.order_file());
            orders[split.index()] = if p.exists() {
                Some(read_order_file(&p, n)?)
            } else if n == AVE_ROWS {
                Some(builtin_order(split))
            } else {
                None
            };
        }
        Ok(AveDir {
            dir: dir.to_path_buf(),
            n,
            visual,
            audio,
            labels,
            orders,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of rows (videos) `N`.
    pub fn num_rows(&self) -> usize {
        self.n
    }

    /// Per-row visual shape, e.g. `[10,7,7,512]` or pooled `[10,2048]`.
    pub fn visual_shape(&self) -> Vec<usize> {
        self.visual.shape[1..].to_vec()
    }

    /// Visual channel count (last axis).
    pub fn visual_dim(&self) -> usize {
        *self.visual.shape.last().unwrap()
    }

    /// Audio channel count (`Ca` of `[N,10,Ca]`).
    pub fn audio_dim(&self) -> usize {
        self.audio.shape[2]
    }

    pub fn visual_dtype(&self) -> FeatureDType {
        self.visual.dtype
    }

    pub fn audio_dtype(&self) -> FeatureDType {
        self.audio.dtype
    }

    /// Row indices of a split (order file in the directory, else the built-in one when N == 4143).
    pub fn order(&self, split: Split) -> Result<Vec<usize>, DataError> {
        self.orders[split.index()].clone().ok_or_else(|| DataError::Missing {
            path: self.dir.join(split.order_file()),
            what: format!(
                "{split} split order (no built-in fallback: the built-in orders are for N = {AVE_ROWS}, this directory has N = {})",
                self.n
            ),
        })
    }

    pub fn has_labels(&self) -> bool {
        self.labels.is_some()
    }

    pub fn label_source(&self) -> Option<LabelSource> {
        self.labels.as_ref().map(|(s, _)| *s)
    }

    /// The largest event class (0..28, background excluded) labelled on any segment of `rows`.
    pub fn max_event_class(&self, rows: &[usize]) -> Option<usize> {
        let (_, classes) = self.labels.as_ref()?;
        rows.iter()
            .flat_map(|&r| &classes[r * T..(r + 1) * T])
            .map(|&c| c as usize)
            .filter(|&c| c != BACKGROUND)
            .max()
    }

    /// Appends the visual features of `rows` (each row contiguous, `visual_shape()` elements, f32).
    pub fn read_visual(&self, rows: &[usize], out: &mut Vec<f32>) -> Result<(), DataError> {
        self.visual.read_rows(rows, out)
    }

    /// Appends the audio features of `rows` (each row `[10, audio_dim()]`, f32).
    pub fn read_audio(&self, rows: &[usize], out: &mut Vec<f32>) -> Result<(), DataError> {
        self.audio.read_rows(rows, out)
    }

    /// Appends the one-hot labels of `rows` (`[rows.len(), 10, 29]`, f32).
    pub fn read_labels(&self, rows: &[usize], out: &mut Vec<f32>) -> Result<(), DataError> {
        let Some((_, classes)) = &self.labels else {
            return Err(DataError::Missing {
                path: self.dir.join(LABELS_FILE),
                what: format!(
                    "labels (neither {LABELS_FILE} nor {ANNOTATIONS_FILE} in the directory, and N = {} is not the AVE size {AVE_ROWS})",
                    self.n
                ),
            });
        };
        if let Some(&r) = rows.iter().find(|&&r| r >= self.n) {
            return Err(invalid(
                &self.dir.join(LABELS_FILE),
                format!("row {r} out of range (N = {})", self.n),
            ));
        }
        out.reserve(rows.len() * T * NUM_LABELS);
        for &r in rows {
            for &c in &classes[r * T..(r + 1) * T] {
                let mut onehot = [0.0f32; NUM_LABELS];
                onehot[c as usize] = 1.0;
                out.extend_from_slice(&onehot);
            }
        }
        Ok(())
    }
}

fn classes_of(anns: &[Annotation]) -> Vec<u8> {
    anns.iter()
        .flat_map(|a| a.segment_labels())
        .map(|c| c as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_order_bytes_match_hdf5_library() {
        let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/ave");
        for split in Split::ALL {
            let path = assets.join(split.order_file());
            let ds = h5::Dataset::open(&path, ORDER_KEY, "order").unwrap();
            assert_eq!(ds.stored.to_string(), "int64");
            let lib: Vec<usize> = ds
                .read_all_int()
                .unwrap()
                .into_iter()
                .map(|x| x as usize)
                .collect();
            assert_eq!(builtin_order(split), lib, "{split}");
            assert_eq!(read_order_file(&path, AVE_ROWS).unwrap(), lib);
        }
    }

    #[test]
    fn runs_of_rows() {
        assert_eq!(row_runs(&[], 4), vec![]);
        assert_eq!(
            row_runs(&[3, 4, 5, 0, 6, 6, 7], 8),
            vec![(3, 3), (0, 1), (6, 1), (6, 2)]
        );
        assert_eq!(row_runs(&[0, 1, 2, 3, 4], 2), vec![(0, 2), (2, 2), (4, 1)]);
        assert_eq!(row_runs(&[5, 4, 3], 8), vec![(5, 1), (4, 1), (3, 1)]);
    }
}
