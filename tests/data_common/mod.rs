//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A fresh directory under the system temp dir (named after `tag`), removed on drop.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("cace-test-{tag}-"))
        .tempdir()
        .unwrap()
}

/// `shared/data/ave` (env `CACE_SHARED_DIR`, default `<CARGO_MANIFEST_DIR>/../shared`), or
/// `None` (with a note on stderr) when it is absent.
pub fn shared_ave_dir() -> Option<PathBuf> {
    let shared = std::env::var_os("CACE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let d = shared.join("data/ave");
    if d.join("labels_closs.h5").exists() {
        Some(d)
    } else {
        eprintln!("skipping: {} not found (set CACE_SHARED_DIR)", d.display());
        None
    }
}

/// Writes (replacing) an HDF5 file holding one dataset, bypassing the crate's writer checks.
pub fn put<T: rust_hdf5::H5Type>(path: &Path, key: &str, shape: &[usize], data: &[T]) {
    let _ = std::fs::remove_file(path);
    let f = rust_hdf5::H5File::create(path).unwrap();
    let ds = f.new_dataset::<T>().shape(shape).create(key).unwrap();
    ds.write_raw(data).unwrap();
    drop(ds);
    f.close().unwrap();
}

/// Deterministic pseudo-random values (no rand dependency), exactly representable as f32
/// when `exact_f32`, otherwise with f64-only low bits.
pub fn values(n: usize, seed: u64, exact_f32: bool) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let x = (s >> 11) as f64 / (1u64 << 53) as f64 * 8.0 - 2.0;
            if exact_f32 { x as f32 as f64 } else { x }
        })
        .collect()
}

/// One-hot `[n,10,29]` labels: row i has class i % 28 on segments i%10 ..= 9.
pub fn labels(n: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; n * 10 * 29];
    for i in 0..n {
        for t in 0..10 {
            let c = if t >= i % 10 { i % 28 } else { 28 };
            v[(i * 10 + t) * 29 + c] = 1.0;
        }
    }
    v
}
