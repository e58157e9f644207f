//! AVE dataset directory (HDF5 feature, label and split files) — reader, validator and writer.
//!
//! Layout (REFERENCE §1.1), one dataset per file:
//!
//! | file | key | shape | dtype |
//! |---|---|---|---|
//! | `visual_feature.h5` | `avadataset` | `[N,10,7,7,Cv]` or pooled `[N,10,Cv]` | float32 / float64 |
//! | `audio_feature.h5` | `avadataset` | `[N,10,Ca]` | float32 / float64 |
//! | `labels.h5` (optional) | `avadataset` | `[N,10,29]` one-hot, 28 = background | float / integer |
//! | `{train,val,test}_order.h5` | `order` | `[len]` row indices into `0..N` | integer |
//!
//! Without `labels.h5`, labels come from `Annotations.txt` in the directory, else from the
//! built-in AVE annotations when `N == 4143`. Missing order files fall back to the built-in AVE
//! splits when `N == 4143`. Features are read per contiguous run of rows (hyperslabs), never the
//! whole file, and always returned as `f32`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use super::error::DataError;
use super::h5::{self, StoredType};

use super::annotations::{BACKGROUND, T, builtin_annotations, load_annotations};

pub const VISUAL_FILE: &str = "visual_feature.h5";
pub const AUDIO_FILE: &str = "audio_feature.h5";
pub const LABELS_FILE: &str = "labels.h5";
pub const ANNOTATIONS_FILE: &str = "Annotations.txt";
/// Dataset key of the feature and label files.
pub const FEATURE_KEY: &str = "avadataset";
/// Dataset key of the order (split) files.
pub const ORDER_KEY: &str = "order";
/// Number of rows of the real AVE dataset (lines of `Annotations.txt`).
pub const AVE_ROWS: usize = 4143;
/// Width of a one-hot label vector (28 categories + background).
pub const NUM_LABELS: usize = BACKGROUND + 1;
/// Spatial grid of the unpooled visual features.
pub const GRID: usize = 7;

/// Upper bound on the stored bytes fetched by one hyperslab read.
const READ_CHUNK_BYTES: usize = 64 << 20;

fn invalid(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

// ------------------------------------------------------------------------------------------------
// Split, dtype

/// A data split, backed by `{train,val,test}_order.h5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// File name of the split's order file, e.g. `train_order.h5`.
    pub fn order_file(self) -> &'static str {
        match self {
            Split::Train => "train_order.h5",
            Split::Val => "val_order.h5",
            Split::Test => "test_order.h5",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => Err(DataError::UnknownSplit(other.to_string())),
        }
    }
}

/// Storage type of the feature datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureDType {
    F32,
    F64,
}

impl FeatureDType {
    fn size(self) -> usize {
        match self {
            FeatureDType::F32 => 4,
            FeatureDType::F64 => 8,
        }
    }
}

impl fmt::Display for FeatureDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FeatureDType::F32 => "float32",
            FeatureDType::F64 => "float64",
        })
    }
}

/// Where the labels of an [`AveDir`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSource {
    /// `labels.h5` in the directory.
    LabelsFile,
    /// `Annotations.txt` in the directory.
    AnnotationsFile,
    /// The built-in AVE annotations (directory has `N == 4143` rows and neither file).
    Builtin,
}

// ------------------------------------------------------------------------------------------------
// Built-in split orders

const BUILTIN_TRAIN_ORDER: &[u8] = include_bytes!("../../assets/ave/train_order.h5");
const BUILTIN_VAL_ORDER: &[u8] = include_bytes!("../../assets/ave/val_order.h5");
const BUILTIN_TEST_ORDER: &[u8] = include_bytes!("../../assets/ave/test_order.h5");
const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
/// The shipped order files (h5py, superblock v0, contiguous, no compression) store their int64
/// little-endian payload at this offset up to the end of the file. A unit test checks this
/// decoding against the HDF5 library.
const BUILTIN_ORDER_DATA_OFFSET: usize = 2144;

/// The official AVE split order (shipped `{train,val,test}_order.h5`, for `N == 4143`).
pub fn builtin_order(split: Split) -> Vec<usize> {
    let (bytes, len) = match split {
        Split::Train => (BUILTIN_TRAIN_ORDER, 3339),
        Split::Val => (BUILTIN_VAL_ORDER, 402),
        Split::Test => (BUILTIN_TEST_ORDER, 402),
    };
    assert!(
        bytes.starts_with(HDF5_SIGNATURE) && bytes.len() == BUILTIN_ORDER_DATA_OFFSET + 8 * len,
        "built-in {} is not the expected file",
        split.order_file()
    );
    bytes[BUILTIN_ORDER_DATA_OFFSET..]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize)
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Validation helpers (shared by reader and writer)

fn check_visual_shape(path: &Path, shape: &[usize]) -> Result<(), DataError> {
    let ok = match shape {
        [n, t, h, w, c] => *n > 0 && *t == T && *h == GRID && *w == GRID && *c > 0,
        [n, t, c] => *n > 0 && *t == T && *c > 0,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!(
                "dataset '{FEATURE_KEY}' has shape {}; expected [N,{T},{GRID},{GRID},C] or [N,{T},C] with N, C > 0",
                fmt_shape(shape)
            ),
        ))
    }
}

fn check_audio_shape(path: &Path, shape: &[usize]) -> Result<(), DataError> {
    match shape {
        [n, t, c] if *n > 0 && *t == T && *c > 0 => Ok(()),
        _ => Err(invalid(
            path,
            format!(
                "dataset '{FEATURE_KEY}' has shape {}; expected [N,{T},C] with N, C > 0",
                fmt_shape(shape)
            ),
        )),
    }
}

fn check_same_rows(
    visual: &Path,
    vshape: &[usize],
    audio: &Path,
    n_audio: usize,
) -> Result<(), DataError> {
    if vshape[0] != n_audio {
        return Err(invalid(
            visual,
            format!(
                "dataset '{FEATURE_KEY}' has shape {} but {} has {n_audio} rows",
                fmt_shape(vshape),
                file_name(audio)
            ),
        ));
    }
    Ok(())
}

/// Checks `[n,10,29]` one-hot label values; returns the class of every segment (`n*10`).
fn labels_to_classes(path: &Path, values: &[f64]) -> Result<Vec<u8>, DataError> {
    let mut classes = Vec::with_capacity(values.len() / NUM_LABELS);
    for (k, v) in values.chunks_exact(NUM_LABELS).enumerate() {
        let bad = |why: String| {
            invalid(
                path,
                format!(
                    "labels of row {}, segment {} are not one-hot: {why}",
                    k / T,
                    k % T
                ),
            )
        };
        if let Some(j) = v.iter().position(|&x| x != 0.0 && x != 1.0) {
            return Err(bad(format!("entry {j} is {}", v[j])));
        }
        let ones: Vec<usize> = (0..NUM_LABELS).filter(|&j| v[j] == 1.0).collect();
        if ones.len() != 1 {
            return Err(bad(format!(
                "{} entries are 1 (at {ones:?}), expected exactly one",
                ones.len()
            )));
        }
        classes.push(ones[0] as u8);
    }
    Ok(classes)
}

/// Checks order indices: each in `0..n`, no duplicates.
fn check_order(path: &Path, indices: &[i128], n: usize) -> Result<Vec<usize>, DataError> {
    let mut seen = vec![usize::MAX; n];
    let mut out = Vec::with_capacity(indices.len());
    for (pos, &ix) in indices.iter().enumerate() {
        if ix < 0 || ix >= n as i128 {
            return Err(invalid(path, format!("index {ix} out of range (N = {n})")));
        }
        let ix = ix as usize;
        if seen[ix] != usize::MAX {
            return Err(invalid(
                path,
                format!("duplicate index {ix} (at positions {} and {pos})", seen[ix]),
            ));
        }
        seen[ix] = pos;
        out.push(ix);
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------------
// Feature files

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

// ------------------------------------------------------------------------------------------------
// Reader

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

fn classes_of(anns: &[super::annotations::Annotation]) -> Vec<u8> {
    anns.iter()
        .flat_map(|a| a.segment_labels())
        .map(|c| c as u8)
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Writer

/// Borrowed feature values, f32 or f64.
#[derive(Debug, Clone, Copy)]
pub enum FeatureSlice<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl FeatureSlice<'_> {
    fn len(&self) -> usize {
        match self {
            FeatureSlice::F32(v) => v.len(),
            FeatureSlice::F64(v) => v.len(),
        }
    }
}

impl<'a> From<&'a [f32]> for FeatureSlice<'a> {
    fn from(v: &'a [f32]) -> Self {
        FeatureSlice::F32(v)
    }
}
impl<'a> From<&'a [f64]> for FeatureSlice<'a> {
    fn from(v: &'a [f64]) -> Self {
        FeatureSlice::F64(v)
    }
}
impl<'a> From<&'a Vec<f32>> for FeatureSlice<'a> {
    fn from(v: &'a Vec<f32>) -> Self {
        FeatureSlice::F32(v)
    }
}
impl<'a> From<&'a Vec<f64>> for FeatureSlice<'a> {
    fn from(v: &'a Vec<f64>) -> Self {
        FeatureSlice::F64(v)
    }
}

fn check_feature_values(
    path: &Path,
    data: FeatureSlice<'_>,
    row_len: usize,
    dtype: FeatureDType,
) -> Result<(), DataError> {
    let bad = |p: usize, v: f64, why: &str| {
        invalid(
            path,
            format!(
                "{why} value {v} in row {} (element {} of the row)",
                p / row_len,
                p % row_len
            ),
        )
    };
    match data {
        FeatureSlice::F32(v) => {
            if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                return Err(bad(p, v[p] as f64, "non-finite"));
            }
        }
        FeatureSlice::F64(v) => {
            if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                return Err(bad(p, v[p], "non-finite"));
            }
            if dtype == FeatureDType::F32
                && let Some(p) = v.iter().position(|x| x.abs() > f32::MAX as f64)
            {
                return Err(bad(p, v[p], "out-of-float32-range"));
            }
        }
    }
    Ok(())
}

/// Writes an AVE-layout directory (created if needed): `visual_feature.h5`, `audio_feature.h5`
/// (key `avadataset`, stored as `dtype`), `labels.h5` when `labels` is given (`[N,10,29]` f32
/// one-hot) and one `{split}_order.h5` (key `order`, int64) per entry of `orders`. Shapes are full
/// shapes including `N`. Everything is validated before anything is written (shapes as in
/// [`AveDir::open`], lengths, finite values, one-hot labels, order indices). Each file is written
/// under a temporary name and renamed into place. Files of the layout that are not written
/// (`labels.h5` when `labels` is `None`, order files of splits not in `orders`) are removed from
/// `dir` so that stale files cannot contradict the new data; `Annotations.txt` is left alone.
#[allow(clippy::too_many_arguments)]
pub fn write_features<'a>(
    dir: &Path,
    visual: impl Into<FeatureSlice<'a>>,
    visual_shape: &[usize],
    audio: impl Into<FeatureSlice<'a>>,
    audio_shape: &[usize],
    labels: Option<&[f32]>,
    orders: &[(Split, Vec<usize>)],
    dtype: FeatureDType,
) -> Result<(), DataError> {
    let (visual, audio) = (visual.into(), audio.into());
    let vpath = dir.join(VISUAL_FILE);
    let apath = dir.join(AUDIO_FILE);
    let lpath = dir.join(LABELS_FILE);
    check_visual_shape(&vpath, visual_shape)?;
    check_audio_shape(&apath, audio_shape)?;
    check_same_rows(&vpath, visual_shape, &apath, audio_shape[0])?;
    let n = visual_shape[0];
    for (path, data, shape) in [(&vpath, visual, visual_shape), (&apath, audio, audio_shape)] {
        let expected: usize = shape.iter().product();
        if data.len() != expected {
            return Err(invalid(
                path,
                format!(
                    "{} values given for shape {} ({expected} values)",
                    data.len(),
                    fmt_shape(shape)
                ),
            ));
        }
        check_feature_values(path, data, expected / shape[0], dtype)?;
    }
    if let Some(l) = labels {
        if l.len() != n * T * NUM_LABELS {
            return Err(invalid(
                &lpath,
                format!(
                    "{} label values given; expected {n}*{T}*{NUM_LABELS} = {}",
                    l.len(),
                    n * T * NUM_LABELS
                ),
            ));
        }
        let as_f64: Vec<f64> = l.iter().map(|&x| x as f64).collect();
        labels_to_classes(&lpath, &as_f64)?;
    }
    let mut seen = [false; 3];
    for (split, idx) in orders {
        let p = dir.join(split.order_file());
        if std::mem::replace(&mut seen[split.index()], true) {
            return Err(invalid(&p, format!("{split} order given twice")));
        }
        let as_i: Vec<i128> = idx.iter().map(|&i| i as i128).collect();
        check_order(&p, &as_i, n)?;
    }

    fs::create_dir_all(dir).map_err(|e| DataError::Io {
        path: dir.to_path_buf(),
        what: "cannot create directory",
        source: e,
    })?;
    write_feature_file(&vpath, visual, visual_shape, dtype)?;
    write_feature_file(&apath, audio, audio_shape, dtype)?;
    match labels {
        Some(l) => h5::write(&lpath, FEATURE_KEY, &[n, T, NUM_LABELS], l)?,
        None => remove_if_exists(&lpath)?,
    }
    for split in Split::ALL {
        let p = dir.join(split.order_file());
        match orders.iter().find(|(s, _)| *s == split) {
            Some((_, idx)) => {
                let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
                h5::write(&p, ORDER_KEY, &[v.len()], &v)?;
            }
            None => remove_if_exists(&p)?,
        }
    }
    Ok(())
}

fn write_feature_file(
    path: &Path,
    data: FeatureSlice<'_>,
    shape: &[usize],
    dtype: FeatureDType,
) -> Result<(), DataError> {
    match (data, dtype) {
        (FeatureSlice::F32(v), FeatureDType::F32) => h5::write(path, FEATURE_KEY, shape, v),
        (FeatureSlice::F64(v), FeatureDType::F64) => h5::write(path, FEATURE_KEY, shape, v),
        (FeatureSlice::F32(v), FeatureDType::F64) => {
            let w: Vec<f64> = v.iter().map(|&x| x as f64).collect();
            h5::write(path, FEATURE_KEY, shape, &w)
        }
        (FeatureSlice::F64(v), FeatureDType::F32) => {
            let w: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            h5::write(path, FEATURE_KEY, shape, &w)
        }
    }
}

fn remove_if_exists(path: &Path) -> Result<(), DataError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataError::Io {
            path: path.to_path_buf(),
            what: "cannot remove stale file",
            source: e,
        }),
    }
}

// ------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_parse_and_display() {
        for s in Split::ALL {
            assert_eq!(s.to_string().parse::<Split>().unwrap(), s);
        }
        assert_eq!("val".parse::<Split>().unwrap(), Split::Val);
        assert_eq!(Split::Test.order_file(), "test_order.h5");
        let msg = "Train".parse::<Split>().unwrap_err().to_string();
        assert!(msg.contains("\"Train\""), "{msg}");
    }

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

    #[test]
    fn order_checks() {
        let p = Path::new("/d/test_order.h5");
        assert_eq!(check_order(p, &[2, 0, 1], 3).unwrap(), vec![2, 0, 1]);
        let m = check_order(p, &[5000], AVE_ROWS).unwrap_err().to_string();
        assert_eq!(m, "/d/test_order.h5: index 5000 out of range (N = 4143)");
        let m = check_order(p, &[-1], 3).unwrap_err().to_string();
        assert!(m.contains("index -1 out of range"), "{m}");
        let m = check_order(p, &[1, 2, 1], 3).unwrap_err().to_string();
        assert!(
            m.contains("duplicate index 1 (at positions 0 and 2)"),
            "{m}"
        );
    }

    #[test]
    fn onehot_checks() {
        let p = Path::new("/d/labels.h5");
        let mut v = vec![0.0f64; 2 * T * NUM_LABELS];
        for k in 0..2 * T {
            v[k * NUM_LABELS + (k % NUM_LABELS)] = 1.0;
        }
        let classes = labels_to_classes(p, &v).unwrap();
        assert_eq!(classes[13], 13);
        let mut w = v.clone();
        w[(T + 2) * NUM_LABELS] = 1.0; // row 1, segment 2 gets a second 1
        let m = labels_to_classes(p, &w).unwrap_err().to_string();
        assert!(
            m.starts_with("/d/labels.h5: labels of row 1, segment 2 are not one-hot"),
            "{m}"
        );
        let mut w = v.clone();
        w[5] = 0.5;
        assert!(
            labels_to_classes(p, &w)
                .unwrap_err()
                .to_string()
                .contains("entry 5 is 0.5")
        );
        let mut w = v;
        w[0] = 0.0; // row 0 segment 0 all zero
        assert!(
            labels_to_classes(p, &w)
                .unwrap_err()
                .to_string()
                .contains("0 entries are 1")
        );
    }

    #[test]
    fn shape_checks() {
        let p = Path::new("/d/visual_feature.h5");
        check_visual_shape(p, &[5, 10, 7, 7, 512]).unwrap();
        check_visual_shape(p, &[5, 10, 2048]).unwrap();
        for bad in [
            &[5, 9, 7, 7, 512][..],
            &[5, 10, 6, 7, 512],
            &[0, 10, 3],
            &[5, 10],
            &[5, 10, 0],
        ] {
            let m = check_visual_shape(p, bad).unwrap_err().to_string();
            assert!(
                m.starts_with("/d/visual_feature.h5: dataset 'avadataset' has shape ["),
                "{m}"
            );
        }
        let m = check_same_rows(p, &[5, 10, 7, 7, 512], Path::new("/d/audio_feature.h5"), 4)
            .unwrap_err()
            .to_string();
        assert_eq!(
            m,
            "/d/visual_feature.h5: dataset 'avadataset' has shape [5,10,7,7,512] but audio_feature.h5 has 4 rows"
        );
    }
}
