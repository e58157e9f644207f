//! Access to `../shared/golden` (or `$CACE_GOLDEN_DIR`): the official implementation's
//! weights, inputs, activations, losses, gradients and optimiser step.

use std::path::PathBuf;
use std::sync::OnceLock;

use safetensors::tensor::{Dtype, SafeTensors};

pub fn dir() -> PathBuf {
    std::env::var_os("CACE_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden"))
}

pub fn checkpoint() -> PathBuf {
    dir().join("cace_init.pth.tar")
}

pub struct Golden {
    bytes: Vec<u8>,
}

pub fn golden() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| Golden {
        bytes: std::fs::read(dir().join("cace_golden.safetensors")).expect("read golden file"),
    })
}

/// A golden tensor as f64 values with its shape.
pub struct G {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Golden {
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("parse golden safetensors")
    }

    pub fn names(&self) -> Vec<String> {
        self.st()
            .names()
            .into_iter()
            .map(|s| s.to_string())
            .collect()
    }

    pub fn get(&self, name: &str) -> G {
        let st = self.st();
        let v = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("golden tensor {name} missing"));
        let data = match v.dtype() {
            Dtype::F32 => v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            Dtype::F64 => v
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::I64 => v
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            Dtype::U8 => v.data().iter().map(|&b| b as f64).collect(),
            d => panic!("unexpected dtype {d:?}"),
        };
        G {
            shape: v.shape().to_vec(),
            data,
        }
    }

    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let g = self.get(name);
        (g.shape, g.data.iter().map(|&x| x as f32).collect())
    }

    pub fn scalar(&self, name: &str) -> f64 {
        self.get(name).data[0]
    }
}

impl G {
    /// Swaps the first two axes (sequence-first `[T, B, ...]` → batch-first `[B, T, ...]`).
    pub fn batch_first(&self) -> G {
        let (t, b) = (self.shape[0], self.shape[1]);
        let inner: usize = self.shape[2..].iter().product();
        let mut data = vec![0.0; self.data.len()];
        for ti in 0..t {
            for bi in 0..b {
                let src = (ti * b + bi) * inner;
                let dst = (bi * t + ti) * inner;
                data[dst..dst + inner].copy_from_slice(&self.data[src..src + inner]);
            }
        }
        let mut shape = self.shape.clone();
        shape.swap(0, 1);
        G { shape, data }
    }
}

/// Asserts `|a − b| ≤ atol + rtol·|b|` element-wise; reports the worst element.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f64], atol: f64, rtol: f64) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {} values, expected {}",
        actual.len(),
        expected.len()
    );
    let mut worst = (0usize, 0.0f64, 0.0f64);
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let excess = (a as f64 - e).abs() - (atol + rtol * e.abs());
        if excess > worst.1 || (i == 0 && excess > 0.0) {
            worst = (i, excess, (a as f64 - e).abs());
        }
    }
    let (i, excess, diff) = worst;
    assert!(
        excess <= 0.0,
        "{what}: element {i} is {} but golden is {} (|diff| {diff:.3e} > atol {atol:.0e} + rtol {rtol:.0e}·|golden|)",
        actual[i],
        expected[i]
    );
}

/// Every tensor of a small golden safetensors file as f32 (F32, F64, I64 and U8 converted),
/// by name, with its shape; and the file's metadata.
pub type Tensors = std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>;

pub fn read_all(path: &std::path::Path) -> (Tensors, std::collections::HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).expect("parse golden safetensors");
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    let mut tensors = Tensors::new();
    for (name, v) in st.tensors() {
        let data: Vec<f32> = match v.dtype() {
            Dtype::F32 => v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::F64 => v
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::I64 => v
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::U8 => v.data().iter().map(|&b| b as f32).collect(),
            d => panic!("{name}: unexpected dtype {d:?}"),
        };
        tensors.insert(name, (v.shape().to_vec(), data));
    }
    (tensors, meta)
}
