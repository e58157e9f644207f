//! Write small AVE-layout directories with the writer, open them, read rows back.
#[path = "data_common/mod.rs"]
mod common;

use cace_net::data::ave::*;
use common::{labels, temp_dir, values};

const N: usize = 7;
const PERM: [usize; 9] = [6, 2, 3, 4, 0, 0, 5, 1, 6];

fn rows_of(data: &[f64], row_len: usize, rows: &[usize]) -> Vec<f32> {
    rows.iter()
        .flat_map(|&r| {
            data[r * row_len..(r + 1) * row_len]
                .iter()
                .map(|&x| x as f32)
        })
        .collect()
}

fn stored_dtype(path: &std::path::Path) -> String {
    let d = cace_net::data::h5::Dataset::open(path, "avadataset", "features").unwrap();
    d.stored.to_string()
}

fn roundtrip(visual_row: &[usize], dtype: FeatureDType, f64_input: bool) {
    let tmp = temp_dir("rt");
    let vshape: Vec<usize> = std::iter::once(N)
        .chain(visual_row.iter().copied())
        .collect();
    let vlen: usize = visual_row.iter().product();
    let vis = values(N * vlen, 1, !f64_input);
    let aud = values(N * 10 * 128, 2, !f64_input);
    let lab = labels(N);
    let orders = vec![
        (Split::Train, vec![3, 1, 0, 6]),
        (Split::Val, vec![2]),
        (Split::Test, vec![5, 4]),
    ];
    if f64_input {
        write_features(
            tmp.path(),
            &vis,
            &vshape,
            &aud,
            &[N, 10, 128],
            Some(&lab),
            &orders,
            dtype,
        )
        .unwrap();
    } else {
        let v32: Vec<f32> = vis.iter().map(|&x| x as f32).collect();
        let a32: Vec<f32> = aud.iter().map(|&x| x as f32).collect();
        write_features(
            tmp.path(),
            &v32,
            &vshape,
            &a32,
            &[N, 10, 128],
            Some(&lab),
            &orders,
            dtype,
        )
        .unwrap();
    }
    // Only the layout's files, no temporaries.
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "audio_feature.h5",
            "labels.h5",
            "test_order.h5",
            "train_order.h5",
            "val_order.h5",
            "visual_feature.h5"
        ]
    );
    let want = if dtype == FeatureDType::F64 {
        "float64"
    } else {
        "float32"
    };
    assert_eq!(stored_dtype(&tmp.path().join("visual_feature.h5")), want);
    assert_eq!(stored_dtype(&tmp.path().join("audio_feature.h5")), want);

    let d = AveDir::open(tmp.path()).unwrap();
    assert_eq!(d.num_rows(), N);
    assert_eq!(d.visual_shape(), visual_row);
    assert_eq!(d.visual_dim(), *visual_row.last().unwrap());
    assert_eq!(d.audio_dim(), 128);
    assert_eq!((d.visual_dtype(), d.audio_dtype()), (dtype, dtype));
    assert!(d.has_labels());
    assert_eq!(d.label_source(), Some(LabelSource::LabelsFile));
    for (s, o) in &orders {
        assert_eq!(&d.order(*s).unwrap(), o);
    }

    let mut out = vec![42.0f32]; // read_* append
    d.read_visual(&PERM, &mut out).unwrap();
    assert_eq!(out[0], 42.0);
    assert_eq!(out[1..], rows_of(&vis, vlen, &PERM)[..]);
    let mut out = Vec::new();
    d.read_audio(&PERM, &mut out).unwrap();
    assert_eq!(out, rows_of(&aud, 1280, &PERM));
    let mut out = Vec::new();
    d.read_labels(&PERM, &mut out).unwrap();
    let want: Vec<f32> = PERM
        .iter()
        .flat_map(|&r| lab[r * 290..(r + 1) * 290].to_vec())
        .collect();
    assert_eq!(out, want);
    // Empty request is fine.
    let mut out = Vec::new();
    d.read_visual(&[], &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn roundtrip_f64_grid() {
    roundtrip(&[10, 7, 7, 512], FeatureDType::F64, true);
}

#[test]
fn roundtrip_f32_grid() {
    roundtrip(&[10, 7, 7, 512], FeatureDType::F32, false);
}

#[test]
fn roundtrip_pooled_2048_both_dtypes() {
    roundtrip(&[10, 2048], FeatureDType::F64, true);
    roundtrip(&[10, 2048], FeatureDType::F32, false);
}

#[test]
fn roundtrip_converting_dtypes() {
    roundtrip(&[10, 16], FeatureDType::F64, false); // f32 data stored as float64
    roundtrip(&[10, 16], FeatureDType::F32, true); // f64 data stored as float32
}

#[test]
fn f64_precision_is_read_as_nearest_f32() {
    let tmp = temp_dir("prec");
    let vis = vec![0.1f64; N * 10 * 4];
    let aud = vec![1.0 + 1e-12; N * 10 * 2];
    write_features(
        tmp.path(),
        &vis,
        &[N, 10, 4],
        &aud,
        &[N, 10, 2],
        None,
        &[],
        FeatureDType::F64,
    )
    .unwrap();
    let d = AveDir::open(tmp.path()).unwrap();
    let mut out = Vec::new();
    d.read_visual(&[3], &mut out).unwrap();
    assert!(out.iter().all(|&x| x == 0.1f32));
    out.clear();
    d.read_audio(&[0], &mut out).unwrap();
    assert!(out.iter().all(|&x| x == 1.0f32));
}

#[test]
fn no_labels_no_orders_for_small_n() {
    let tmp = temp_dir("nolab");
    let vis = values(N * 10 * 8, 3, true);
    let aud = values(N * 10 * 4, 4, true);
    let orders = [(Split::Test, vec![0, 1])];
    write_features(
        tmp.path(),
        &vis,
        &[N, 10, 8],
        &aud,
        &[N, 10, 4],
        None,
        &orders,
        FeatureDType::F32,
    )
    .unwrap();
    let d = AveDir::open(tmp.path()).unwrap();
    assert!(!d.has_labels());
    assert_eq!(d.label_source(), None);
    let e = d
        .read_labels(&[0], &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("labels.h5") && e.contains("N = 7"), "{e}");
    assert_eq!(d.order(Split::Test).unwrap(), [0, 1]);
    let e = d.order(Split::Train).unwrap_err().to_string();
    assert!(e.contains("train_order.h5") && e.contains("N = 7"), "{e}");

    // Annotations.txt with N lines provides labels.
    let text = "Bark&a&good&0&10\nCat&b&good&2&4\nHorse&c&good&0&0\nBark&d&good&9&10\n\
                Clock&e&good&0&1\nGoat&f&good&5&10\nBus&g&good&3&3\n";
    std::fs::write(tmp.path().join("Annotations.txt"), text).unwrap();
    let d = AveDir::open(tmp.path()).unwrap();
    assert_eq!(d.label_source(), Some(LabelSource::AnnotationsFile));
    let mut out = Vec::new();
    d.read_labels(&[1], &mut out).unwrap();
    let anns = cace_net::data::annotations::parse_annotations(text).unwrap();
    assert_eq!(out, cace_net::data::annotations::labels_onehot(&anns[1..2]));
}

#[test]
fn rewrite_replaces_and_removes_stale_files() {
    let tmp = temp_dir("rewrite");
    let lab = labels(N);
    let all = [
        (Split::Train, vec![0]),
        (Split::Val, vec![1]),
        (Split::Test, vec![2]),
    ];
    let v = vec![1.0f32; N * 10 * 3];
    let a = vec![2.0f32; N * 10 * 2];
    write_features(
        tmp.path(),
        &v,
        &[N, 10, 3],
        &a,
        &[N, 10, 2],
        Some(&lab),
        &all,
        FeatureDType::F32,
    )
    .unwrap();
    let n2 = 3;
    let v2 = vec![5.0f64; n2 * 10 * 3];
    let a2 = vec![6.0f64; n2 * 10 * 2];
    write_features(
        tmp.path(),
        &v2,
        &[n2, 10, 3],
        &a2,
        &[n2, 10, 2],
        None,
        &[(Split::Test, vec![2, 0])],
        FeatureDType::F64,
    )
    .unwrap();
    assert!(!tmp.path().join("labels.h5").exists());
    assert!(!tmp.path().join("train_order.h5").exists());
    let d = AveDir::open(tmp.path()).unwrap();
    assert_eq!(d.num_rows(), 3);
    assert_eq!(d.order(Split::Test).unwrap(), [2, 0]);
    let mut out = Vec::new();
    d.read_audio(&[2], &mut out).unwrap();
    assert_eq!(out, vec![6.0f32; 20]);
}
