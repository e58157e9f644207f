//! Invalid directories and writer arguments: every error message names the offending file.
#[path = "data_common/mod.rs"]
mod common;

use std::path::Path;

use cace_net::data::ave::*;
use common::{labels, put, temp_dir, values};

const N: usize = 7;

/// A valid N=7 directory: visual [7,10,7,7,512] f64, audio [7,10,128] f64, labels, 3 orders.
fn valid(tag: &str) -> tempfile::TempDir {
    let tmp = temp_dir(tag);
    let vis = values(N * 10 * 49 * 512, 1, false);
    let aud = values(N * 10 * 128, 2, false);
    let orders = [
        (Split::Train, vec![0, 1, 2, 3]),
        (Split::Val, vec![4]),
        (Split::Test, vec![5, 6]),
    ];
    write_features(
        tmp.path(),
        &vis,
        &[N, 10, 7, 7, 512],
        &aud,
        &[N, 10, 128],
        Some(&labels(N)),
        &orders,
        FeatureDType::F64,
    )
    .unwrap();
    AveDir::open(tmp.path()).unwrap();
    tmp
}

fn open_err(dir: &Path) -> String {
    let e = AveDir::open(dir).expect_err("open should fail");
    let msg = e.to_string();
    eprintln!("{msg}");
    msg
}

#[track_caller]
fn assert_names(msg: &str, file: &Path, needle: &str) {
    assert!(
        msg.contains(&file.display().to_string()),
        "message does not name {}: {msg}",
        file.display()
    );
    assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
}

#[test]
fn missing_files() {
    let tmp = valid("missing");
    let d = tmp.path();
    std::fs::remove_file(d.join("audio_feature.h5")).unwrap();
    let msg = open_err(d);
    assert_names(&msg, &d.join("audio_feature.h5"), "missing: audio features");
    std::fs::remove_file(d.join("visual_feature.h5")).unwrap();
    assert_names(
        &open_err(d),
        &d.join("visual_feature.h5"),
        "missing: visual features",
    );
    let nodir = d.join("nope");
    assert_names(&open_err(&nodir), &nodir, "missing: AVE data directory");
}

#[test]
fn wrong_key() {
    let tmp = valid("key");
    let p = tmp.path().join("visual_feature.h5");
    put(&p, "features", &[N, 10, 4], &vec![0.0f64; N * 40]);
    assert_names(
        &open_err(tmp.path()),
        &p,
        "no dataset 'avadataset' (file contains [\"features\"])",
    );
    let o = tmp.path().join("val_order.h5");
    put(
        &tmp.path().join("visual_feature.h5"),
        "avadataset",
        &[N, 10, 4],
        &vec![0.0f64; N * 40],
    );
    put(&o, "avadataset", &[1], &[1i64]);
    assert_names(&open_err(tmp.path()), &o, "no dataset 'order'");
}

#[test]
fn mismatched_rows_and_bad_shapes() {
    let tmp = valid("rows");
    let d = tmp.path();
    put(
        &d.join("audio_feature.h5"),
        "avadataset",
        &[4, 10, 128],
        &vec![0.0f32; 4 * 1280],
    );
    let msg = open_err(d);
    assert_eq!(
        msg,
        format!(
            "{}: dataset 'avadataset' has shape [7,10,7,7,512] but audio_feature.h5 has 4 rows",
            d.join("visual_feature.h5").display()
        )
    );
    put(
        &d.join("audio_feature.h5"),
        "avadataset",
        &[N, 9, 128],
        &vec![0.0f32; N * 9 * 128],
    );
    assert_names(
        &open_err(d),
        &d.join("audio_feature.h5"),
        "has shape [7,9,128]; expected [N,10,C]",
    );
    put(
        &d.join("audio_feature.h5"),
        "avadataset",
        &[N, 10, 128],
        &vec![0.0f32; N * 1280],
    );
    put(
        &d.join("labels.h5"),
        "avadataset",
        &[N, 10, 28],
        &vec![0.0f32; N * 280],
    );
    assert_names(
        &open_err(d),
        &d.join("labels.h5"),
        "has shape [7,10,28] but the features have 7 rows",
    );
    std::fs::remove_file(d.join("labels.h5")).unwrap();
    std::fs::write(d.join("Annotations.txt"), "Bark&a&good&0&1\n").unwrap();
    assert_names(
        &open_err(d),
        &d.join("Annotations.txt"),
        "has 1 annotation lines but the features have 7 rows",
    );
    std::fs::write(
        d.join("Annotations.txt"),
        "Bark&a&good&0&1\nWolf&b&good&0&1\n",
    )
    .unwrap();
    assert_names(
        &open_err(d),
        &d.join("Annotations.txt"),
        "line 2: unknown category \"Wolf\"",
    );
}

#[test]
fn order_out_of_range_duplicate_and_type() {
    let tmp = valid("order");
    let p = tmp.path().join("test_order.h5");
    put(&p, "order", &[2], &[0i64, 7]);
    assert_eq!(
        open_err(tmp.path()),
        format!("{}: index 7 out of range (N = 7)", p.display())
    );
    put(&p, "order", &[2], &[0i64, -3]);
    assert_names(&open_err(tmp.path()), &p, "index -3 out of range (N = 7)");
    put(&p, "order", &[3], &[4i32, 2, 4]);
    assert_names(
        &open_err(tmp.path()),
        &p,
        "duplicate index 4 (at positions 0 and 2)",
    );
    put(&p, "order", &[2], &[1.0f64, 2.0]);
    assert_names(
        &open_err(tmp.path()),
        &p,
        "has dtype float64; expected an integer type",
    );
    put(&p, "order", &[1, 2], &[1u32, 2]);
    assert_names(
        &open_err(tmp.path()),
        &p,
        "has shape [1,2]; expected one dimension",
    );
    put(&p, "order", &[2], &[1u32, 2]); // unsigned is accepted
    assert_eq!(
        AveDir::open(tmp.path())
            .unwrap()
            .order(Split::Test)
            .unwrap(),
        [1, 2]
    );
}

#[test]
fn labels_not_onehot() {
    let tmp = valid("onehot");
    let p = tmp.path().join("labels.h5");
    let mut l = labels(N);
    l[(4 * 10 + 6) * 29 + 3] = 1.0; // row 4, segment 6: two ones
    put(&p, "avadataset", &[N, 10, 29], &l);
    assert_names(
        &open_err(tmp.path()),
        &p,
        "labels of row 4, segment 6 are not one-hot: 2 entries are 1",
    );
    let mut l = labels(N);
    l[5] = 0.5;
    put(&p, "avadataset", &[N, 10, 29], &l);
    assert_names(
        &open_err(tmp.path()),
        &p,
        "labels of row 0, segment 0 are not one-hot: entry 5 is 0.5",
    );
    // Integer and float64 labels are accepted.
    let l64: Vec<f64> = labels(N).iter().map(|&x| x as f64).collect();
    put(&p, "avadataset", &[N, 10, 29], &l64);
    AveDir::open(tmp.path()).unwrap();
    let li: Vec<u8> = labels(N).iter().map(|&x| x as u8).collect();
    put(&p, "avadataset", &[N, 10, 29], &li);
    AveDir::open(tmp.path()).unwrap();
}

#[test]
fn nan_and_inf_features() {
    let tmp = valid("nan");
    let d = tmp.path();
    let vp = d.join("visual_feature.h5");
    let mut vis = values(N * 10 * 49 * 512, 5, true);
    vis[3 * 250880 + 1000] = f64::NAN;
    put(&vp, "avadataset", &[N, 10, 7, 7, 512], &vis);
    let ap = d.join("audio_feature.h5");
    let mut aud = vec![0.5f32; N * 1280];
    aud[6 * 1280 + 7] = f32::INFINITY;
    put(&ap, "avadataset", &[N, 10, 128], &aud);
    let dir = AveDir::open(d).unwrap(); // values are checked on read
    let mut out = vec![1.0];
    let msg = dir
        .read_visual(&[1, 2, 3, 4], &mut out)
        .unwrap_err()
        .to_string();
    assert_names(
        &msg,
        &vp,
        "non-finite value NaN in row 3 (element 1000 of the row)",
    );
    assert_eq!(out, [1.0], "output untouched on error");
    dir.read_visual(&[0, 1, 2, 4, 5, 6], &mut out).unwrap();
    let msg = dir.read_audio(&[0, 6], &mut out).unwrap_err().to_string();
    assert_names(
        &msg,
        &ap,
        "non-finite value inf in row 6 (element 7 of the row)",
    );
    // float64 beyond the float32 range is rejected too.
    let mut aud = vec![0.5f64; N * 1280];
    aud[2 * 1280] = -1e300;
    put(&ap, "avadataset", &[N, 10, 128], &aud);
    let dir = AveDir::open(d).unwrap();
    let msg = dir
        .read_audio(&[2], &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert_names(&msg, &ap, "exceeds the float32 range");
    // Row out of range.
    let msg = dir
        .read_audio(&[7], &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert_names(&msg, &ap, "row 7 out of range (N = 7)");
    let msg = dir
        .read_labels(&[0, 9], &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert_names(&msg, &d.join("labels.h5"), "row 9 out of range (N = 7)");
}

#[test]
fn truncated_hdf5_file() {
    let tmp = valid("trunc");
    let p = tmp.path().join("visual_feature.h5");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    assert_names(
        &open_err(tmp.path()),
        &p,
        "not a readable HDF5 file (truncated?)",
    );
    std::fs::write(&p, b"this is not hdf5").unwrap();
    assert_names(&open_err(tmp.path()), &p, "not a readable HDF5 file");
}

#[test]
fn int_typed_features() {
    let tmp = valid("int");
    let p = tmp.path().join("audio_feature.h5");
    put(&p, "avadataset", &[N, 10, 128], &vec![1i32; N * 1280]);
    assert_names(
        &open_err(tmp.path()),
        &p,
        "dataset 'avadataset' has dtype int32; expected float32 or float64",
    );
    let p = tmp.path().join("visual_feature.h5");
    put(
        &p,
        "avadataset",
        &[N, 10, 7, 7, 512],
        &vec![1u8; N * 250880],
    );
    assert_names(
        &open_err(tmp.path()),
        &p,
        "has dtype uint8; expected float32 or float64",
    );
}

#[test]
fn writer_rejects_bad_arguments_before_writing() {
    let tmp = temp_dir("writer");
    let d = tmp.path().join("out");
    let v = vec![0.0f32; N * 30];
    let a = vec![0.0f32; N * 20];
    let try_write = |v: &[f32], vs: &[usize], l: Option<&[f32]>, o: &[(Split, Vec<usize>)]| {
        write_features(&d, v, vs, &a[..], &[N, 10, 2], l, o, FeatureDType::F64)
            .unwrap_err()
            .to_string()
    };
    assert_names(
        &try_write(&v[1..], &[N, 10, 3], None, &[]),
        &d.join("visual_feature.h5"),
        "209 values given for shape [7,10,3]",
    );
    assert_names(
        &try_write(&v, &[N, 10, 6, 7, 3], None, &[]),
        &d.join("visual_feature.h5"),
        "has shape [7,10,6,7,3]",
    );
    assert_names(
        &try_write(&v, &[N - 1, 10, 3], None, &[]),
        &d.join("visual_feature.h5"),
        "but audio_feature.h5 has 7 rows",
    );
    let mut nan = v.clone();
    nan[2 * 30 + 4] = f32::NAN;
    assert_names(
        &try_write(&nan, &[N, 10, 3], None, &[]),
        &d.join("visual_feature.h5"),
        "non-finite value NaN in row 2 (element 4",
    );
    let mut l = labels(N);
    l[0] = 1.0;
    l[28] = 1.0;
    assert_names(
        &try_write(&v, &[N, 10, 3], Some(&l), &[]),
        &d.join("labels.h5"),
        "row 0, segment 0 are not one-hot",
    );
    assert_names(
        &try_write(&v, &[N, 10, 3], Some(&l[1..]), &[]),
        &d.join("labels.h5"),
        "2029 label values given",
    );
    assert_names(
        &try_write(&v, &[N, 10, 3], None, &[(Split::Val, vec![7])]),
        &d.join("val_order.h5"),
        "index 7 out of range (N = 7)",
    );
    assert_names(
        &try_write(&v, &[N, 10, 3], None, &[(Split::Val, vec![1, 1])]),
        &d.join("val_order.h5"),
        "duplicate index 1",
    );
    assert_names(
        &try_write(
            &v,
            &[N, 10, 3],
            None,
            &[(Split::Val, vec![1]), (Split::Val, vec![2])],
        ),
        &d.join("val_order.h5"),
        "given twice",
    );
    assert!(!d.exists(), "nothing may be written when validation fails");
    // f64 input too large for float32 storage.
    let big = vec![1e39f64; N * 30];
    let e = write_features(
        &d,
        &big,
        &[N, 10, 3],
        &a,
        &[N, 10, 2],
        None,
        &[],
        FeatureDType::F32,
    )
    .unwrap_err()
    .to_string();
    assert_names(&e, &d.join("visual_feature.h5"), "out-of-float32-range");
    assert!(!d.exists());
}

/// A directory like the h5py fixture `contiguous_f32` (N = 6) with `name` replaced by the
/// fuzz-found file `fixture` (tests/fixtures/fuzz/).
fn h5py_dir_with(tag: &str, name: &str, fixture: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tmp = temp_dir(tag);
    for entry in std::fs::read_dir(fixtures.join("h5py/contiguous_f32")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let p = tmp.path().join(name);
    std::fs::copy(fixtures.join("fuzz").join(fixture), &p).unwrap();
    (tmp, p)
}

/// Found by `cargo fuzz` (target h5): a visual file of 1 KB whose header declares
/// `[6,10,7,7,2^39]` float32 passed validation, and reading its rows asked for 25 TB. A
/// dataset declaring more data than its file can hold is now refused when opened.
#[test]
fn declared_size_beyond_the_file_is_refused() {
    let (tmp, p) = h5py_dir_with(
        "fuzz-25tb",
        "visual_feature.h5",
        "h5-visual-declares-25tb.h5",
    );
    assert_names(
        &open_err(tmp.path()),
        &p,
        "more than a 1165-byte file can hold",
    );
}

/// Found by `cargo fuzz` (target h5): a labels file whose last dimension is 2^64 - 227; its
/// element count overflowed `usize`. `Dataset::open` now refuses it.
#[test]
fn shape_whose_size_overflows_is_refused() {
    let (tmp, p) = h5py_dir_with("fuzz-overflow", "labels.h5", "h5-labels-shape-overflows.h5");
    let err = cace_net::data::h5::Dataset::open(&p, "avadataset", "labels")
        .err()
        .expect("open should fail")
        .to_string();
    assert_names(&err, &p, "more than 2^64 bytes");
    assert_names(&open_err(tmp.path()), &p, "more than 2^64 bytes");
}

/// Found by `cargo fuzz` (target h5): a 1.7 KB visual file whose gzip chunks each declare
/// 2.3 GB; reading one row allocated a whole chunk before decompressing it. Chunks larger than
/// the file can hold are now refused when the file is opened.
#[test]
fn chunk_size_beyond_the_file_is_refused() {
    let (tmp, p) = h5py_dir_with("fuzz-chunk", "visual_feature.h5", "h5-visual-chunk-2gb.h5");
    assert_names(&open_err(tmp.path()), &p, "declares chunks of shape");
}
