//! Writes state dicts as `torch.save` does (the zip format of PyTorch ≥ 1.6), so that
//! `torch.load(path, weights_only=True)` and `model.load_state_dict` in Python read what `cace`
//! trains (the fine-tuned encoders of `cace finetune`).
//!
//! Written here because no crate writes this format without libtorch (`pytorch-reader`, which
//! reads it, has no writer; `tch` needs libtorch). The format is small: a stored (uncompressed)
//! zip holding `archive/data.pkl`, a protocol-2 pickle of an `OrderedDict` whose values are
//! `torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, requires_grad, hooks)` with
//! each storage a persistent id `("storage", torch.FloatStorage, "<n>", "cpu", numel)`, the
//! storages' raw little-endian bytes as `archive/data/<n>`, and `archive/byteorder` and
//! `archive/version`. Only the globals `weights_only` allows are named.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// The values of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorValues {
    F32(Vec<f32>),
    /// `int64` (e.g. BatchNorm's `num_batches_tracked`, a 0-d tensor).
    I64(Vec<i64>),
}

/// A tensor to save: PyTorch shape (`[]` for a scalar) and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveTensor {
    pub shape: Vec<usize>,
    pub values: TensorValues,
}

/// Saves `entries` as a state dict (`OrderedDict`), or, with `wrap = Some(key)`, as
/// `{key: state_dict}` (the official fine-tuning's `{"I_state_dict": ...}`). Atomic.
pub fn save(path: &Path, entries: &[(String, SaveTensor)], wrap: Option<&str>) -> Result<()> {
    let bytes = to_bytes(entries, wrap).with_context(|| format!("encoding {}", path.display()))?;
    crate::fsutil::write_file(path, &bytes)
}

/// The file's bytes.
pub fn to_bytes(entries: &[(String, SaveTensor)], wrap: Option<&str>) -> Result<Vec<u8>> {
    use zip::write::SimpleFileOptions;
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true)
        .with_alignment(64);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    // The reader takes the archive's folder name from its first entry: data.pkl comes first.
    zip.start_file("archive/data.pkl", options)?;
    zip.write_all(&pickle(entries, wrap))?;
    zip.start_file("archive/byteorder", options)?;
    zip.write_all(b"little")?;
    for (i, (_, t)) in entries.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), options)?;
        match &t.values {
            TensorValues::F32(v) => v.iter().try_for_each(|x| zip.write_all(&x.to_le_bytes()))?,
            TensorValues::I64(v) => v.iter().try_for_each(|x| zip.write_all(&x.to_le_bytes()))?,
        }
    }
    zip.start_file("archive/version", options)?;
    zip.write_all(b"3\n")?;
    Ok(zip.finish()?.into_inner())
}

/// The protocol-2 pickle of the (wrapped) `OrderedDict`.
fn pickle(entries: &[(String, SaveTensor)], wrap: Option<&str>) -> Vec<u8> {
    let mut p = Pickler(vec![0x80, 2]); // PROTO 2
    if let Some(key) = wrap {
        p.op(b'}'); // EMPTY_DICT
        p.string(key);
    }
    p.ordered_dict();
    if !entries.is_empty() {
        p.op(b'('); // MARK
        for (i, (key, t)) in entries.iter().enumerate() {
            p.string(key);
            p.tensor(i, t);
        }
        p.op(b'u'); // SETITEMS
    }
    if wrap.is_some() {
        p.op(b's'); // SETITEM
    }
    p.op(b'.'); // STOP
    p.0
}

struct Pickler(Vec<u8>);

impl Pickler {
    fn op(&mut self, code: u8) {
        self.0.push(code);
    }

    /// GLOBAL `module.name`.
    fn global(&mut self, module: &str, name: &str) {
        self.op(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    /// BINUNICODE.
    fn string(&mut self, s: &str) {
        self.op(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A non-negative integer: BININT1, BININT2, BININT, or LONG1 beyond `i32::MAX`.
    fn int(&mut self, v: usize) {
        if v < 256 {
            self.0.extend_from_slice(&[b'K', v as u8]);
        } else if v < 65536 {
            self.op(b'M');
            self.0.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= i32::MAX as usize {
            self.op(b'J');
            self.0.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // Eight little-endian bytes with a clear top bit (v < 2^63): non-negative.
            self.0.extend_from_slice(&[0x8a, 8]);
            self.0.extend_from_slice(&(v as u64).to_le_bytes());
        }
    }

    fn tuple(&mut self, values: &[usize]) {
        if values.is_empty() {
            self.op(b')'); // EMPTY_TUPLE
            return;
        }
        self.op(b'(');
        values.iter().for_each(|&v| self.int(v));
        self.op(b't'); // TUPLE
    }

    /// `collections.OrderedDict()`.
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R'); // REDUCE
    }

    /// `_rebuild_tensor_v2(storage <n>, 0, shape, contiguous stride, False, OrderedDict())`.
    fn tensor(&mut self, n: usize, t: &SaveTensor) {
        let (storage, numel) = match &t.values {
            TensorValues::F32(v) => ("FloatStorage", v.len()),
            TensorValues::I64(v) => ("LongStorage", v.len()),
        };
        let mut stride = vec![1; t.shape.len()];
        for d in (0..t.shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * t.shape[d + 1];
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.op(b'(');
        self.op(b'(');
        self.string("storage");
        self.global("torch", storage);
        self.string(&n.to_string());
        self.string("cpu");
        self.int(numel);
        self.op(b't');
        self.op(b'Q'); // BINPERSID
        self.int(0);
        self.tuple(&t.shape);
        self.tuple(&stride);
        self.op(0x89); // NEWFALSE: requires_grad
        self.ordered_dict(); // backward hooks
        self.op(b't');
        self.op(b'R');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::pth::read_state_dict;

    #[test]
    fn round_trips_through_the_pth_reader() {
        let dir = std::env::temp_dir().join(format!("cace-torch-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big: Vec<f32> = (0..70_000).map(|i| i as f32 * 0.5 - 3.0).collect();
        let entries = vec![
            (
                "conv1.weight".to_string(),
                SaveTensor {
                    shape: vec![2, 1, 3, 3],
                    values: TensorValues::F32((0..18).map(|i| i as f32 / 7.0).collect()),
                },
            ),
            (
                "bn1.num_batches_tracked".to_string(),
                SaveTensor {
                    shape: vec![],
                    values: TensorValues::I64(vec![300]),
                },
            ),
            (
                "fc.big".to_string(),
                SaveTensor {
                    shape: vec![70_000],
                    values: TensorValues::F32(big.clone()),
                },
            ),
        ];
        for wrap in [None, Some("I_state_dict")] {
            let path = dir.join(format!("{wrap:?}.pth"));
            save(&path, &entries, wrap).unwrap();
            let mut read: Vec<_> = read_state_dict(&path).unwrap();
            read.sort_by(|a, b| a.0.cmp(&b.0));
            let keys: Vec<&str> = read.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, ["bn1.num_batches_tracked", "conv1.weight", "fc.big"]);
            assert_eq!(read[0].1.shape, Vec::<usize>::new());
            assert_eq!(read[0].1.data, vec![300.0]);
            assert_eq!(read[1].1.shape, vec![2, 1, 3, 3]);
            assert_eq!(read[1].1.data[17], 17.0 / 7.0);
            assert_eq!(read[2].1.data, big);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
