//! HDF5 files through `data::h5` and the AVE-layout validation of `data::ave`, as `cace train`
//! and `cace eval` read a data directory.
//!
//! Input: one role byte, then the file. The role (byte % 4) says which file of an AVE directory
//! the bytes replace: 0 `visual_feature.h5`, 1 `audio_feature.h5`, 2 `labels.h5`,
//! 3 `train_order.h5`; the other files are a valid small directory (the h5py fixture
//! `tests/fixtures/h5py/contiguous_f32`, copied once per process). The directory is opened and
//! validated, and every row of it read; then the file is read on its own through `h5::Dataset`.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cace_net::data::ave::{
    AUDIO_FILE, AveDir, FEATURE_KEY, LABELS_FILE, ORDER_KEY, Split, VISUAL_FILE,
};
use cace_net::data::h5::{Dataset, StoredType};
use cace_net_fuzz::{assert_names, debug, put, scratch_dir};
use libfuzzer_sys::fuzz_target;

const ROLES: [(&str, &str); 4] = [
    (VISUAL_FILE, FEATURE_KEY),
    (AUDIO_FILE, FEATURE_KEY),
    (LABELS_FILE, FEATURE_KEY),
    ("train_order.h5", ORDER_KEY),
];

/// Fixture files (name, bytes) of the base directory.
fn base_files() -> &'static [(String, Vec<u8>)] {
    static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/h5py/contiguous_f32");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("the h5py fixture directory") {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            files.push((name, std::fs::read(entry.path()).unwrap()));
        }
        files
    })
}

/// A directory per role holding the base files, the role's file about to be replaced.
fn role_dir(role: usize) -> PathBuf {
    let dir = scratch_dir("h5").join(format!("role{role}"));
    if !dir.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in base_files() {
            put(&dir.join(name), bytes);
        }
    }
    dir
}

fuzz_target!(|data: &[u8]| {
    let Some((&role, file)) = data.split_first() else {
        return;
    };
    let role = role as usize % ROLES.len();
    let (name, key) = ROLES[role];
    let dir = role_dir(role);
    let path = dir.join(name);
    put(&path, file);
    read_dir(&dir, &path);
    read_file(&path, key);
});

/// Opens the directory (all validation) and reads every row of every split and of the features.
fn read_dir(dir: &Path, path: &Path) {
    let ave = AveDir::open(dir);
    debug("directory", &ave);
    let ave = match ave {
        Ok(ave) => ave,
        Err(e) => return assert_names(&e, path),
    };
    let n = ave.num_rows();
    let all: Vec<usize> = (0..n).collect();
    let mut out = Vec::new();
    for split in Split::ALL {
        if let Ok(rows) = ave.order(split) {
            assert!(rows.iter().all(|&r| r < n));
        }
    }
    if let Err(e) = ave.read_visual(&all, &mut out) {
        assert_names(&e, path);
    }
    if let Err(e) = ave.read_audio(&all, &mut out) {
        assert_names(&e, path);
    }
    ave.read_labels(&all, &mut out)
        .expect("labels validated at open");
}

/// The file alone: every value read as the stored type allows, as `data::ave` would.
fn read_file(path: &Path, key: &str) {
    let ds = Dataset::open(path, key, "fuzz input");
    debug("dataset", &ds);
    let ds = match ds {
        Ok(ds) => ds,
        Err(e) => return assert_names(&e, path),
    };
    // `Dataset::open` guarantees the element count fits (a found crash overflowed it here).
    let numel: usize = ds.shape.iter().product();
    let result = match ds.stored {
        StoredType::Float(_) => ds.read_all_f64().map(|v| assert_eq!(v.len(), numel)),
        StoredType::Int { .. } => ds.read_all_int().map(|v| assert_eq!(v.len(), numel)),
        StoredType::Other => Ok(()),
    };
    if let Err(e) = result {
        assert_names(&e, path);
    }
    // First two rows by hyperslab, as features are read (only for arrays, as `data::ave` does).
    if ds.shape.is_empty() {
        return;
    }
    let count = ds.shape[0].min(2);
    let rows = match ds.stored {
        StoredType::Float(4) => ds.read_rows::<f32>(0, count).map(|v| v.len()),
        StoredType::Float(8) => ds.read_rows::<f64>(0, count).map(|v| v.len()),
        _ => return,
    };
    match rows {
        Ok(len) => assert_eq!(len, count * ds.shape[1..].iter().product::<usize>()),
        Err(e) => assert_names(&e, path),
    }
}
