//! Safe reader for PyTorch checkpoints (`torch.save` output). No pickle code is ever executed.
//!
//! Two container formats are read:
//! * the zip format (torch >= 1.6, the default): `<root>/data.pkl` plus raw little-endian
//!   storages at `<root>/data/<key>`, stored or deflated;
//! * the legacy format (torch < 1.6, or `_use_new_zipfile_serialization=False`): a sequence of
//!   pickles (magic number, protocol version, sys_info, the object, the storage keys) followed by
//!   the storages, each as an 8-byte little-endian element count and the raw bytes.
//!
//! The pickle is interpreted by a small restricted unpickler ([`pickle`] below): it knows the
//! opcodes of protocols 2 to 5 that such files use and a fixed allow-list of globals
//! (`collections.OrderedDict`, `torch._utils._rebuild_tensor{,_v2}`,
//! `torch._utils._rebuild_parameter{,_with_state}` and the `torch.<T>Storage` classes). Any other
//! global is refused with an error that names it. Every length read from the file is checked
//! against the bytes that remain before anything is allocated, the memo is bounded, and the
//! conversion of the (possibly shared or cyclic) object graph into a [`Value`] tree is bounded
//! in depth, in node count and in tensor elements (relative to the file size).
//!
//! The tests use fixtures written by real PyTorch 2.15.0 (`tools/make_pth_fixtures.py`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use pickle::{Id, Obj, TensorSpec};

// ------------------------------------------------------------------------------------------------
// Public types
// ------------------------------------------------------------------------------------------------

/// dtype of the storage as it was on disk
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StoredDType {
    /// Bytes per element on disk.
    pub fn size(self) -> usize {
        match self {
            StoredDType::F64 | StoredDType::I64 => 8,
            StoredDType::F32 | StoredDType::I32 => 4,
            StoredDType::F16 | StoredDType::BF16 | StoredDType::I16 => 2,
            StoredDType::I8 | StoredDType::U8 | StoredDType::Bool => 1,
        }
    }

    /// The torch storage class name, e.g. `DoubleStorage`.
    pub fn storage_class(self) -> &'static str {
        match self {
            StoredDType::F64 => "DoubleStorage",
            StoredDType::F32 => "FloatStorage",
            StoredDType::F16 => "HalfStorage",
            StoredDType::BF16 => "BFloat16Storage",
            StoredDType::I64 => "LongStorage",
            StoredDType::I32 => "IntStorage",
            StoredDType::I16 => "ShortStorage",
            StoredDType::I8 => "CharStorage",
            StoredDType::U8 => "ByteStorage",
            StoredDType::Bool => "BoolStorage",
        }
    }

    fn from_storage_class(name: &str) -> Option<Self> {
        const ALL: [StoredDType; 10] = [
            StoredDType::F64,
            StoredDType::F32,
            StoredDType::F16,
            StoredDType::BF16,
            StoredDType::I64,
            StoredDType::I32,
            StoredDType::I16,
            StoredDType::I8,
            StoredDType::U8,
            StoredDType::Bool,
        ];
        ALL.into_iter().find(|d| d.storage_class() == name)
    }
}

/// One tensor read from a checkpoint, values converted to f32 (integers too, rounded to nearest).
/// `data` is row-major contiguous, after applying the stored stride and storage offset.
#[derive(Debug, Clone, PartialEq)]
pub struct PthTensor {
    pub shape: Vec<usize>,
    pub dtype: StoredDType,
    pub data: Vec<f32>,
}

/// Like [`PthTensor`] with f64 values: exact for f64/f32/f16/bf16 storages and for integers
/// up to 2^53 (see [`read_state_dict_f64`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PthTensorF64 {
    pub shape: Vec<usize>,
    pub dtype: StoredDType,
    pub data: Vec<f64>,
}

impl PthTensor {
    /// Number of elements (1 for a 0-dim tensor).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl PthTensorF64 {
    /// Number of elements (1 for a 0-dim tensor).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A pickled value, restricted to what a checkpoint may hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// insertion order kept (dict and OrderedDict alike); sets are read as lists
    Dict(Vec<(Value, Value)>),
    Tensor(PthTensor),
}

impl Value {
    /// For a dict: the value under the string key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the variant ("dict", "tensor", ...), for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Dict(_) => "a dict",
            Value::Tensor(_) => "a tensor",
        }
    }
}

/// An error while reading (or converting) a checkpoint; it names the file and the problem.
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
    #[error("cannot write it: {0}")]
    Write(io::Error),
    #[error("not a zip archive nor a legacy torch file")]
    NotATorchFile,
    #[error(
        "this is the tar checkpoint format of torch < 0.4, which is not supported; \
         load it with an old torch and save it again"
    )]
    LegacyTar,
    #[error("this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint")]
    TorchScript,
    #[error("damaged or truncated zip archive: {0}")]
    BadZip(String),
    #[error("zip archive has no data.pkl entry")]
    NoDataPkl,
    #[error("zip archive has more than one data.pkl entry: '{0}' and '{1}'")]
    SeveralDataPkl(String, String),
    #[error("byte order is '{0}'; only little-endian checkpoints are supported")]
    NotLittleEndian(String),
    #[error(
        "pickle refers to global '{0}', which a PyTorch state dict never needs; \
         refusing to load it (no pickle code is ever executed)"
    )]
    ForbiddenGlobal(String),
    #[error("truncated pickle stream at byte {0}")]
    Truncated(usize),
    #[error("unsupported pickle opcode 0x{op:02x} at byte {pos}")]
    UnsupportedOpcode { op: u8, pos: usize },
    #[error("malformed pickle at byte {pos}: {msg}")]
    BadPickle { pos: usize, msg: String },
    #[error("missing entry '{0}'")]
    MissingEntry(String),
    #[error("entry '{entry}' is {have} bytes but tensor '{tensor}' needs {need}")]
    StorageTooSmall {
        entry: String,
        have: u64,
        tensor: String,
        need: u64,
    },
    #[error("tensor '{tensor}': {msg}")]
    BadTensor { tensor: String, msg: String },
    #[error("{0}")]
    BadValue(String),
    #[error("no state dict in it: {0}")]
    NoStateDict(String),
    #[error("state dict entry '{key}' is {found}, not a tensor")]
    NotATensor { key: String, found: String },
    #[error("legacy torch file: {0}")]
    BadLegacy(String),
    #[error("limit exceeded: {0}")]
    Limit(String),
}

type KResult<T> = Result<T, PthErrorKind>;

fn at(path: &Path) -> impl Fn(PthErrorKind) -> PthError + '_ {
    move |kind| PthError {
        path: path.to_path_buf(),
        kind,
    }
}

// ------------------------------------------------------------------------------------------------
// Public functions
// ------------------------------------------------------------------------------------------------

/// Reads a whole checkpoint into a [`Value`] tree (tensors converted to f32).
pub fn read_pth(path: &Path) -> Result<Value, PthError> {
    let mut ck = Loaded::open(path).map_err(at(path))?;
    ck.value_tree().map_err(at(path))
}

/// The state dict (name -> tensor, values as f32) in file order. Accepts a top-level
/// (Ordered)Dict of tensors, or a dict with one of the keys `state_dict`, `model`,
/// `I_state_dict` whose value is such a dict (other entries beside it are ignored and their
/// tensors are never read). A non-tensor entry inside the chosen state dict is an error naming
/// the key.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, PthTensor)>, PthError> {
    let mut ck = Loaded::open(path).map_err(at(path))?;
    ck.state_dict::<f32>()
        .map(|v| {
            v.into_iter()
                .map(|(k, (shape, dtype, data))| (k, PthTensor { shape, dtype, data }))
                .collect()
        })
        .map_err(at(path))
}

/// Same as [`read_state_dict`], with f64 values (no rounding of f64 checkpoints).
pub fn read_state_dict_f64(path: &Path) -> Result<Vec<(String, PthTensorF64)>, PthError> {
    let mut ck = Loaded::open(path).map_err(at(path))?;
    ck.state_dict::<f64>()
        .map(|v| {
            v.into_iter()
                .map(|(k, (shape, dtype, data))| (k, PthTensorF64 { shape, dtype, data }))
                .collect()
        })
        .map_err(at(path))
}

/// Rewrites a zip-format checkpoint with float32 storages, the way torch would have written it:
/// in the pickle every `torch.DoubleStorage` becomes `torch.FloatStorage`, each f64 `data/<key>`
/// entry is converted to f32 (round to nearest), all other entries are copied unchanged. Entries
/// are stored uncompressed, the storages 64-byte aligned as torch does; the root folder is named
/// after `dst` as torch names it (file name without its last extension). `dst` is written
/// through a temporary file beside it and renamed at the end; `src == dst` is fine.
pub fn convert_f64_checkpoint_to_f32(src: &Path, dst: &Path) -> Result<(), PthError> {
    let tmp = {
        let mut name = dst.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp{}", std::process::id()));
        dst.with_file_name(name)
    };
    let res = convert_inner(src, dst, &tmp);
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

// ------------------------------------------------------------------------------------------------
// Limits
// ------------------------------------------------------------------------------------------------

/// Deepest nesting of containers accepted when building a [`Value`] (also stops cycles).
const MAX_DEPTH: usize = 200;
/// Most memo entries a pickle may create.
const MAX_MEMO: usize = 1 << 24;
/// Most dimensions of a tensor.
const MAX_DIMS: usize = 64;
/// Best deflate ratio; caps what a compressed entry may expand to.
const MAX_DEFLATE_RATIO: u64 = 1032;

// ------------------------------------------------------------------------------------------------
// Loading
// ------------------------------------------------------------------------------------------------

/// Raw bytes of storages, by key.
trait StorageSource {
    /// Name of the entry that holds storage `key`, for messages.
    fn entry_name(&self, key: &str) -> String;
    fn bytes(&mut self, key: &str) -> KResult<&[u8]>;
}

struct ZipSource {
    archive: zip::ZipArchive<BufReader<File>>,
    root: String,
    cache: HashMap<String, Vec<u8>>,
}

impl StorageSource for ZipSource {
    fn entry_name(&self, key: &str) -> String {
        format!("{}data/{key}", self.root)
    }
    fn bytes(&mut self, key: &str) -> KResult<&[u8]> {
        if !self.cache.contains_key(key) {
            let name = self.entry_name(key);
            let buf = read_entry(&mut self.archive, &name)?;
            self.cache.insert(key.to_string(), buf);
        }
        Ok(&self.cache[key])
    }
}

struct LegacySource {
    data: Vec<u8>,
    /// key -> (byte offset, byte length) in `data`
    ranges: HashMap<String, (usize, usize)>,
}

impl StorageSource for LegacySource {
    fn entry_name(&self, key: &str) -> String {
        format!("legacy storage {key}")
    }
    fn bytes(&mut self, key: &str) -> KResult<&[u8]> {
        let (o, n) = *self
            .ranges
            .get(key)
            .ok_or_else(|| PthErrorKind::MissingEntry(self.entry_name(key)))?;
        Ok(&self.data[o..o + n])
    }
}

/// A parsed checkpoint: the object graph and where its storages are.
struct Loaded {
    arena: Vec<Obj>,
    root: Id,
    src: Box<dyn StorageSource>,
    file_len: u64,
}

fn zip_err(e: zip::result::ZipError) -> PthErrorKind {
    match e {
        zip::result::ZipError::Io(e) => PthErrorKind::Read(e),
        zip::result::ZipError::FileNotFound => PthErrorKind::MissingEntry("?".into()),
        e => PthErrorKind::BadZip(e.to_string()),
    }
}

/// Reads one whole zip entry, never allocating more than the entry can really hold.
fn read_entry(archive: &mut zip::ZipArchive<BufReader<File>>, name: &str) -> KResult<Vec<u8>> {
    let entry = match archive.by_name(name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(PthErrorKind::MissingEntry(name.to_string()));
        }
        Err(e) => return Err(zip_err(e)),
    };
    let declared = entry.size();
    let cap = match entry.compression() {
        zip::CompressionMethod::Stored => entry.compressed_size(),
        _ => entry
            .compressed_size()
            .saturating_mul(MAX_DEFLATE_RATIO)
            .saturating_add(64),
    };
    if declared > cap {
        return Err(PthErrorKind::BadZip(format!(
            "entry '{name}' claims {declared} bytes from {} stored bytes",
            entry.compressed_size()
        )));
    }
    // Never preallocate more than 64 MiB on the word of a header; reading one byte past
    // `declared` lets the zip reader reach the end of the entry and check its CRC.
    let mut buf = Vec::with_capacity(declared.min(1 << 26) as usize);
    entry
        .take(declared.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| PthErrorKind::BadZip(format!("entry '{name}': {e}")))?;
    if (buf.len() as u64) != declared {
        return Err(PthErrorKind::BadZip(format!(
            "entry '{name}' is {} bytes, its header says {declared}",
            buf.len()
        )));
    }
    Ok(buf)
}

/// The zip's `data.pkl` entry name and the root prefix (`"archive/"` or `""`).
fn find_data_pkl(archive: &zip::ZipArchive<BufReader<File>>) -> KResult<(String, String)> {
    let mut found: Option<&str> = None;
    for n in archive.file_names() {
        if n == "data.pkl" || n.ends_with("/data.pkl") {
            if let Some(first) = found {
                let (a, b) = if first < n { (first, n) } else { (n, first) };
                return Err(PthErrorKind::SeveralDataPkl(a.into(), b.into()));
            }
            found = Some(n);
        }
    }
    let pkl = found.ok_or(PthErrorKind::NoDataPkl)?.to_string();
    let root = pkl[..pkl.len() - "data.pkl".len()].to_string();
    let has = |suffix: &str| archive.file_names().any(|n| n == format!("{root}{suffix}"));
    if has("constants.pkl")
        || archive
            .file_names()
            .any(|n| n.starts_with(&format!("{root}code/")))
    {
        return Err(PthErrorKind::TorchScript);
    }
    Ok((pkl, root))
}

fn check_byteorder(archive: &mut zip::ZipArchive<BufReader<File>>, root: &str) -> KResult<()> {
    let name = format!("{root}byteorder");
    match read_entry(archive, &name) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b[..b.len().min(64)])
                .trim()
                .to_string();
            if s == "little" {
                Ok(())
            } else {
                Err(PthErrorKind::NotLittleEndian(s))
            }
        }
        Err(PthErrorKind::MissingEntry(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// 0x1950a86a20f9469cfc6c, little-endian, as LONG1 pickles it.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

impl Loaded {
    fn open(path: &Path) -> KResult<Loaded> {
        let mut file = File::open(path).map_err(PthErrorKind::Read)?;
        let file_len = file.metadata().map_err(PthErrorKind::Read)?.len();
        let mut head = Vec::with_capacity(512);
        (&mut file)
            .take(512)
            .read_to_end(&mut head)
            .map_err(PthErrorKind::Read)?;
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            file.rewind().map_err(PthErrorKind::Read)?;
            Self::open_zip(file, file_len)
        } else if head.len() >= 262 && &head[257..262] == b"ustar" {
            Err(PthErrorKind::LegacyTar)
        } else if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
            file.rewind().map_err(PthErrorKind::Read)?;
            let mut data = Vec::with_capacity(file_len.min(1 << 34) as usize);
            file.read_to_end(&mut data).map_err(PthErrorKind::Read)?;
            Self::open_legacy(data)
        } else {
            Err(PthErrorKind::NotATorchFile)
        }
    }

    fn open_zip(file: File, file_len: u64) -> KResult<Loaded> {
        let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(zip_err)?;
        let (pkl_name, root) = find_data_pkl(&archive)?;
        check_byteorder(&mut archive, &root)?;
        let pkl = read_entry(&mut archive, &pkl_name)?;
        let parsed = pickle::parse(&pkl, 0)?;
        Ok(Loaded {
            arena: parsed.arena,
            root: parsed.root,
            src: Box::new(ZipSource {
                archive,
                root,
                cache: HashMap::new(),
            }),
            file_len,
        })
    }

    fn open_legacy(data: Vec<u8>) -> KResult<Loaded> {
        let file_len = data.len() as u64;
        let not_torch = |_| PthErrorKind::NotATorchFile;
        let magic = pickle::parse(&data, 0).map_err(not_torch)?;
        let is_magic =
            matches!(&magic.arena[magic.root], Obj::BigInt(b) if b.as_slice() == LEGACY_MAGIC);
        if !is_magic {
            return Err(PthErrorKind::NotATorchFile);
        }
        let proto = pickle::parse(&data, magic.end)?;
        match &proto.arena[proto.root] {
            Obj::Int(1001) => {}
            other => {
                return Err(PthErrorKind::BadLegacy(format!(
                    "protocol version is {}, expected 1001",
                    other.kind()
                )));
            }
        }
        let info = pickle::parse(&data, proto.end)?;
        if let Some(v) = pickle::dict_get_str(&info.arena, info.root, "little_endian")
            && !matches!(info.arena[v], Obj::Bool(true))
        {
            return Err(PthErrorKind::NotLittleEndian("big (sys_info)".into()));
        }
        let obj = pickle::parse(&data, info.end)?;
        let keys = pickle::parse(&data, obj.end)?;
        let key_ids = match &keys.arena[keys.root] {
            Obj::List(ids) => ids.clone(),
            other => {
                return Err(PthErrorKind::BadLegacy(format!(
                    "storage key list is {}, not a list",
                    other.kind()
                )));
            }
        };
        let dtypes = pickle::storage_dtypes(&obj.arena);
        let mut pos = keys.end;
        let mut ranges = HashMap::new();
        for kid in key_ids {
            let key = pickle::as_key(&keys.arena[kid])
                .ok_or_else(|| PthErrorKind::BadLegacy("a storage key is not a string".into()))?;
            let dtype = *dtypes.get(&key).ok_or_else(|| {
                PthErrorKind::BadLegacy(format!("storage '{key}' is listed but never used"))
            })?;
            let numel_bytes = data.get(pos..pos + 8).ok_or_else(|| {
                PthErrorKind::BadLegacy(format!("file ends at byte {pos}, before storage '{key}'"))
            })?;
            let numel = u64::from_le_bytes(numel_bytes.try_into().unwrap());
            let start = pos + 8;
            let nbytes = numel
                .checked_mul(dtype.size() as u64)
                .filter(|&n| n <= (data.len() - start) as u64)
                .ok_or_else(|| {
                    PthErrorKind::BadLegacy(format!(
                        "storage '{key}' needs {numel} elements of {} bytes at byte {start}, \
                         but the file ends at byte {}",
                        dtype.size(),
                        data.len()
                    ))
                })? as usize;
            ranges.insert(key, (start, nbytes));
            pos = start + nbytes;
        }
        Ok(Loaded {
            arena: obj.arena,
            root: obj.root,
            src: Box::new(LegacySource { data, ranges }),
            file_len,
        })
    }

    fn converter(&mut self) -> Converter<'_> {
        Converter {
            arena: &self.arena,
            src: self.src.as_mut(),
            nodes_left: 16 * self.arena.len() as u64 + (1 << 20),
            elems_left: 8 * self.file_len + (1 << 20),
        }
    }

    fn value_tree(&mut self) -> KResult<Value> {
        let root = self.root;
        let mut path = String::new();
        self.converter().value(root, 0, &mut path)
    }

    #[allow(clippy::type_complexity)]
    fn state_dict<T: Elem>(&mut self) -> KResult<Vec<(String, (Vec<usize>, StoredDType, Vec<T>))>> {
        let arena = &self.arena;
        let Obj::Dict(root) = &arena[self.root] else {
            return Err(PthErrorKind::NoStateDict(format!(
                "the top-level object is {}, not a dict",
                arena[self.root].kind()
            )));
        };
        let all_tensors = root
            .items
            .iter()
            .all(|&(_, v)| matches!(arena[v], Obj::Tensor(_)));
        let mut chosen = self.root;
        if !all_tensors || root.items.is_empty() {
            let wrapped = ["state_dict", "model", "I_state_dict"]
                .iter()
                .find_map(|k| {
                    pickle::dict_get_str(arena, self.root, k)
                        .filter(|&v| matches!(arena[v], Obj::Dict(_)))
                });
            if let Some(v) = wrapped {
                chosen = v;
            }
        }
        let Obj::Dict(sd) = &arena[chosen] else {
            unreachable!()
        };
        let items = sd.items.clone();
        let mut conv = self.converter();
        let mut out = Vec::with_capacity(items.len());
        for (k, v) in items {
            let key = match &conv.arena[k] {
                Obj::Str(s) => s.clone(),
                other => {
                    return Err(PthErrorKind::NoStateDict(format!(
                        "a key of the state dict is {}, not a string",
                        other.kind()
                    )));
                }
            };
            match &conv.arena[v] {
                Obj::Tensor(spec) => {
                    let t = conv.tensor::<T>(spec, &key)?;
                    out.push((key, t));
                }
                other => {
                    return Err(PthErrorKind::NotATensor {
                        key,
                        found: other.kind().to_string(),
                    });
                }
            }
        }
        Ok(out)
    }
}

// ------------------------------------------------------------------------------------------------
// Object graph -> values, tensors
// ------------------------------------------------------------------------------------------------

/// Element types a tensor can be materialized as.
trait Elem: Copy {
    fn from_f64(v: f64) -> Self;
    fn from_f32(v: f32) -> Self;
    fn from_i64(v: i64) -> Self;
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
}

/// IEEE half -> f32 (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    if exp == 0 {
        // zero or subnormal: man * 2^-24, exact in f32
        let v = man as f32 * (1.0 / 16_777_216.0);
        return if sign != 0 { -v } else { v };
    }
    let bits = if exp == 0x1f {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 112) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

fn decoder<T: Elem>(dtype: StoredDType) -> fn(&[u8]) -> T {
    fn a<const N: usize>(b: &[u8]) -> [u8; N] {
        b[..N].try_into().unwrap()
    }
    match dtype {
        StoredDType::F64 => |b| T::from_f64(f64::from_le_bytes(a(b))),
        StoredDType::F32 => |b| T::from_f32(f32::from_le_bytes(a(b))),
        StoredDType::F16 => |b| T::from_f32(f16_to_f32(u16::from_le_bytes(a(b)))),
        StoredDType::BF16 => {
            |b| T::from_f32(f32::from_bits((u16::from_le_bytes(a(b)) as u32) << 16))
        }
        StoredDType::I64 => |b| T::from_i64(i64::from_le_bytes(a(b))),
        StoredDType::I32 => |b| T::from_i64(i32::from_le_bytes(a(b)) as i64),
        StoredDType::I16 => |b| T::from_i64(i16::from_le_bytes(a(b)) as i64),
        StoredDType::I8 => |b| T::from_i64(b[0] as i8 as i64),
        StoredDType::U8 => |b| T::from_i64(b[0] as i64),
        StoredDType::Bool => |b| T::from_i64((b[0] != 0) as i64),
    }
}

struct Converter<'a> {
    arena: &'a [Obj],
    src: &'a mut dyn StorageSource,
    nodes_left: u64,
    elems_left: u64,
}

fn label(path: &str) -> &str {
    if path.is_empty() { "<top level>" } else { path }
}

impl Converter<'_> {
    fn value(&mut self, id: Id, depth: usize, path: &mut String) -> KResult<Value> {
        if depth > MAX_DEPTH {
            return Err(PthErrorKind::Limit(format!(
                "containers nested deeper than {MAX_DEPTH} (or a cycle) at '{}'",
                label(path)
            )));
        }
        if self.nodes_left == 0 {
            return Err(PthErrorKind::Limit(format!(
                "the pickle expands to too many values (shared references?) at '{}'",
                label(path)
            )));
        }
        self.nodes_left -= 1;
        let arena = self.arena;
        let seq = |this: &mut Self, ids: &[Id], path: &mut String| -> KResult<Vec<Value>> {
            let mut out = Vec::with_capacity(ids.len());
            for (i, &c) in ids.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(this.value(c, depth + 1, path)?);
                path.truncate(len);
            }
            Ok(out)
        };
        Ok(match &arena[id] {
            Obj::None => Value::None,
            Obj::Bool(b) => Value::Bool(*b),
            Obj::Int(i) => Value::Int(*i),
            Obj::BigInt(_) => {
                return Err(PthErrorKind::BadValue(format!(
                    "the integer at '{}' does not fit in 64 bits",
                    label(path)
                )));
            }
            Obj::Float(f) => Value::Float(*f),
            Obj::Str(s) => Value::Str(s.clone()),
            Obj::Bytes(b) => Value::Bytes(b.clone()),
            Obj::List(ids) | Obj::Set(ids) => Value::List(seq(self, ids, path)?),
            Obj::Tuple(ids) => Value::Tuple(seq(self, ids, path)?),
            Obj::Dict(d) => {
                let mut out = Vec::with_capacity(d.items.len());
                for &(k, v) in &d.items {
                    let key = self.value(k, depth + 1, path)?;
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('/');
                    }
                    match &key {
                        Value::Str(s) => path.push_str(s),
                        Value::Int(i) => path.push_str(&i.to_string()),
                        other => path.push_str(&format!("<{} key>", other.kind())),
                    }
                    let val = self.value(v, depth + 1, path)?;
                    path.truncate(len);
                    out.push((key, val));
                }
                Value::Dict(out)
            }
            Obj::Tensor(spec) => {
                let (shape, dtype, data) = self.tensor::<f32>(spec, label(path))?;
                Value::Tensor(PthTensor { shape, dtype, data })
            }
            Obj::Storage(_) => {
                return Err(PthErrorKind::BadValue(format!(
                    "a bare storage (not inside a tensor) at '{}' is not supported",
                    label(path)
                )));
            }
            Obj::Global(g) => {
                return Err(PthErrorKind::BadValue(format!(
                    "the global '{}' is used as a value at '{}'",
                    g.name(),
                    label(path)
                )));
            }
        })
    }

    /// Materializes a tensor: row-major contiguous values after applying stride and offset.
    fn tensor<T: Elem>(
        &mut self,
        spec: &TensorSpec,
        name: &str,
    ) -> KResult<(Vec<usize>, StoredDType, Vec<T>)> {
        let bad = |msg: String| PthErrorKind::BadTensor {
            tensor: name.to_string(),
            msg,
        };
        let dtype = spec.storage.dtype;
        let numel = spec
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("shape {:?} overflows", spec.shape)))?;
        if numel == 0 {
            return Ok((spec.shape.clone(), dtype, Vec::new()));
        }
        if numel > self.elems_left {
            return Err(PthErrorKind::Limit(format!(
                "tensor '{name}' with shape {:?} would bring the values read to more than \
                 8 per byte of the file (expanded views or shared tensors?)",
                spec.shape
            )));
        }
        self.elems_left -= numel;
        // last element touched, in elements from the start of the storage
        let mut last = spec.storage.view_offset.checked_add(spec.offset);
        for (&d, &s) in spec.shape.iter().zip(&spec.stride) {
            last = last.and_then(|l| l.checked_add((d as u64 - 1).checked_mul(s as u64)?));
        }
        let esize = dtype.size() as u64;
        let need = last
            .and_then(|l| l.checked_add(1)?.checked_mul(esize))
            .ok_or_else(|| bad("offset and strides overflow".into()))?;
        if let Some(view) = spec.storage.view_size
            && need > (spec.storage.view_offset + view).saturating_mul(esize)
        {
            return Err(bad(format!(
                "extends past its storage view of {view} elements"
            )));
        }
        let entry = self.src.entry_name(&spec.storage.key);
        let bytes = self.src.bytes(&spec.storage.key)?;
        if (bytes.len() as u64) < need {
            return Err(PthErrorKind::StorageTooSmall {
                entry,
                have: bytes.len() as u64,
                tensor: name.to_string(),
                need,
            });
        }
        let dec = decoder::<T>(dtype);
        let es = esize as usize;
        let base = (spec.storage.view_offset + spec.offset) as usize;
        let mut data = Vec::with_capacity(numel as usize);
        // contiguous row-major strides?
        let mut expect = 1usize;
        let mut contiguous = true;
        for (&d, &s) in spec.shape.iter().zip(&spec.stride).rev() {
            if d != 1 && s != expect {
                contiguous = false;
                break;
            }
            expect *= d;
        }
        if contiguous {
            let run = &bytes[base * es..(base + numel as usize) * es];
            data.extend(run.chunks_exact(es).map(dec));
        } else {
            let nd = spec.shape.len();
            // a stride of a size-1 dimension is never used; zero it so `off` cannot overflow
            let stride: Vec<usize> = spec
                .shape
                .iter()
                .zip(&spec.stride)
                .map(|(&d, &s)| if d == 1 { 0 } else { s })
                .collect();
            let mut idx = vec![0usize; nd];
            let mut off = base;
            for _ in 0..numel {
                data.push(dec(&bytes[off * es..off * es + es]));
                // odometer increment, last dimension fastest
                for k in (0..nd).rev() {
                    idx[k] += 1;
                    off += stride[k];
                    if idx[k] < spec.shape[k] {
                        break;
                    }
                    off -= stride[k] * spec.shape[k];
                    idx[k] = 0;
                }
            }
        }
        Ok((spec.shape.clone(), dtype, data))
    }
}

// ------------------------------------------------------------------------------------------------
// f64 -> f32 conversion
// ------------------------------------------------------------------------------------------------

fn convert_inner(src: &Path, dst: &Path, tmp: &Path) -> Result<(), PthError> {
    let se = at(src);
    let de = at(dst);
    let file = File::open(src).map_err(|e| se(PthErrorKind::Read(e)))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| se(zip_err(e)))?;
    let (pkl_name, root) = find_data_pkl(&archive).map_err(&se)?;
    check_byteorder(&mut archive, &root).map_err(&se)?;
    let pkl = read_entry(&mut archive, &pkl_name).map_err(&se)?;
    let parsed = pickle::parse(&pkl, 0).map_err(&se)?;
    if parsed.stack_global_used {
        return Err(se(PthErrorKind::BadValue(
            "only pickles that name globals with GLOBAL (protocol 2, as torch.save writes) \
             can be converted"
                .into(),
        )));
    }
    let dtypes = pickle::storage_dtypes(&parsed.arena);
    // new pickle: DoubleStorage globals renamed, FRAME opcodes dropped (they are optional)
    let mut new_pkl = Vec::with_capacity(pkl.len());
    let mut pos = 0;
    for g in &parsed.spans {
        new_pkl.extend_from_slice(&pkl[pos..g.start]);
        match &g.what {
            pickle::SpanKind::Frame => {}
            pickle::SpanKind::Global(m, n) if m == "torch" && n == "DoubleStorage" => {
                new_pkl.extend_from_slice(b"ctorch\nFloatStorage\n");
            }
            pickle::SpanKind::Global(..) => new_pkl.extend_from_slice(&pkl[g.start..g.end]),
        }
        pos = g.end;
    }
    new_pkl.extend_from_slice(&pkl[pos..parsed.end]);

    let new_root = {
        let name = dst
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = match name.rfind('.') {
            Some(i) if i > 0 => name[..i].to_string(),
            _ => name,
        };
        if stem.is_empty() {
            "archive".to_string()
        } else {
            stem
        }
    };
    let out = File::create(tmp).map_err(|e| de(PthErrorKind::Write(e)))?;
    let mut zw = zip::ZipWriter::new(BufWriter::new(out));
    let werr = |e: zip::result::ZipError| {
        de(match e {
            zip::result::ZipError::Io(e) => PthErrorKind::Write(e),
            e => PthErrorKind::BadZip(e.to_string()),
        })
    };
    let wio = |e: io::Error| de(PthErrorKind::Write(e));
    for i in 0..archive.len() {
        let name = archive
            .by_index(i)
            .map_err(|e| se(zip_err(e)))?
            .name()
            .to_string();
        if name.ends_with('/') {
            continue; // directory entries: torch writes none
        }
        let rel = name.strip_prefix(&root).unwrap_or(&name).to_string();
        let new_name = if name.starts_with(&root) {
            format!("{new_root}/{rel}")
        } else {
            name.clone()
        };
        let bytes: Vec<u8> = if name == pkl_name {
            std::mem::take(&mut new_pkl)
        } else {
            let raw = read_entry(&mut archive, &name).map_err(&se)?;
            match rel.strip_prefix("data/").and_then(|k| dtypes.get(k)) {
                Some(StoredDType::F64) => {
                    if raw.len() % 8 != 0 {
                        return Err(se(PthErrorKind::BadZip(format!(
                            "entry '{name}' is {} bytes, not a whole number of f64",
                            raw.len()
                        ))));
                    }
                    raw.chunks_exact(8)
                        .flat_map(|c| {
                            (f64::from_le_bytes(c.try_into().unwrap()) as f32).to_le_bytes()
                        })
                        .collect()
                }
                _ => raw,
            }
        };
        let opts = zip::write::FileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(bytes.len() as u64 >= u32::MAX as u64);
        if rel.starts_with("data/") {
            zw.start_file_aligned(new_name, opts, 64).map_err(&werr)?;
        } else {
            zw.start_file(new_name, opts).map_err(&werr)?;
        }
        zw.write_all(&bytes).map_err(&wio)?;
    }
    let mut inner = zw.finish().map_err(&werr)?;
    inner.flush().map_err(&wio)?;
    drop(inner);
    std::fs::rename(tmp, dst).map_err(wio)?;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// The restricted unpickler
// ------------------------------------------------------------------------------------------------

mod pickle {
    //! A pickle interpreter that builds an object graph (an arena) instead of running code.
    //! Only the globals a torch checkpoint needs are known; they are never called, only
    //! recognized, and their "calls" (REDUCE) build tensor descriptions.

    use super::{KResult, MAX_DIMS, MAX_MEMO, PthErrorKind, StoredDType};
    use std::collections::HashMap;

    pub type Id = usize;

    /// Globals a checkpoint may name.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum Global {
        OrderedDict,
        RebuildTensorV2,
        RebuildTensor,
        RebuildParameter,
        RebuildParameterWithState,
        StorageClass(StoredDType),
    }

    impl Global {
        fn resolve(module: &str, name: &str) -> KResult<Global> {
            Ok(match (module, name) {
                ("collections", "OrderedDict") => Global::OrderedDict,
                ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
                ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
                ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
                ("torch._utils", "_rebuild_parameter_with_state") => {
                    Global::RebuildParameterWithState
                }
                ("torch" | "torch.cuda", n) if StoredDType::from_storage_class(n).is_some() => {
                    Global::StorageClass(StoredDType::from_storage_class(n).unwrap())
                }
                _ => return Err(PthErrorKind::ForbiddenGlobal(format!("{module}.{name}"))),
            })
        }

        pub fn name(self) -> String {
            match self {
                Global::OrderedDict => "collections.OrderedDict".into(),
                Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2".into(),
                Global::RebuildTensor => "torch._utils._rebuild_tensor".into(),
                Global::RebuildParameter => "torch._utils._rebuild_parameter".into(),
                Global::RebuildParameterWithState => {
                    "torch._utils._rebuild_parameter_with_state".into()
                }
                Global::StorageClass(d) => format!("torch.{}", d.storage_class()),
            }
        }
    }

    /// A storage named by a persistent id.
    #[derive(Debug, Clone)]
    pub struct StorageRef {
        pub dtype: StoredDType,
        pub key: String,
        /// legacy storage views: offset into the root storage and size, in elements
        pub view_offset: u64,
        pub view_size: Option<u64>,
    }

    /// A tensor not yet read: a strided view of a storage.
    #[derive(Debug, Clone)]
    pub struct TensorSpec {
        pub storage: StorageRef,
        pub offset: u64,
        pub shape: Vec<usize>,
        pub stride: Vec<usize>,
    }

    #[derive(Debug, Default)]
    pub struct Dict {
        pub items: Vec<(Id, Id)>,
        index: HashMap<HKey, usize>,
    }

    /// Hashable key objects (others are appended without de-duplication).
    #[derive(Debug, Hash, PartialEq, Eq)]
    enum HKey {
        None,
        Int(i64),
        Float(u64),
        Str(String),
        Bytes(Vec<u8>),
    }

    #[derive(Debug)]
    pub enum Obj {
        None,
        Bool(bool),
        Int(i64),
        /// little-endian two's complement, longer than 8 bytes
        BigInt(Vec<u8>),
        Float(f64),
        Str(String),
        Bytes(Vec<u8>),
        List(Vec<Id>),
        Tuple(Vec<Id>),
        Dict(Dict),
        Set(Vec<Id>),
        Global(Global),
        Storage(StorageRef),
        Tensor(TensorSpec),
    }

    impl Obj {
        pub fn kind(&self) -> &'static str {
            match self {
                Obj::None => "None",
                Obj::Bool(_) => "a bool",
                Obj::Int(_) | Obj::BigInt(_) => "an int",
                Obj::Float(_) => "a float",
                Obj::Str(_) => "a string",
                Obj::Bytes(_) => "bytes",
                Obj::List(_) => "a list",
                Obj::Tuple(_) => "a tuple",
                Obj::Dict(_) => "a dict",
                Obj::Set(_) => "a set",
                Obj::Global(_) => "a class or function",
                Obj::Storage(_) => "a storage",
                Obj::Tensor(_) => "a tensor",
            }
        }
    }

    /// Where GLOBAL and FRAME opcodes are (used to rewrite storage classes).
    pub enum SpanKind {
        Global(String, String),
        Frame,
    }

    pub struct Span {
        pub start: usize,
        pub end: usize,
        pub what: SpanKind,
    }

    pub struct Parsed {
        pub arena: Vec<Obj>,
        pub root: Id,
        /// byte just after STOP
        pub end: usize,
        pub spans: Vec<Span>,
        pub stack_global_used: bool,
    }

    /// Value of a string key in a dict object.
    pub fn dict_get_str(arena: &[Obj], dict: Id, key: &str) -> Option<Id> {
        match &arena[dict] {
            Obj::Dict(d) => d
                .items
                .iter()
                .find(|&&(k, _)| matches!(&arena[k], Obj::Str(s) if s == key))
                .map(|&(_, v)| v),
            _ => None,
        }
    }

    /// A storage key as a string (ints accepted too).
    pub fn as_key(o: &Obj) -> Option<String> {
        match o {
            Obj::Str(s) => Some(s.clone()),
            Obj::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    /// dtype of every storage named in the graph, by key.
    pub fn storage_dtypes(arena: &[Obj]) -> HashMap<String, StoredDType> {
        let mut m = HashMap::new();
        for o in arena {
            match o {
                Obj::Storage(s) => {
                    m.entry(s.key.clone()).or_insert(s.dtype);
                }
                Obj::Tensor(t) => {
                    m.entry(t.storage.key.clone()).or_insert(t.storage.dtype);
                }
                _ => {}
            }
        }
        m
    }

    /// Parses one pickle starting at `data[start]`, up to and including its STOP.
    pub fn parse(data: &[u8], start: usize) -> KResult<Parsed> {
        let mut u = Unpickler {
            data,
            pos: start,
            op_pos: start,
            // 0, 1, 2: shared None, True, False
            arena: vec![Obj::None, Obj::Bool(true), Obj::Bool(false)],
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            spans: Vec::new(),
            stack_global_used: false,
        };
        let root = u.run()?;
        Ok(Parsed {
            end: u.pos,
            root,
            arena: u.arena,
            spans: u.spans,
            stack_global_used: u.stack_global_used,
        })
    }

    struct Unpickler<'a> {
        data: &'a [u8],
        pos: usize,
        op_pos: usize,
        arena: Vec<Obj>,
        stack: Vec<Id>,
        marks: Vec<usize>,
        memo: HashMap<u32, Id>,
        spans: Vec<Span>,
        stack_global_used: bool,
    }

    const NONE: Id = 0;
    const TRUE: Id = 1;
    const FALSE: Id = 2;

    impl<'a> Unpickler<'a> {
        fn bad<T>(&self, msg: impl Into<String>) -> KResult<T> {
            Err(PthErrorKind::BadPickle {
                pos: self.op_pos,
                msg: msg.into(),
            })
        }

        fn take(&mut self, n: usize) -> KResult<&'a [u8]> {
            if n > self.data.len() - self.pos {
                return Err(PthErrorKind::Truncated(self.op_pos));
            }
            let s = &self.data[self.pos..self.pos + n];
            self.pos += n;
            Ok(s)
        }
        fn u8(&mut self) -> KResult<u8> {
            Ok(self.take(1)?[0])
        }
        fn u16(&mut self) -> KResult<u16> {
            Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
        }
        fn u32(&mut self) -> KResult<u32> {
            Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
        }
        fn u64(&mut self) -> KResult<u64> {
            Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
        }
        /// A length field: checked against the remaining input before anything is allocated.
        fn len_u64(&mut self, n: u64) -> KResult<usize> {
            if n > (self.data.len() - self.pos) as u64 {
                return Err(PthErrorKind::Truncated(self.op_pos));
            }
            Ok(n as usize)
        }
        fn line(&mut self) -> KResult<&'a str> {
            let rest = &self.data[self.pos..];
            let n = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or(PthErrorKind::Truncated(self.op_pos))?;
            self.pos += n + 1;
            match std::str::from_utf8(&rest[..n]) {
                Ok(s) => Ok(s),
                Err(_) => self.bad("GLOBAL name is not UTF-8"),
            }
        }

        fn new_obj(&mut self, o: Obj) -> Id {
            self.arena.push(o);
            self.arena.len() - 1
        }
        fn push(&mut self, o: Obj) {
            let id = self.new_obj(o);
            self.stack.push(id);
        }
        fn pop(&mut self) -> KResult<Id> {
            let floor = self.marks.last().copied().unwrap_or(0);
            if self.stack.len() <= floor {
                return self.bad("stack underflow");
            }
            Ok(self.stack.pop().unwrap())
        }
        fn top(&self) -> KResult<Id> {
            let floor = self.marks.last().copied().unwrap_or(0);
            if self.stack.len() <= floor {
                return self.bad("stack underflow");
            }
            Ok(*self.stack.last().unwrap())
        }
        fn pop_mark(&mut self) -> KResult<Vec<Id>> {
            let Some(m) = self.marks.pop() else {
                return self.bad("no MARK on the stack");
            };
            Ok(self.stack.split_off(m))
        }
        fn memo_put(&mut self, idx: u32) -> KResult<()> {
            let top = self.top()?;
            if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&idx) {
                return Err(PthErrorKind::Limit(format!(
                    "more than {MAX_MEMO} memo entries"
                )));
            }
            self.memo.insert(idx, top);
            Ok(())
        }
        fn memo_get(&mut self, idx: u32) -> KResult<()> {
            match self.memo.get(&idx) {
                Some(&id) => {
                    self.stack.push(id);
                    Ok(())
                }
                None => self.bad(format!("memo entry {idx} was never stored")),
            }
        }

        fn str_obj(&self, b: &[u8]) -> KResult<Obj> {
            match std::str::from_utf8(b) {
                Ok(s) => Ok(Obj::Str(s.to_string())),
                Err(_) => self.bad("string is not valid UTF-8"),
            }
        }

        fn int_of(&self, id: Id, what: &str) -> KResult<i64> {
            match self.arena[id] {
                Obj::Int(i) => Ok(i),
                Obj::Bool(b) => Ok(b as i64),
                ref o => self.bad(format!("{what} is {}, expected an int", o.kind())),
            }
        }

        fn usizes(&self, id: Id, what: &str) -> KResult<Vec<usize>> {
            let ids = match &self.arena[id] {
                Obj::Tuple(v) | Obj::List(v) => v,
                o => return self.bad(format!("{what} is {}, expected a tuple", o.kind())),
            };
            if ids.len() > MAX_DIMS {
                return self.bad(format!("{what} has {} dimensions", ids.len()));
            }
            ids.iter()
                .map(|&i| {
                    let v = self.int_of(i, what)?;
                    usize::try_from(v).or_else(|_| self.bad(format!("{what} holds {v}")))
                })
                .collect()
        }

        fn hkey(&self, id: Id) -> Option<HKey> {
            Some(match &self.arena[id] {
                Obj::None => HKey::None,
                Obj::Bool(b) => HKey::Int(*b as i64),
                Obj::Int(i) => HKey::Int(*i),
                Obj::Float(f) => HKey::Float(f.to_bits()),
                Obj::Str(s) => HKey::Str(s.clone()),
                Obj::Bytes(b) => HKey::Bytes(b.clone()),
                _ => return None,
            })
        }

        fn set_items(&mut self, dict: Id, kv: &[Id]) -> KResult<()> {
            if !kv.len().is_multiple_of(2) {
                return self.bad("odd number of items for SETITEMS");
            }
            for pair in kv.chunks_exact(2) {
                let (k, v) = (pair[0], pair[1]);
                let hk = self.hkey(k);
                let Obj::Dict(d) = &mut self.arena[dict] else {
                    let kind = self.arena[dict].kind();
                    return self.bad(format!("SETITEM on {kind}"));
                };
                match hk {
                    Some(hk) => match d.index.get(&hk) {
                        Some(&i) => d.items[i].1 = v,
                        None => {
                            d.index.insert(hk, d.items.len());
                            d.items.push((k, v));
                        }
                    },
                    None => d.items.push((k, v)),
                }
            }
            Ok(())
        }

        fn global(&mut self, module: &str, name: &str) -> KResult<()> {
            let g = Global::resolve(module, name)?;
            self.push(Obj::Global(g));
            Ok(())
        }

        fn persistent_load(&mut self, pid: Id) -> KResult<Obj> {
            let Obj::Tuple(t) = &self.arena[pid] else {
                return self.bad(format!(
                    "persistent id is {}, expected a tuple",
                    self.arena[pid].kind()
                ));
            };
            let t = t.clone();
            if !matches!(t.first().map(|&i| &self.arena[i]), Some(Obj::Str(s)) if s == "storage") {
                return self.bad("persistent id is not a ('storage', ...) tuple");
            }
            // zip: (storage, class, key, location, numel)
            // legacy: (storage, class, root_key, location, numel, view_metadata)
            if t.len() != 5 && t.len() != 6 {
                return self.bad(format!("storage persistent id has {} fields", t.len()));
            }
            let dtype = match self.arena[t[1]] {
                Obj::Global(Global::StorageClass(d)) => d,
                ref o => return self.bad(format!("storage class is {}", o.kind())),
            };
            let Some(key) = as_key(&self.arena[t[2]]) else {
                return self.bad("storage key is not a string");
            };
            // t[3] is the location ("cpu", "cuda:0", ...): ignored.
            let numel = self.int_of(t[4], "storage size")?;
            if numel < 0 {
                return self.bad("negative storage size");
            }
            let (mut view_offset, mut view_size) = (0, None);
            if t.len() == 6 {
                match &self.arena[t[5]] {
                    Obj::None => {}
                    Obj::Tuple(v) if v.len() == 3 => {
                        let (o, s) = (
                            self.int_of(v[1], "view offset")?,
                            self.int_of(v[2], "view size")?,
                        );
                        if o < 0 || s < 0 {
                            return self.bad("negative storage view");
                        }
                        view_offset = o as u64;
                        view_size = Some(s as u64);
                    }
                    o => return self.bad(format!("storage view metadata is {}", o.kind())),
                }
            }
            Ok(Obj::Storage(StorageRef {
                dtype,
                key,
                view_offset,
                view_size,
            }))
        }

        fn call(&mut self, g: Global, args: &[Id]) -> KResult<Id> {
            let n = args.len();
            match g {
                Global::OrderedDict => {
                    let d = self.new_obj(Obj::Dict(Dict::default()));
                    match args {
                        [] => {}
                        [items] => {
                            let pairs = match &self.arena[*items] {
                                Obj::List(v) | Obj::Tuple(v) => v.clone(),
                                o => return self.bad(format!("OrderedDict of {}", o.kind())),
                            };
                            for p in pairs {
                                let kv = match &self.arena[p] {
                                    Obj::List(v) | Obj::Tuple(v) if v.len() == 2 => v.clone(),
                                    _ => return self.bad("OrderedDict item is not a pair"),
                                };
                                self.set_items(d, &kv)?;
                            }
                        }
                        _ => return self.bad("OrderedDict with several arguments"),
                    }
                    Ok(d)
                }
                Global::RebuildTensorV2 | Global::RebuildTensor => {
                    let ok = if g == Global::RebuildTensor {
                        n == 4
                    } else {
                        n == 6 || n == 7
                    };
                    if !ok {
                        return self.bad(format!("{} with {n} arguments", g.name()));
                    }
                    let storage = match &self.arena[args[0]] {
                        Obj::Storage(s) => s.clone(),
                        o => return self.bad(format!("tensor storage is {}", o.kind())),
                    };
                    let offset = self.int_of(args[1], "storage offset")?;
                    let shape = self.usizes(args[2], "tensor size")?;
                    let stride = self.usizes(args[3], "tensor stride")?;
                    if offset < 0 {
                        return self.bad("negative storage offset");
                    }
                    if shape.len() != stride.len() {
                        return self.bad(format!(
                            "size {shape:?} and stride {stride:?} differ in length"
                        ));
                    }
                    let t = TensorSpec {
                        storage,
                        offset: offset as u64,
                        shape,
                        stride,
                    };
                    Ok(self.new_obj(Obj::Tensor(t)))
                }
                Global::RebuildParameter | Global::RebuildParameterWithState => {
                    let want = if g == Global::RebuildParameter { 3 } else { 4 };
                    if n != want || !matches!(self.arena[args[0]], Obj::Tensor(_)) {
                        return self.bad(format!(
                            "{} needs a tensor and {} more arguments",
                            g.name(),
                            want - 1
                        ));
                    }
                    Ok(args[0])
                }
                Global::StorageClass(_) => self.bad(format!("{} cannot be called", g.name())),
            }
        }

        fn run(&mut self) -> KResult<Id> {
            loop {
                self.op_pos = self.pos;
                let op = self.u8()?;
                match op {
                    0x80 => {
                        // PROTO
                        let p = self.u8()?;
                        if p > 5 {
                            return self.bad(format!("pickle protocol {p}"));
                        }
                    }
                    0x95 => {
                        // FRAME: only a hint for buffered readers
                        let n = self.u64()?;
                        self.len_u64(n)?;
                        self.spans.push(Span {
                            start: self.op_pos,
                            end: self.pos,
                            what: SpanKind::Frame,
                        });
                    }
                    b'.' => {
                        let r = self.pop()?;
                        return Ok(r);
                    }
                    b'(' => self.marks.push(self.stack.len()),
                    b'0' => {
                        self.pop()?;
                    }
                    b'1' => {
                        self.pop_mark()?;
                    }
                    b'2' => {
                        let t = self.top()?;
                        self.stack.push(t);
                    }
                    b'}' => self.push(Obj::Dict(Dict::default())),
                    b']' => self.push(Obj::List(Vec::new())),
                    b')' => self.push(Obj::Tuple(Vec::new())),
                    0x8f => self.push(Obj::Set(Vec::new())),
                    b't' => {
                        let items = self.pop_mark()?;
                        self.push(Obj::Tuple(items));
                    }
                    0x91 => {
                        let items = self.pop_mark()?;
                        self.push(Obj::Set(items));
                    }
                    0x85..=0x87 => {
                        let n = (op - 0x84) as usize;
                        let mut items = vec![0; n];
                        for slot in items.iter_mut().rev() {
                            *slot = self.pop()?;
                        }
                        self.push(Obj::Tuple(items));
                    }
                    b'X' | 0x8c | 0x8d | b'C' | b'B' | 0x8e | 0x96 | b'U' | b'T' => {
                        let n = match op {
                            0x8c | b'C' | b'U' => self.u8()? as u64,
                            b'X' | b'B' => self.u32()? as u64,
                            b'T' => {
                                let n = self.u32()? as i32;
                                if n < 0 {
                                    return self.bad("negative BINSTRING length");
                                }
                                n as u64
                            }
                            _ => self.u64()?,
                        };
                        let n = self.len_u64(n)?;
                        let b = self.take(n)?;
                        let o = match op {
                            b'X' | 0x8c | 0x8d => self.str_obj(b)?,
                            // Python 2 str: UTF-8 when valid, else Latin-1
                            b'U' | b'T' => match std::str::from_utf8(b) {
                                Ok(s) => Obj::Str(s.to_string()),
                                Err(_) => Obj::Str(b.iter().map(|&c| c as char).collect()),
                            },
                            _ => Obj::Bytes(b.to_vec()),
                        };
                        self.push(o);
                    }
                    b'J' => {
                        let v = self.u32()? as i32;
                        self.push(Obj::Int(v as i64));
                    }
                    b'K' => {
                        let v = self.u8()?;
                        self.push(Obj::Int(v as i64));
                    }
                    b'M' => {
                        let v = self.u16()?;
                        self.push(Obj::Int(v as i64));
                    }
                    0x8a | 0x8b => {
                        let n = if op == 0x8a {
                            self.u8()? as u64
                        } else {
                            let n = self.u32()? as i32;
                            if n < 0 {
                                return self.bad("negative LONG4 length");
                            }
                            n as u64
                        };
                        let n = self.len_u64(n)?;
                        let b = self.take(n)?;
                        self.push(long_obj(b));
                    }
                    b'G' => {
                        let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                        self.push(Obj::Float(v));
                    }
                    0x88 => self.stack.push(TRUE),
                    0x89 => self.stack.push(FALSE),
                    b'N' => self.stack.push(NONE),
                    b'q' => {
                        let i = self.u8()? as u32;
                        self.memo_put(i)?;
                    }
                    b'r' => {
                        let i = self.u32()?;
                        self.memo_put(i)?;
                    }
                    0x94 => {
                        let i = u32::try_from(self.memo.len()).unwrap_or(u32::MAX);
                        self.memo_put(i)?;
                    }
                    b'h' => {
                        let i = self.u8()? as u32;
                        self.memo_get(i)?;
                    }
                    b'j' => {
                        let i = self.u32()?;
                        self.memo_get(i)?;
                    }
                    b's' => {
                        let v = self.pop()?;
                        let k = self.pop()?;
                        let d = self.top()?;
                        self.set_items(d, &[k, v])?;
                    }
                    b'u' => {
                        let kv = self.pop_mark()?;
                        let d = self.top()?;
                        self.set_items(d, &kv)?;
                    }
                    b'a' | b'e' | 0x90 => {
                        let items = if op == b'a' {
                            vec![self.pop()?]
                        } else {
                            self.pop_mark()?
                        };
                        let target = self.top()?;
                        match (&mut self.arena[target], op) {
                            (Obj::List(v), b'a' | b'e') | (Obj::Set(v), 0x90) => v.extend(items),
                            (o, _) => {
                                let kind = o.kind();
                                return self.bad(format!("cannot add items to {kind}"));
                            }
                        }
                    }
                    b'c' => {
                        let module = self.line()?;
                        let name = self.line()?;
                        self.spans.push(Span {
                            start: self.op_pos,
                            end: self.pos,
                            what: SpanKind::Global(module.to_string(), name.to_string()),
                        });
                        self.global(module, name)?;
                    }
                    0x93 => {
                        self.stack_global_used = true;
                        let name = self.pop()?;
                        let module = self.pop()?;
                        let (Obj::Str(m), Obj::Str(n)) = (&self.arena[module], &self.arena[name])
                        else {
                            return self.bad("STACK_GLOBAL needs two strings");
                        };
                        let (m, n) = (m.clone(), n.clone());
                        self.global(&m, &n)?;
                    }
                    b'R' | 0x81 => {
                        let args = self.pop()?;
                        let callable = self.pop()?;
                        let Obj::Global(g) = self.arena[callable] else {
                            return self.bad(format!("call of {}", self.arena[callable].kind()));
                        };
                        if op == 0x81 && g != Global::OrderedDict {
                            return self.bad(format!("NEWOBJ of {}", g.name()));
                        }
                        let Obj::Tuple(a) = &self.arena[args] else {
                            return self.bad("call arguments are not a tuple");
                        };
                        let a = a.clone();
                        let r = self.call(g, &a)?;
                        self.stack.push(r);
                    }
                    b'b' => {
                        // BUILD: only OrderedDict's state (`_metadata`), which is ignored
                        let _state = self.pop()?;
                        let target = self.top()?;
                        if !matches!(self.arena[target], Obj::Dict(_)) {
                            return self.bad(format!("BUILD of {}", self.arena[target].kind()));
                        }
                    }
                    b'Q' => {
                        let pid = self.pop()?;
                        let o = self.persistent_load(pid)?;
                        self.push(o);
                    }
                    _ => {
                        return Err(PthErrorKind::UnsupportedOpcode {
                            op,
                            pos: self.op_pos,
                        });
                    }
                }
            }
        }
    }

    /// LONG1/LONG4 payload: little-endian two's complement.
    fn long_obj(b: &[u8]) -> Obj {
        // drop redundant sign-extension bytes
        let neg = b.last().is_some_and(|&x| x & 0x80 != 0);
        let fill = if neg { 0xff } else { 0 };
        let mut n = b.len();
        while n > 1 && b[n - 1] == fill && (b[n - 2] & 0x80 != 0) == neg {
            n -= 1;
        }
        let b = &b[..n];
        if b.len() <= 8 {
            let mut buf = [fill; 8];
            buf[..b.len()].copy_from_slice(b);
            Obj::Int(i64::from_le_bytes(buf))
        } else {
            Obj::BigInt(b.to_vec())
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    // ---- helpers -------------------------------------------------------------------------------

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

    /// Copies a zip entry by entry; `edit` may change (Some) or drop (None) an entry.
    fn rezip(src: &Path, dst: &Path, edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) {
        let mut a = zip::ZipArchive::new(File::open(src).unwrap()).unwrap();
        let mut w = zip::ZipWriter::new(File::create(dst).unwrap());
        for i in 0..a.len() {
            let mut e = a.by_index(i).unwrap();
            let name = e.name().to_string();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            if let Some(b) = edit(&name, b) {
                let o = zip::write::FileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored);
                w.start_file(name, o).unwrap();
                w.write_all(&b).unwrap();
            }
        }
        w.finish().unwrap();
    }

    fn entry_bytes(path: &Path, name: &str) -> Vec<u8> {
        let mut a = zip::ZipArchive::new(File::open(path).unwrap()).unwrap();
        let mut b = Vec::new();
        a.by_name(name).unwrap().read_to_end(&mut b).unwrap();
        b
    }

    /// Minimal JSON, enough for the fixture files (tests only: no serde in this crate).
    #[derive(Debug)]
    #[allow(dead_code)]
    enum J {
        Null,
        Bool(bool),
        Num(f64),
        Str(String),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    impl J {
        fn get(&self, k: &str) -> &J {
            match self {
                J::Obj(v) => {
                    &v.iter()
                        .find(|(n, _)| n == k)
                        .unwrap_or_else(|| panic!("no {k}"))
                        .1
                }
                _ => panic!("not an object"),
            }
        }
        fn arr(&self) -> &[J] {
            match self {
                J::Arr(v) => v,
                _ => panic!("not an array"),
            }
        }
        fn num(&self) -> f64 {
            match self {
                J::Num(x) => *x,
                _ => panic!("not a number"),
            }
        }
        fn str(&self) -> &str {
            match self {
                J::Str(s) => s,
                _ => panic!("not a string"),
            }
        }
    }

    fn parse_json(s: &str) -> J {
        fn ws(b: &[u8], i: &mut usize) {
            while *i < b.len() && b[*i].is_ascii_whitespace() {
                *i += 1;
            }
        }
        fn val(b: &[u8], i: &mut usize) -> J {
            ws(b, i);
            match b[*i] {
                b'{' => {
                    *i += 1;
                    let mut v = Vec::new();
                    loop {
                        ws(b, i);
                        if b[*i] == b'}' {
                            *i += 1;
                            return J::Obj(v);
                        }
                        let J::Str(k) = val(b, i) else { panic!("key") };
                        ws(b, i);
                        assert_eq!(b[*i], b':');
                        *i += 1;
                        v.push((k, val(b, i)));
                        ws(b, i);
                        if b[*i] == b',' {
                            *i += 1;
                        }
                    }
                }
                b'[' => {
                    *i += 1;
                    let mut v = Vec::new();
                    loop {
                        ws(b, i);
                        if b[*i] == b']' {
                            *i += 1;
                            return J::Arr(v);
                        }
                        v.push(val(b, i));
                        ws(b, i);
                        if b[*i] == b',' {
                            *i += 1;
                        }
                    }
                }
                b'"' => {
                    *i += 1;
                    let mut s = String::new();
                    while b[*i] != b'"' {
                        if b[*i] == b'\\' {
                            *i += 1;
                            s.push(match b[*i] {
                                b'n' => '\n',
                                b't' => '\t',
                                c => c as char,
                            });
                            *i += 1;
                        } else {
                            let n = std::str::from_utf8(&b[*i..])
                                .unwrap()
                                .chars()
                                .next()
                                .unwrap();
                            s.push(n);
                            *i += n.len_utf8();
                        }
                    }
                    *i += 1;
                    J::Str(s)
                }
                b't' => {
                    *i += 4;
                    J::Bool(true)
                }
                b'f' => {
                    *i += 5;
                    J::Bool(false)
                }
                b'n' => {
                    *i += 4;
                    J::Null
                }
                _ => {
                    let st = *i;
                    while *i < b.len()
                        && (b[*i] == b'-'
                            || b[*i] == b'+'
                            || b[*i] == b'.'
                            || b[*i] == b'e'
                            || b[*i] == b'E'
                            || b[*i].is_ascii_digit())
                    {
                        *i += 1;
                    }
                    J::Num(std::str::from_utf8(&b[st..*i]).unwrap().parse().unwrap())
                }
            }
        }
        let mut i = 0;
        val(s.as_bytes(), &mut i)
    }

    fn expected(name: &str) -> J {
        parse_json(&std::fs::read_to_string(fixture(name)).unwrap())
    }

    fn dtype_name(d: StoredDType) -> String {
        format!("{d:?}")
    }

    /// Compares a state dict with an `*.expected.json` file, every element bit for bit.
    fn check_against(sd: &[(String, PthTensor)], exp: &J) {
        let order: Vec<&str> = exp.get("order").arr().iter().map(|j| j.str()).collect();
        let keys: Vec<&str> = sd.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, order);
        for (k, t) in sd {
            let e = exp.get("tensors").get(k);
            let shape: Vec<usize> = e
                .get("shape")
                .arr()
                .iter()
                .map(|j| j.num() as usize)
                .collect();
            assert_eq!(t.shape, shape, "{k}");
            assert_eq!(dtype_name(t.dtype), e.get("dtype").str(), "{k}");
            let want = e.get("f32").arr();
            assert_eq!(t.data.len(), want.len(), "{k}");
            assert_eq!(t.numel(), want.len(), "{k}");
            for (i, (g, w)) in t.data.iter().zip(want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    (w.num() as f32).to_bits(),
                    "{k}[{i}]: {g} vs {}",
                    w.num()
                );
            }
        }
    }

    /// A storage source that answers every key with `n` zero bytes.
    struct Zeros(Vec<u8>);
    impl StorageSource for Zeros {
        fn entry_name(&self, key: &str) -> String {
            format!("zeros/{key}")
        }
        fn bytes(&mut self, _: &str) -> KResult<&[u8]> {
            Ok(&self.0)
        }
    }

    /// Parses a pickle and converts it (with zero storages), as the readers do.
    fn load_pickle(pkl: &[u8]) -> KResult<Value> {
        let p = pickle::parse(pkl, 0)?;
        let mut l = Loaded {
            arena: p.arena,
            root: p.root,
            src: Box::new(Zeros(vec![0; 4096])),
            file_len: pkl.len() as u64,
        };
        let _ = l.state_dict::<f32>();
        l.value_tree()
    }

    // ---- fixtures written by torch 2.15.0 --------------------------------------------------------

    #[test]
    fn zip_fixture_every_dtype_view_and_value() {
        let sd = read_state_dict(&fixture("tiny_f32.pth")).unwrap();
        check_against(&sd, &expected("tiny_f32.expected.json"));
        let get = |k: &str| &sd.iter().find(|(n, _)| n == k).unwrap().1;
        assert_eq!(get("scale").shape, Vec::<usize>::new());
        assert_eq!(get("scale").data, vec![2.5]);
        assert_eq!(get("empty").shape, vec![0, 3]);
        assert_eq!(get("layer.weight_t").shape, vec![3, 4]);
        // the transposed view really is the transpose of the weight it shares storage with
        let (w, wt) = (get("layer.weight"), get("layer.weight_t"));
        for r in 0..4 {
            for c in 0..3 {
                assert_eq!(w.data[r * 3 + c], wt.data[c * 4 + r]);
            }
        }
        assert_eq!(
            get("base_slice").data,
            vec![
                7.0 / 8.0,
                1.0,
                9.0 / 8.0,
                12.0 / 8.0,
                13.0 / 8.0,
                14.0 / 8.0
            ]
        );
        assert_eq!(get("expanded").data, vec![1.5, -2.5, 3.5, 1.5, -2.5, 3.5]);
        assert_eq!(get("double").dtype, StoredDType::F64);
    }

    #[test]
    fn zip_fixture_f64_values_are_exact() {
        let sd = read_state_dict_f64(&fixture("tiny_f32.pth")).unwrap();
        let exp = expected("tiny_f32.expected.json");
        for (k, t) in &sd {
            let want = exp.get("tensors").get(k).get("f64").arr();
            let got: Vec<u64> = t.data.iter().map(|x| x.to_bits()).collect();
            let want: Vec<u64> = want.iter().map(|j| j.num().to_bits()).collect();
            assert_eq!(got, want, "{k}");
        }
        let steps = &sd.iter().find(|(k, _)| k == "steps").unwrap().1;
        assert_eq!(steps.data[3], (2u64.pow(40) + 1) as f64);
    }

    #[test]
    fn legacy_fixture_reads_like_the_zip_one() {
        let sd = read_state_dict(&fixture("tiny_legacy.pth")).unwrap();
        check_against(&sd, &expected("tiny_f32.expected.json"));
        let v = read_pth(&fixture("tiny_legacy.pth")).unwrap();
        assert!(matches!(v.get("flags"), Some(Value::Tensor(t)) if t.dtype == StoredDType::Bool));
    }

    #[test]
    fn wrapped_state_dict_ignores_iteration_and_optimizer() {
        let p = fixture("wrapped_model.pth");
        let sd = read_state_dict(&p).unwrap();
        check_against(&sd, &expected("wrapped_model.expected.json"));
        let v = read_pth(&p).unwrap();
        let Value::Dict(items) = &v else {
            panic!("{v:?}")
        };
        let keys: Vec<&Value> = items.iter().map(|(k, _)| k).collect();
        let s = |x: &str| Value::Str(x.into());
        assert_eq!(
            keys,
            vec![&s("iteration"), &s("model"), &s("optimizer"), &s("note")]
        );
        assert_eq!(v.get("iteration"), Some(&Value::Int(5)));
        assert_eq!(v.get("note"), Some(&s("hi")));
        let Some(Value::List(groups)) = v.get("optimizer").and_then(|o| o.get("param_groups"))
        else {
            panic!()
        };
        assert_eq!(groups[0].get("lr"), Some(&Value::Float(0.1)));
        assert_eq!(groups[0].get("nesterov"), Some(&Value::Bool(false)));
        assert_eq!(groups[0].get("foreach"), Some(&Value::None));
        assert_eq!(
            groups[0].get("params"),
            Some(&Value::List((0..4).map(Value::Int).collect()))
        );
        // SGD momentum buffers = the fixed gradients 0.5 * (i + 1), keyed by int
        let Some(Value::Dict(state)) = v.get("optimizer").and_then(|o| o.get("state")) else {
            panic!()
        };
        assert_eq!(state.len(), 4);
        assert_eq!(state[1].0, Value::Int(1));
        let Some(Value::Tensor(m)) = state[1].1.get("momentum_buffer") else {
            panic!()
        };
        assert_eq!((m.shape.clone(), m.data.clone()), (vec![2], vec![1.0, 1.0]));
    }

    #[test]
    fn refuses_os_system_and_names_it() {
        let p = fixture("evil_os_system.pth");
        let msg = err_text(read_pth(&p));
        assert!(msg.contains("evil_os_system.pth"), "{msg}");
        assert!(
            msg.contains(
                "pickle refers to global 'posix.system', which a PyTorch state dict never \
                          needs; refusing to load it (no pickle code is ever executed)"
            ),
            "{msg}"
        );
        assert!(err_text(read_state_dict(&p)).contains("'posix.system'"));
    }

    #[test]
    fn refuses_builtins_eval_in_legacy_protocol4_pickle() {
        let msg = err_text(read_state_dict(&fixture("evil_eval_legacy.pth")));
        assert!(msg.contains("global 'builtins.eval'"), "{msg}");
        assert!(msg.starts_with("checkpoint "), "{msg}");
    }

    #[test]
    fn truncated_file_is_a_clear_error() {
        let p = fixture("tiny_f32_truncated.pth");
        let msg = err_text(read_state_dict(&p));
        assert!(msg.contains("tiny_f32_truncated.pth"), "{msg}");
        assert!(msg.contains("damaged or truncated zip archive"), "{msg}");
        // legacy file cut anywhere: a clear error, never a panic
        let data = std::fs::read(fixture("tiny_legacy.pth")).unwrap();
        let cut = tmp("legacy_cut.pth");
        for n in [1, 20, 140, 600, 1938, 2300, data.len() - 1] {
            std::fs::write(&cut, &data[..n]).unwrap();
            let msg = err_text(read_state_dict(&cut));
            assert!(msg.contains("legacy_cut.pth"), "{msg}");
        }
        std::fs::write(&cut, &data[..data.len() - 1]).unwrap();
        assert!(err_text(read_state_dict(&cut)).contains("but the file ends at byte"));
        let _ = std::fs::remove_file(&cut);
    }

    #[test]
    fn truncated_pickle_inside_zip() {
        let src = fixture("tiny_f32.pth");
        let dst = tmp("short_pkl.pth");
        rezip(&src, &dst, |n, b| {
            Some(if n.ends_with("data.pkl") {
                b[..b.len() / 2].to_vec()
            } else {
                b
            })
        });
        let msg = err_text(read_state_dict(&dst));
        assert!(msg.contains("truncated pickle stream at byte"), "{msg}");
        let _ = std::fs::remove_file(&dst);
        // every prefix of the pickle is an error (and none panics)
        let pkl = entry_bytes(&src, "tiny_f32/data.pkl");
        for n in 0..pkl.len() {
            assert!(pickle::parse(&pkl[..n], 0).is_err(), "prefix {n}");
        }
        assert!(matches!(
            pickle::parse(&pkl[..100], 0),
            Err(PthErrorKind::Truncated(_))
        ));
    }

    #[test]
    fn storage_shorter_than_tensor_is_an_error_naming_both() {
        let dst = tmp("short_storage.pth");
        rezip(&fixture("tiny_f32.pth"), &dst, |n, b| {
            Some(if n == "tiny_f32/data/0" {
                b[..8].to_vec()
            } else {
                b
            })
        });
        let msg = err_text(read_state_dict(&dst));
        assert!(
            msg.ends_with(
                ": entry 'tiny_f32/data/0' is 8 bytes but tensor 'layer.weight' needs 48"
            ),
            "{msg}"
        );
        assert!(msg.contains("short_storage.pth"), "{msg}");
        // a missing storage entry
        rezip(&fixture("tiny_f32.pth"), &dst, |n, b| {
            (n != "tiny_f32/data/1").then_some(b)
        });
        assert!(err_text(read_pth(&dst)).contains("missing entry 'tiny_f32/data/1'"));
        let _ = std::fs::remove_file(&dst);
    }

    #[test]
    fn big_endian_and_torchscript_and_other_files_are_refused() {
        let dst = tmp("big.pth");
        rezip(&fixture("tiny_f32.pth"), &dst, |n, b| {
            Some(if n.ends_with("/byteorder") {
                b"big".to_vec()
            } else {
                b
            })
        });
        assert!(err_text(read_state_dict(&dst)).contains("byte order is 'big'"));
        // legacy: sys_info says little_endian=False
        let mut legacy = std::fs::read(fixture("tiny_legacy.pth")).unwrap();
        let at = legacy
            .windows(13)
            .position(|w| w == b"little_endian")
            .unwrap();
        let t = at + legacy[at..].iter().position(|&b| b == 0x88).unwrap();
        legacy[t] = 0x89;
        std::fs::write(&dst, &legacy).unwrap();
        assert!(err_text(read_state_dict(&dst)).contains("only little-endian"));
        let ts = tmp("ts.pt");
        // TorchScript: add constants.pkl beside data.pkl
        {
            let mut a = zip::ZipArchive::new(File::open(fixture("tiny_f32.pth")).unwrap()).unwrap();
            let mut w = zip::ZipWriter::new(File::create(&ts).unwrap());
            for i in 0..a.len() {
                w.raw_copy_file(a.by_index(i).unwrap()).unwrap();
            }
            w.start_file("tiny_f32/constants.pkl", Default::default())
                .unwrap();
            w.write_all(b"\x80\x02).").unwrap();
            w.finish().unwrap();
        }
        assert!(err_text(read_pth(&ts)).contains("TorchScript"));
        let text = tmp("text.pth");
        std::fs::write(&text, b"hello, not a checkpoint").unwrap();
        assert!(err_text(read_pth(&text)).ends_with(": not a zip archive nor a legacy torch file"));
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        std::fs::write(&text, &tar).unwrap();
        assert!(err_text(read_pth(&text)).contains("tar checkpoint format of torch < 0.4"));
        // a plain pickle is not a legacy torch file
        std::fs::write(&text, b"\x80\x02}q\x00.").unwrap();
        assert!(err_text(read_pth(&text)).ends_with("not a zip archive nor a legacy torch file"));
        assert!(err_text(read_pth(Path::new("/nonexistent/x.pth"))).contains("cannot read it"));
        for p in [dst, ts, text] {
            let _ = std::fs::remove_file(p);
        }
    }

    // ---- the unpickler on hand-made input --------------------------------------------------------

    #[test]
    fn unsupported_opcode_and_bad_lengths() {
        let e = pickle::parse(b"\x80\x02I1\n.", 0).err().unwrap();
        assert_eq!(e.to_string(), "unsupported pickle opcode 0x49 at byte 2");
        // lengths far beyond the input are truncation errors, not allocations
        for p in [
            &b"\x80\x02X\xff\xff\xff\x7fab."[..],
            b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xffab.",
            b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff.",
            b"\x80\x02\x8b\xff\xff\xff\x7f.",
        ] {
            assert!(
                matches!(pickle::parse(p, 0), Err(PthErrorKind::Truncated(2))),
                "{p:?}"
            );
        }
        assert!(matches!(
            pickle::parse(b"\x80\x02h\x05.", 0),
            Err(PthErrorKind::BadPickle { .. })
        ));
        assert!(matches!(
            pickle::parse(b"\x80\x02(.", 0),
            Err(PthErrorKind::BadPickle { .. })
        ));
        assert!(matches!(
            pickle::parse(b"\x80\x02K\x01K\x02s.", 0),
            Err(PthErrorKind::BadPickle { .. })
        ));
        // protocol 4 STACK_GLOBAL of a forbidden name, never reached REDUCE
        let e = pickle::parse(b"\x80\x04\x8c\x02os\x8c\x06system\x93.", 0)
            .err()
            .unwrap();
        assert!(e.to_string().contains("'os.system'"));
        let e = pickle::parse(b"\x80\x02ctorch\nComplexFloatStorage\n.", 0)
            .err()
            .unwrap();
        assert!(e.to_string().contains("'torch.ComplexFloatStorage'"));
    }

    #[test]
    fn scalars_dicts_and_protocol5_opcodes() {
        // protocol 5: FRAME, MEMOIZE, SHORT_BINUNICODE, short bytes, sets, duplicate dict keys
        let v = load_pickle(
            b"\x80\x05\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94(K\x01J\xfe\xff\xff\xff\
              \x8a\x02\x00\x80e\x8c\x01bC\x02\xff\x00\x8c\x01c\x8f\x94(K\x01\x90G?\xf8\x00\x00\x00\x00\x00\x00N\
              h\x01\x88u.",
        )
        .unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![
                (Value::Str("a".into()), Value::Bool(true)), // replaced in place, order kept
                (Value::Str("b".into()), Value::Bytes(vec![0xff, 0])),
                (Value::Str("c".into()), Value::List(vec![Value::Int(1)])),
                (Value::Float(1.5), Value::None),
            ])
        );
        let v2 = load_pickle(b"\x80\x02]q\x00(K\x01J\xfe\xff\xff\xff\x8a\x02\x00\x80\x8a\x01\xffN\x88\x89G?\xf8\x00\x00\x00\x00\x00\x00e.").unwrap();
        assert_eq!(
            v2,
            Value::List(vec![
                Value::Int(1),
                Value::Int(-2),
                Value::Int(-32768),
                Value::Int(-1),
                Value::None,
                Value::Bool(true),
                Value::Bool(false),
                Value::Float(1.5),
            ])
        );
        let d = load_pickle(
            b"\x80\x02}(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bK\x02X\x01\x00\x00\x00aK\x03u.",
        )
        .unwrap();
        assert_eq!(
            d,
            Value::Dict(vec![
                (Value::Str("a".into()), Value::Int(3)),
                (Value::Str("b".into()), Value::Int(2)),
            ])
        );
        // OrderedDict via REDUCE with BUILD of _metadata, and via NEWOBJ
        let od = load_pickle(b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00kK\x07s}bh\x00)\x81\x86.").unwrap();
        assert_eq!(
            od,
            Value::Tuple(vec![
                Value::Dict(vec![(Value::Str("k".into()), Value::Int(7))]),
                Value::Dict(vec![]),
            ])
        );
        let big = load_pickle(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
        assert!(matches!(big, Err(PthErrorKind::BadValue(m)) if m.contains("64 bits")));
    }

    #[test]
    fn cycles_and_shared_reference_bombs_are_bounded() {
        // l = []; l.append(l)
        let e = load_pickle(b"\x80\x02]q\x00h\x00a.").unwrap_err();
        assert!(e.to_string().contains("nested deeper than"), "{e}");
        // l0 = []; l1 = [l0, l0]; ... l60 = [l59, l59]: 2^60 nodes if expanded naively
        let mut p = b"\x80\x02]".to_vec();
        for i in 0..60u8 {
            p.extend_from_slice(&[b'q', i, b'h', i, b'\x86']);
        }
        p.push(b'.');
        let e = load_pickle(&p).unwrap_err();
        assert!(e.to_string().contains("too many values"), "{e}");
    }

    #[test]
    fn tensors_that_leave_their_storage_are_errors() {
        // _rebuild_tensor_v2(storage(F32, '0', numel 4), offset 3, (2,), (1,), False, OrderedDict())
        let pkl = |offset: u8, size: u8, stride: u8| {
            let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ".to_vec();
            p.extend_from_slice(&[b'K', offset, b'K', size, 0x85, b'K', stride, 0x85]);
            p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR.");
            p
        };
        let load = |p: &[u8], storage_bytes: usize| {
            let parsed = pickle::parse(p, 0).unwrap();
            let mut l = Loaded {
                arena: parsed.arena,
                root: parsed.root,
                src: Box::new(Zeros(vec![0; storage_bytes])),
                file_len: 1000,
            };
            l.value_tree()
        };
        assert!(matches!(load(&pkl(2, 2, 1), 16), Ok(Value::Tensor(t)) if t.shape == [2]));
        let e = load(&pkl(3, 2, 1), 16).unwrap_err();
        assert_eq!(
            e.to_string(),
            "entry 'zeros/0' is 16 bytes but tensor '<top level>' needs 20"
        );
        assert!(load(&pkl(0, 3, 2), 16).is_err());
        assert!(load(&pkl(0, 3, 2), 20).is_ok());
        // expanded (stride 0) views count against the element budget
        assert!(load(&pkl(0, 200, 0), 16).is_ok());
    }

    #[test]
    fn mutated_pickles_never_panic() {
        let pkl = entry_bytes(&fixture("tiny_f32.pth"), "tiny_f32/data.pkl");
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for i in 0..pkl.len() {
            for v in [0u8, 0xff, b'X', b'h', b'R', b'(', b'.', b't', 0x8a] {
                let mut m = pkl.clone();
                m[i] = v;
                let _ = load_pickle(&m);
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut m = pkl.clone();
            m[(seed as usize) % pkl.len()] ^= (seed >> 32) as u8;
            m[i] = (seed >> 40) as u8;
            let _ = load_pickle(&m);
        }
    }

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8400), -(2f32.powi(-14)));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    }

    // ---- f64 -> f32 conversion -------------------------------------------------------------------

    #[test]
    fn convert_fixture_to_f32() {
        let dst = tmp("tiny_converted.pth");
        convert_f64_checkpoint_to_f32(&fixture("tiny_f32.pth"), &dst).unwrap();
        let sd = read_state_dict(&dst).unwrap();
        let orig = read_state_dict(&fixture("tiny_f32.pth")).unwrap();
        assert_eq!(sd.len(), orig.len());
        for ((k, t), (k0, t0)) in sd.iter().zip(&orig) {
            assert_eq!(k, k0);
            assert_eq!(t.data, t0.data, "{k}"); // f32 values: the f64 ones rounded
            let want = if t0.dtype == StoredDType::F64 {
                StoredDType::F32
            } else {
                t0.dtype
            };
            assert_eq!(t.dtype, want, "{k}");
        }
        // torch names the root folder after the file, without its last extension
        let root = dst.file_stem().unwrap().to_str().unwrap();
        let pkl = entry_bytes(&dst, &format!("{root}/data.pkl"));
        assert!(pkl.windows(12).any(|w| w == b"FloatStorage"));
        assert!(!pkl.windows(13).any(|w| w == b"DoubleStorage"));
        let _ = std::fs::remove_file(&dst);
        // a legacy file is not converted
        assert!(
            err_text(convert_f64_checkpoint_to_f32(
                &fixture("tiny_legacy.pth"),
                &dst
            ))
            .contains("tiny_legacy.pth")
        );
        assert!(!dst.exists());
    }

    // ---- the real CACE-Net checkpoint ------------------------------------------------------------

    #[test]
    fn golden_checkpoint_keys_shapes_and_raw_values() {
        let Some(dir) = golden_dir() else { return };
        let path = dir.join("cace_init.pth.tar");
        let sd = read_state_dict_f64(&path).unwrap();
        let keys = parse_json(&std::fs::read_to_string(dir.join("grad_norm_keys.json")).unwrap());
        let keys: Vec<&str> = keys.arr().iter().map(|j| j.str()).collect();
        assert_eq!(sd.len(), 242);
        assert_eq!(sd.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), keys);
        assert!(
            sd.iter()
                .all(|(k, t)| k.starts_with("module.") && t.dtype == StoredDType::F64)
        );
        assert_eq!(sd.iter().map(|(_, t)| t.numel()).sum::<usize>(), 13_118_681);
        let shape = |k: &str| sd.iter().find(|(n, _)| n == k).unwrap().1.shape.clone();
        assert_eq!(shape("module.v_fc.weight"), vec![512, 512]);
        assert_eq!(
            shape("module.audio_visual_rnn_layer.visual_rnn.weight_ih_l0"),
            vec![1024, 512]
        );
        // the raw bytes of the first and last storages, read independently
        for (entry, t) in [
            ("cace_init.pth/data/0", &sd[0].1),
            ("cace_init.pth/data/241", &sd[241].1),
        ] {
            let raw = entry_bytes(&path, entry);
            assert_eq!(raw.len(), t.numel() * 8);
            let f = |i: usize| f64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap());
            let n = t.numel();
            assert_eq!(t.data[0], f(0));
            assert_eq!(t.data[n - 1], f(n - 1));
            assert_eq!(t.data[n / 3], f(n / 3));
            assert!(t.data[0] != 0.0 || t.data[n - 1] != 0.0);
        }
        // the f32 reader gives the same values rounded
        let sd32 = read_state_dict(&path).unwrap();
        for ((k, a), (_, b)) in sd32.iter().zip(&sd) {
            assert_eq!(a.shape, b.shape, "{k}");
            assert!(
                a.data
                    .iter()
                    .zip(&b.data)
                    .all(|(x, y)| x.to_bits() == (*y as f32).to_bits()),
                "{k}"
            );
        }
    }

    #[test]
    fn golden_checkpoint_converts_to_f32() {
        let Some(dir) = golden_dir() else { return };
        let src = dir.join("cace_init.pth.tar");
        let dst = tmp("cace_init_f32.pth");
        convert_f64_checkpoint_to_f32(&src, &dst).unwrap();
        let got = read_state_dict(&dst).unwrap();
        let want = read_state_dict_f64(&src).unwrap();
        assert_eq!(got.len(), 242);
        for ((k, a), (k0, b)) in got.iter().zip(&want) {
            assert_eq!(k, k0);
            assert_eq!(a.dtype, StoredDType::F32, "{k}");
            assert_eq!(a.shape, b.shape, "{k}");
            assert!(
                a.data
                    .iter()
                    .zip(&b.data)
                    .all(|(x, y)| x.to_bits() == (*y as f32).to_bits()),
                "{k}"
            );
        }
        // storages 64-byte aligned, uncompressed, half the size
        let mut a = zip::ZipArchive::new(File::open(&dst).unwrap()).unwrap();
        let mut n_data = 0;
        for i in 0..a.len() {
            let e = a.by_index(i).unwrap();
            assert_eq!(e.compression(), zip::CompressionMethod::Stored);
            let root = dst.file_stem().unwrap().to_str().unwrap();
            assert!(e.name().starts_with(&format!("{root}/")), "{}", e.name());
            if e.name().contains("/data/") {
                n_data += 1;
                assert_eq!(e.data_start() % 64, 0, "{}", e.name());
            }
        }
        assert_eq!(n_data, 242);
        let (s0, s1) = (
            std::fs::metadata(&src).unwrap().len(),
            std::fs::metadata(&dst).unwrap().len(),
        );
        assert!(s1 < s0 / 2 + 200_000, "{s1} vs {s0}");
        let _ = std::fs::remove_file(&dst);
    }
}
