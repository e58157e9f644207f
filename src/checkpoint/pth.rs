//! State dicts from PyTorch checkpoints (`torch.save` output), read with tracel-ai's
//! [`pytorch_reader`]. No pickle code is ever executed.
//!
//! **Accepted.** Every container `torch.save` has written, detected from the file: the zip
//! archive of torch >= 1.6, the legacy pickle stream of torch 0.1.10–1.5 (also
//! `_use_new_zipfile_serialization=False`) and the TAR archive before that; storages of every
//! plain dtype (f64/f32/f16/bf16, signed and unsigned integers, bool) and views of them
//! (strides, storage offsets, `expand`), gathered into row-major order. The state dict is the
//! top-level dict when all its entries are tensors, or else the dict under the first of
//! [`WRAPPER_KEYS`] present (`{"state_dict": ...}` of the official code, `{"model": ...}` as
//! PANNs saves, `{"I_state_dict": ...}` of the CACE fine-tuned files); other entries beside it
//! (an optimizer, an iteration count) are ignored and their tensors never read. Stripping the
//! `module.` prefix of `nn.DataParallel` is left to the caller.
//!
//! **Refused.** A pickle names the Python callables that rebuild its objects ("globals"), and
//! `torch.load` without `weights_only=True` would call any of them, `posix.system` included.
//! The reader only interprets the few that rebuild tensors and dicts and never calls anything;
//! on top of that every global left in the parsed object tree that a state dict never needs
//! (anything outside [`ALLOWED_GLOBALS`]) makes the whole file an error naming it, so a
//! tampered checkpoint is reported rather than half loaded. A global whose result the pickle
//! itself discards (popped, or the state of a dict) is not in the tree and so cannot be named,
//! but it is not run either. Also refused, with the file named: damaged or truncated files,
//! big-endian files, sparse/quantized tensors, and a state dict entry that is not a tensor.
//!
//! The reader hands tensors back in a map, so file order is lost: [`read_state_dict`] sorts by
//! key, and callers that need the official order take it from the model.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use burn::tensor::{bf16, f16};
pub use pytorch_reader::DType;
use pytorch_reader::{PickleValue, PytorchError, PytorchReader};

/// Keys under which a checkpoint may wrap its state dict, tried in this order.
pub const WRAPPER_KEYS: [&str; 3] = ["state_dict", "model", "I_state_dict"];

/// Python types that may appear in the parsed tree of a state dict: what the reader builds
/// from the globals it interprets (tensors, storages, ints too wide for an i64) and those
/// globals themselves.
pub const ALLOWED_GLOBALS: [&str; 11] = [
    "torch.Tensor",
    "torch.TypedStorage",
    "torch.UntypedStorage",
    "int",
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2",
];

/// Attribute of a state dict's `OrderedDict` (per-module versions) that the reader keeps as
/// an entry; it holds no tensor and is skipped.
const METADATA_KEY: &str = "_metadata";

/// One tensor of a checkpoint: PyTorch shape, the dtype it was stored as, values row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct PthTensorOf<T> {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub data: Vec<T>,
}

/// Values as f32 (f64 storages and integers rounded to nearest).
pub type PthTensor = PthTensorOf<f32>;
/// Values as f64: exact for float storages and for integers up to 2^53.
pub type PthTensorF64 = PthTensorOf<f64>;

impl<T> PthTensorOf<T> {
    /// Number of elements (1 for a 0-dim tensor).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An error while reading a checkpoint; it names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {}: {kind}", path.display())]
pub struct PthError {
    pub path: PathBuf,
    pub kind: PthErrorKind,
}

/// What went wrong; see [`PthError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PthErrorKind {
    #[error("cannot read it: {0}")]
    Read(io::Error),
    #[error("damaged, truncated or not a PyTorch checkpoint: {0}")]
    Parse(PytorchError),
    #[error(
        "pickle refers to {}, which a PyTorch state dict never needs; refusing to load it \
         (no pickle code is ever executed)",
        globals_text(.0)
    )]
    ForbiddenGlobal(Vec<String>),
    #[error("no state dict in it: {0}")]
    NoStateDict(String),
    #[error("state dict entry '{key}' is {found}, not a tensor")]
    NotATensor { key: String, found: String },
    #[error("cannot read tensor data: {0}")]
    TensorData(io::Error),
}

fn globals_text(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    let s = if names.len() == 1 { "" } else { "s" };
    format!("global{s} {}", quoted.join(", "))
}

type KResult<T> = Result<T, PthErrorKind>;

/// The state dict (name -> tensor, values as f32), sorted by name. See the module docs for
/// what is accepted and refused.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, PthTensor)>, PthError> {
    read_as(path, &WRAPPER_KEYS)
}

/// [`read_state_dict`] with other wrapper keys, tried in order (the UnAV checkpoints hold
/// `state_dict` and `state_dict_ema`; evaluation reads the latter).
pub fn read_state_dict_under(
    path: &Path,
    wrappers: &[&str],
) -> Result<Vec<(String, PthTensor)>, PthError> {
    read_as(path, wrappers)
}

/// Same as [`read_state_dict`], with f64 values (no rounding of f64 checkpoints).
pub fn read_state_dict_f64(path: &Path) -> Result<Vec<(String, PthTensorF64)>, PthError> {
    read_as(path, &WRAPPER_KEYS)
}

fn read_as<T: Elem>(
    path: &Path,
    wrappers: &[&str],
) -> Result<Vec<(String, PthTensorOf<T>)>, PthError> {
    read_inner(path, wrappers).map_err(|kind| PthError {
        path: path.to_path_buf(),
        kind,
    })
}

fn read_inner<T: Elem>(path: &Path, wrappers: &[&str]) -> KResult<Vec<(String, PthTensorOf<T>)>> {
    std::fs::metadata(path).map_err(PthErrorKind::Read)?;
    let tree = PytorchReader::read_pickle_data(path, None).map_err(PthErrorKind::Parse)?;
    check_globals(&tree)?;
    let reader = match state_dict_key(&tree, wrappers)? {
        None => PytorchReader::new(path),
        Some(key) => PytorchReader::with_top_level_key(path, key),
    }
    .map_err(PthErrorKind::Parse)?;
    let mut out = reader
        .into_tensors()
        .into_iter()
        .map(|(name, t)| Ok((name, decode(t)?)))
        .collect::<KResult<Vec<_>>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Refuses a tree holding any Python type outside [`ALLOWED_GLOBALS`], naming them all.
fn check_globals(tree: &PickleValue) -> KResult<()> {
    fn walk<'a>(v: &'a PickleValue, found: &mut BTreeSet<&'a str>) {
        match v {
            PickleValue::Unsupported(name) if !ALLOWED_GLOBALS.contains(&name.as_str()) => {
                found.insert(name);
            }
            PickleValue::List(items) => items.iter().for_each(|x| walk(x, found)),
            PickleValue::Dict(items) => items.values().for_each(|x| walk(x, found)),
            _ => {}
        }
    }
    let mut found = BTreeSet::new();
    walk(tree, &mut found);
    if found.is_empty() {
        return Ok(());
    }
    Err(PthErrorKind::ForbiddenGlobal(
        found.into_iter().map(String::from).collect(),
    ))
}

fn is_tensor(v: &PickleValue) -> bool {
    matches!(v, PickleValue::Unsupported(t) if t == "torch.Tensor")
}

/// A dict's entries other than the `_metadata` attribute of an `OrderedDict` state dict.
fn entries(
    items: &std::collections::HashMap<String, PickleValue>,
) -> impl Iterator<Item = (&String, &PickleValue)> {
    items
        .iter()
        .filter(|(k, v)| !(*k == METADATA_KEY && matches!(v, PickleValue::Dict(_))))
}

/// Where the state dict is (`None`: the top level, else the wrapper key), after checking that
/// every entry of it is a tensor.
fn state_dict_key<'a>(tree: &PickleValue, wrappers: &[&'a str]) -> KResult<Option<&'a str>> {
    let PickleValue::Dict(root) = tree else {
        return Err(PthErrorKind::NoStateDict(format!(
            "the top-level object is {}, not a dict",
            kind(tree)
        )));
    };
    let all_tensors = entries(root).all(|(_, v)| is_tensor(v));
    let key = if all_tensors && entries(root).next().is_some() {
        None
    } else {
        wrappers
            .iter()
            .copied()
            .find(|k| matches!(root.get(*k), Some(PickleValue::Dict(_))))
    };
    let sd = match key.and_then(|k| root.get(k)) {
        Some(PickleValue::Dict(sd)) => sd,
        _ => root,
    };
    let mut bad: Vec<_> = entries(sd).filter(|(_, v)| !is_tensor(v)).collect();
    bad.sort_by_key(|(k, _)| *k);
    match bad.first() {
        None => Ok(key),
        Some((k, v)) => Err(PthErrorKind::NotATensor {
            key: k.to_string(),
            found: kind(v),
        }),
    }
}

/// A short description of a value, for messages.
fn kind(v: &PickleValue) -> String {
    match v {
        PickleValue::None => "None".into(),
        PickleValue::Bool(_) => "a bool".into(),
        PickleValue::Int(_) => "an int".into(),
        PickleValue::Float(_) => "a float".into(),
        PickleValue::String(_) => "a string".into(),
        PickleValue::List(_) => "a list or tuple".into(),
        PickleValue::Dict(_) => "a dict".into(),
        PickleValue::Bytes(_) => "bytes".into(),
        PickleValue::Unsupported(name) => format!("a {name} object"),
    }
}

/// Element types a tensor can be read as.
trait Elem: Copy {
    fn from_f64(v: f64) -> Self;
    fn from_f32(v: f32) -> Self;
    fn from_i64(v: i64) -> Self;
    fn from_u64(v: u64) -> Self;
}

impl Elem for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn from_i64(v: i64) -> Self {
        v as f32
    }
    fn from_u64(v: u64) -> Self {
        v as f32
    }
}

impl Elem for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    fn from_i64(v: i64) -> Self {
        v as f64
    }
    fn from_u64(v: u64) -> Self {
        v as f64
    }
}

/// Maps each `N`-byte element of `bytes` (native-endian, as the reader returns them).
fn each<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks_exact gives N bytes")))
        .collect()
}

/// Reads a tensor's bytes and converts them to `T`.
fn decode<T: Elem>(t: pytorch_reader::Tensor) -> KResult<PthTensorOf<T>> {
    let b = t.read().map_err(PthErrorKind::TensorData)?;
    let data = match t.dtype() {
        DType::F64 => each(&b, |x| T::from_f64(f64::from_ne_bytes(x))),
        DType::F32 => each(&b, |x| T::from_f32(f32::from_ne_bytes(x))),
        DType::F16 => each(&b, |x| T::from_f32(f16::from_ne_bytes(x).to_f32())),
        DType::BF16 => each(&b, |x| T::from_f32(bf16::from_ne_bytes(x).to_f32())),
        DType::I64 => each(&b, |x| T::from_i64(i64::from_ne_bytes(x))),
        DType::I32 => each(&b, |x| T::from_i64(i32::from_ne_bytes(x).into())),
        DType::I16 => each(&b, |x| T::from_i64(i16::from_ne_bytes(x).into())),
        DType::I8 => each(&b, |x| T::from_i64(i8::from_ne_bytes(x).into())),
        DType::U64 => each(&b, |x| T::from_u64(u64::from_ne_bytes(x))),
        DType::U32 => each(&b, |x| T::from_u64(u32::from_ne_bytes(x).into())),
        DType::U16 => each(&b, |x| T::from_u64(u16::from_ne_bytes(x).into())),
        DType::U8 | DType::Bool => each(&b, |[x]| T::from_u64(x.into())),
    };
    Ok(PthTensorOf {
        shape: t.shape().to_vec(),
        dtype: t.dtype(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// A fresh path in the temp dir (removed first if left over).
    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("pth-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    /// The golden folder, or None (with a note) when its checkpoint is absent.
    fn golden_dir() -> Option<PathBuf> {
        let dir = std::env::var_os("CACE_GOLDEN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden"));
        if dir.join("cace_init.pth.tar").is_file() {
            Some(dir)
        } else {
            eprintln!(
                "skipped: no cace_init.pth.tar in {} (set CACE_GOLDEN_DIR)",
                dir.display()
            );
            None
        }
    }

    fn err_text<T: std::fmt::Debug>(r: Result<T, PthError>) -> String {
        r.expect_err("expected an error").to_string()
    }

    fn json(path: &Path) -> Json {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn get<'a, T>(sd: &'a [(String, PthTensorOf<T>)], key: &str) -> &'a PthTensorOf<T> {
        &sd.iter().find(|(k, _)| k == key).unwrap().1
    }

    /// Compares a state dict with an `*.expected.json` file (written by torch), every element
    /// bit for bit. Keys come back sorted, so the file's order is compared as a set.
    fn check_against(sd: &[(String, PthTensor)], expected: &str) {
        let exp = json(&fixture(expected));
        let mut order: Vec<&str> = exp["order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j.as_str().unwrap())
            .collect();
        order.sort();
        let keys: Vec<&str> = sd.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, order);
        for (k, t) in sd {
            let e = &exp["tensors"][k];
            let shape: Vec<usize> = serde_json::from_value(e["shape"].clone()).unwrap();
            assert_eq!(t.shape, shape, "{k}");
            assert_eq!(
                format!("{:?}", t.dtype),
                e["dtype"].as_str().unwrap(),
                "{k}"
            );
            let want: Vec<f64> = serde_json::from_value(e["f32"].clone()).unwrap();
            assert_eq!(t.numel(), want.len(), "{k}");
            let got: Vec<u32> = t.data.iter().map(|x| x.to_bits()).collect();
            let want: Vec<u32> = want.iter().map(|&x| (x as f32).to_bits()).collect();
            assert_eq!(got, want, "{k}");
        }
    }

    // ---- fixtures written by torch 2.15.0 --------------------------------------------------------

    #[test]
    fn zip_fixture_every_dtype_view_and_value() {
        let sd = read_state_dict(&fixture("tiny_f32.pth")).unwrap();
        check_against(&sd, "tiny_f32.expected.json");
        assert_eq!(get(&sd, "scale").shape, Vec::<usize>::new());
        assert_eq!(get(&sd, "scale").data, vec![2.5]);
        assert_eq!(get(&sd, "empty").shape, vec![0, 3]);
        assert_eq!(get(&sd, "layer.weight_t").shape, vec![3, 4]);
        // the transposed view really is the transpose of the weight it shares storage with
        let (w, wt) = (get(&sd, "layer.weight"), get(&sd, "layer.weight_t"));
        for r in 0..4 {
            for c in 0..3 {
                assert_eq!(w.data[r * 3 + c], wt.data[c * 4 + r]);
            }
        }
        let slice: Vec<f32> = [7.0, 8.0, 9.0, 12.0, 13.0, 14.0].map(|x| x / 8.0).into();
        assert_eq!(get(&sd, "base_slice").data, slice);
        let expanded = vec![1.5, -2.5, 3.5, 1.5, -2.5, 3.5];
        assert_eq!(get(&sd, "expanded").data, expanded);
        assert_eq!(get(&sd, "double").dtype, DType::F64);
    }

    /// The f64 reader on the fixture: the f64, i64 and i32 tensors exactly (Rust literals:
    /// serde_json's default float parsing is not correctly rounded, so the JSON's "f64" lists
    /// are not used), every other tensor as the f32 reader's values widened.
    #[test]
    fn zip_fixture_f64_values_are_exact() {
        let path = fixture("tiny_f32.pth");
        let (sd, sd32) = (
            read_state_dict_f64(&path).unwrap(),
            read_state_dict(&path).unwrap(),
        );
        let exact: [(&str, Vec<f64>); 3] = [
            (
                "double",
                vec![0.1, -1.0 / 3.0, 1e-40, 1e30, 2f64.powi(-30), 123456789.123],
            ),
            (
                "steps",
                vec![1.0, -2.0, 3.0, (2u64.pow(40) + 1) as f64, -(2f64.powi(53))],
            ),
            ("i32", vec![-(2f64.powi(31)), 5.0, 2f64.powi(31) - 1.0]),
        ];
        for (k, want) in &exact {
            assert_eq!(&get(&sd, k).data, want, "{k}");
        }
        for ((k, t), (_, t32)) in sd.iter().zip(&sd32) {
            if !exact.iter().any(|(e, _)| e == k) {
                let widened: Vec<f64> = t32.data.iter().map(|&x| x.into()).collect();
                assert_eq!(t.data, widened, "{k}");
            }
        }
    }

    #[test]
    fn legacy_fixture_reads_like_the_zip_one() {
        let sd = read_state_dict(&fixture("tiny_legacy.pth")).unwrap();
        check_against(&sd, "tiny_f32.expected.json");
    }

    #[test]
    fn wrapped_state_dict_ignores_iteration_and_optimizer() {
        // {"iteration": 5, "model": sd, "optimizer": SGD state with momentum tensors, "note"}
        let sd = read_state_dict(&fixture("wrapped_model.pth")).unwrap();
        check_against(&sd, "wrapped_model.expected.json");
    }

    #[test]
    fn non_tensor_entries_and_non_dicts_are_named() {
        // plain pickles: {"w": <tensor-less>, "a": 1} and [1]
        let p = tmp("plain.pkl");
        std::fs::write(&p, b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bG?\xf8\x00\x00\x00\x00\x00\x00u.").unwrap();
        let msg = err_text(read_state_dict(&p));
        assert!(
            msg.ends_with("state dict entry 'a' is an int, not a tensor"),
            "{msg}"
        );
        std::fs::write(&p, b"\x80\x02]q\x00K\x01a.").unwrap();
        let msg = err_text(read_state_dict(&p));
        assert!(
            msg.contains("the top-level object is a list or tuple, not a dict"),
            "{msg}"
        );
        let _ = std::fs::remove_file(&p);
    }

    // ---- refused files ---------------------------------------------------------------------------

    #[test]
    fn refuses_os_system_and_names_it() {
        let p = fixture("evil_os_system.pth");
        let msg = err_text(read_state_dict(&p));
        assert!(
            msg.starts_with(&format!("checkpoint {}: ", p.display())),
            "{msg}"
        );
        assert!(
            msg.ends_with(
                "pickle refers to global 'posix.system', which a PyTorch state dict never \
                 needs; refusing to load it (no pickle code is ever executed)"
            ),
            "{msg}"
        );
    }

    #[test]
    fn refuses_builtins_eval_in_legacy_protocol4_pickle() {
        let msg = err_text(read_state_dict(&fixture("evil_eval_legacy.pth")));
        assert!(msg.contains("global 'builtins.eval'"), "{msg}");
        assert!(msg.contains("evil_eval_legacy.pth"), "{msg}");
    }

    /// `tools/make_hostile_pth.py`: unpickled by Python, this file creates two files.
    #[test]
    fn hostile_pickle_is_refused_and_never_run() {
        let targets = ["/tmp/cace-net-evil-system", "/tmp/cace-net-evil-open"];
        for t in targets {
            let _ = std::fs::remove_file(t);
        }
        let msg = err_text(read_state_dict(&fixture("evil_touch.pth")));
        assert!(msg.contains("evil_touch.pth"), "{msg}");
        assert!(msg.contains("globals 'io.open', 'posix.system'"), "{msg}");
        for t in targets {
            assert!(!Path::new(t).exists(), "{t} was created: the pickle ran");
        }
    }

    #[test]
    fn truncated_and_missing_files_are_clear_errors() {
        let p = fixture("tiny_f32_truncated.pth");
        let msg = err_text(read_state_dict(&p));
        assert!(msg.contains("tiny_f32_truncated.pth"), "{msg}");
        assert!(
            msg.contains("damaged, truncated or not a PyTorch checkpoint"),
            "{msg}"
        );
        // legacy file cut anywhere: a clear error, never a panic
        let data = std::fs::read(fixture("tiny_legacy.pth")).unwrap();
        let cut = tmp("legacy_cut.pth");
        for n in [1, 20, 140, 600, 1938, 2300, data.len() - 1] {
            std::fs::write(&cut, &data[..n]).unwrap();
            let msg = err_text(read_state_dict(&cut));
            assert!(msg.contains("legacy_cut.pth"), "{n}: {msg}");
        }
        let _ = std::fs::remove_file(&cut);
        let msg = err_text(read_state_dict(Path::new("/nonexistent/x.pth")));
        assert!(
            msg.starts_with("checkpoint /nonexistent/x.pth: cannot read it"),
            "{msg}"
        );
        let text = tmp("text.pth");
        std::fs::write(&text, b"hello, not a checkpoint").unwrap();
        assert!(err_text(read_state_dict(&text)).contains("not a PyTorch checkpoint"));
        let _ = std::fs::remove_file(&text);
    }

    #[test]
    fn damaged_files_never_panic() {
        for name in ["tiny_legacy.pth", "tiny_f32.pth"] {
            let data = std::fs::read(fixture(name)).unwrap();
            let p = tmp(&format!("damaged-{name}"));
            for i in (0..data.len()).step_by(7) {
                let mut d = data.clone();
                d[i] ^= 0x5a;
                std::fs::write(&p, &d).unwrap();
                let _ = read_state_dict(&p);
            }
            let _ = std::fs::remove_file(&p);
        }
    }

    // ---- the real CACE-Net checkpoint ------------------------------------------------------------

    #[test]
    fn golden_checkpoint_keys_shapes_and_raw_values() {
        let Some(dir) = golden_dir() else { return };
        let path = dir.join("cace_init.pth.tar");
        let sd = read_state_dict_f64(&path).unwrap();
        let official: Vec<String> =
            serde_json::from_value(json(&dir.join("grad_norm_keys.json"))).unwrap();
        let mut sorted = official.clone();
        sorted.sort();
        assert_eq!(
            sd.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            sorted.iter().collect::<Vec<_>>()
        );
        assert!(sd.iter().all(|(_, t)| t.dtype == DType::F64));
        assert_eq!(sd.iter().map(|(_, t)| t.numel()).sum::<usize>(), 13_118_681);
        assert_eq!(get(&sd, "module.v_fc.weight").shape, vec![512, 512]);
        let rnn = get(&sd, "module.audio_visual_rnn_layer.visual_rnn.weight_ih_l0");
        assert_eq!(rnn.shape, vec![1024, 512]);
        // The storages are stored uncompressed: the first and last tensors' bytes (storages
        // data/0 and data/241) lie in the file as they are.
        let raw = std::fs::read(&path).unwrap();
        for key in [&official[0], &official[241]] {
            let t = get(&sd, key);
            assert!(t.data.iter().any(|&x| x != 0.0), "{key}");
            let bytes: Vec<u8> = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert!(raw.windows(bytes.len()).any(|w| w == bytes), "{key}");
        }
        // the f32 reader gives the same values rounded
        let sd32 = read_state_dict(&path).unwrap();
        for ((k, a), (_, b)) in sd32.iter().zip(&sd) {
            assert_eq!(a.shape, b.shape, "{k}");
            let rounded: Vec<u32> = b.data.iter().map(|&y| (y as f32).to_bits()).collect();
            assert_eq!(
                a.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                rounded,
                "{k}"
            );
        }
    }
}
