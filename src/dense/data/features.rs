//! Per-video features: `<prefix><id>_rgb<ext>` and `<prefix><id>_flow<ext>` (I3D, `T × 1024`
//! each), `<prefix><id>_vggish<ext>` (VGGish, `T × 128`); `prefix` empty and `ext` `.npy` in
//! the official config.
//!
//! The official `__getitem__` loads each file with `np.load(...).astype(np.float32)`,
//! concatenates RGB and flow along the channels (`np.hstack`, so both need the same `T`),
//! keeps every `downsample_rate`-th snippet of each modality (`[::rate]`), transposes to
//! `C × T` and cuts both modalities to the shorter length (`min_len`). Ours does the same and
//! returns the two `C × T` matrices; it also reads float64 files (cast like `astype`), either
//! byte order and Fortran order (as `np.load` does), and checks what the official code leaves
//! to crash later: channel counts, equal RGB/flow lengths, at least one snippet, finite values.

use std::path::{Path, PathBuf};

use npyz::{DType, NpyFile, Order, TypeChar};

use super::error::DenseDataError;

/// A row-major `rows × cols` float32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// A video's features, channel-major like the official `C × T` tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoFeatures {
    /// `[visual_dim, len]`: RGB channels then flow channels.
    pub visual: Matrix,
    /// `[audio_dim, len]`.
    pub audio: Matrix,
}

impl VideoFeatures {
    /// Number of snippets `T` (equal in both modalities).
    pub fn len(&self) -> usize {
        self.visual.cols
    }
    pub fn is_empty(&self) -> bool {
        self.visual.cols == 0
    }
}

/// Where a video's files are and what they must hold.
#[derive(Debug, Clone)]
pub struct FeatureSpec<'a> {
    pub folder: &'a Path,
    pub prefix: &'a str,
    pub ext: &'a str,
    pub rgb_dim: usize,
    pub flow_dim: usize,
    pub audio_dim: usize,
    pub downsample_rate: usize,
}

impl FeatureSpec<'_> {
    /// `<folder>/<prefix><id>_<kind><ext>`, as the official `os.path.join`.
    pub fn file(&self, id: &str, kind: &str) -> PathBuf {
        self.folder
            .join(format!("{}{id}_{kind}{}", self.prefix, self.ext))
    }
}

/// Loads, concatenates, downsamples and aligns one video's features (official order of steps).
pub fn load_video(spec: &FeatureSpec, id: &str) -> Result<VideoFeatures, DenseDataError> {
    let rgb_path = spec.file(id, "rgb");
    let rgb = read_checked(&rgb_path, id, spec.rgb_dim)?;
    let flow_path = spec.file(id, "flow");
    let flow = read_checked(&flow_path, id, spec.flow_dim)?;
    if rgb.rows != flow.rows {
        return Err(DenseDataError::Length {
            path: flow_path,
            video: id.into(),
            rgb: rgb.rows,
            flow: flow.rows,
        });
    }
    let audio = read_checked(&spec.file(id, "vggish"), id, spec.audio_dim)?;
    let rate = spec.downsample_rate.max(1);
    let t_visual = rgb.rows.div_ceil(rate);
    let t_audio = audio.rows.div_ceil(rate);
    let len = t_visual.min(t_audio);
    let mut visual = transpose_rows(&rgb, rate, len);
    visual.extend(transpose_rows(&flow, rate, len));
    Ok(VideoFeatures {
        visual: Matrix {
            rows: spec.rgb_dim + spec.flow_dim,
            cols: len,
            data: visual,
        },
        audio: Matrix {
            rows: spec.audio_dim,
            cols: len,
            data: transpose_rows(&audio, rate, len),
        },
    })
}

/// `m[::rate][:len].T` as channel-major data.
fn transpose_rows(m: &Matrix, rate: usize, len: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(m.cols * len);
    for c in 0..m.cols {
        out.extend((0..len).map(|t| m.data[t * rate * m.cols + c]));
    }
    out
}

/// [`read_npy`] plus the checks: `expected` channels, at least one snippet, finite values.
pub fn read_checked(path: &Path, id: &str, expected: usize) -> Result<Matrix, DenseDataError> {
    let m = read_npy(path, id)?;
    if m.cols != expected {
        return Err(DenseDataError::Width {
            path: path.to_path_buf(),
            video: id.into(),
            expected,
            found: m.cols,
        });
    }
    if m.rows == 0 {
        return Err(npy_err(path, id, "no snippets (0 rows)".into()));
    }
    if let Some(i) = m.data.iter().position(|x| !x.is_finite()) {
        return Err(DenseDataError::NonFinite {
            path: path.to_path_buf(),
            video: id.into(),
            row: i / m.cols,
            col: i % m.cols,
            value: m.data[i],
        });
    }
    Ok(m)
}

/// A 2-D float32/float64 `.npy` file as a row-major float32 matrix (`astype(np.float32)`).
pub fn read_npy(path: &Path, id: &str) -> Result<Matrix, DenseDataError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DenseDataError::Missing {
            path: path.to_path_buf(),
            video: Some(id.into()),
            what: "feature file".into(),
        },
        _ => DenseDataError::Io {
            path: path.to_path_buf(),
            what: "reading a feature file",
            source: e,
        },
    })?;
    let npy =
        NpyFile::new(&bytes[..]).map_err(|e| npy_err(path, id, format!("not a .npy file: {e}")))?;
    let shape = npy.shape().to_vec();
    let [rows, cols] = shape[..] else {
        return Err(npy_err(
            path,
            id,
            format!("shape {shape:?} is not 2-D (snippets × channels)"),
        ));
    };
    let (rows, cols) = (rows as usize, cols as usize);
    let order = npy.order();
    let data = read_floats(npy, path, id)?;
    if data.len() != rows * cols {
        return Err(npy_err(
            path,
            id,
            format!("{} values for shape {shape:?}", data.len()),
        ));
    }
    let data = match order {
        Order::C => data,
        Order::Fortran => (0..rows * cols)
            .map(|i| data[(i % cols) * rows + i / cols])
            .collect(),
    };
    Ok(Matrix { rows, cols, data })
}

fn read_floats(npy: NpyFile<&[u8]>, path: &Path, id: &str) -> Result<Vec<f32>, DenseDataError> {
    let size = match npy.dtype() {
        DType::Plain(ts) if ts.type_char() == TypeChar::Float => ts.size_field(),
        other => {
            return Err(npy_err(
                path,
                id,
                format!("dtype {} is not float32 or float64", other.descr()),
            ));
        }
    };
    let bad = |e: std::io::Error| npy_err(path, id, format!("truncated or unreadable data: {e}"));
    match size {
        4 => npy.into_vec::<f32>().map_err(bad),
        8 => Ok(npy
            .into_vec::<f64>()
            .map_err(bad)?
            .into_iter()
            .map(|x| x as f32)
            .collect()),
        _ => Err(npy_err(
            path,
            id,
            format!("float{} is not float32 or float64", size * 8),
        )),
    }
}

fn npy_err(path: &Path, id: &str, msg: String) -> DenseDataError {
    DenseDataError::Npy {
        path: path.to_path_buf(),
        video: id.into(),
        msg,
    }
}

/// Writes a row-major `rows × cols` float32 matrix as a C-order little-endian `.npy` file.
pub fn write_npy(path: &Path, m: &Matrix) -> std::io::Result<()> {
    use npyz::WriterBuilder as _;
    let mut bytes = Vec::new();
    let mut w = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[m.rows as u64, m.cols as u64])
        .writer(&mut bytes)
        .begin_nd()?;
    w.extend(m.data.iter().copied())?;
    w.finish()?;
    // Replaced atomically: a stopped writer leaves the old file or the new one.
    crate::fsutil::write_atomic(path, &bytes)
}
