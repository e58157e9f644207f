//! UnAV-100 data layer against the official loader (`tools/make_dense_data_golden.py` wrote
//! `tests/fixtures/dense/`): items in evaluation and training mode (the recorded
//! `random.randint` calls replayed, and CPython's generator reseeded), named errors on broken
//! copies of the fixture, and the synthetic generator read back through the loader.

use std::path::{Path, PathBuf};

use cace_net::dense::data::features::{Matrix, read_npy, write_npy};
use cace_net::dense::data::pyrandom::PyRandom;
use cace_net::dense::data::truncate::RandInt;
use cace_net::dense::data::{DenseDataConfig, DenseDataError, UnavDataset, UnavPaths};
use cace_net::dense::synth::{self, UnavSynthConfig};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dense")
}

/// Replays the official sequence of `random.randint(lo, hi)` calls, checking the bounds.
struct Replay(Vec<[usize; 3]>, usize);

impl RandInt for Replay {
    fn randint(&mut self, lo: usize, hi: usize) -> usize {
        let [a, b, v] = self.0[self.1];
        assert_eq!(
            (lo, hi),
            (a, b),
            "draw {} has other bounds than the official one",
            self.1
        );
        self.1 += 1;
        v
    }
}

fn tensor(st: &safetensors::SafeTensors, key: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(key).unwrap();
    let data = t
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), data)
}

fn assert_matrix(ours: &Matrix, golden: (Vec<usize>, Vec<f32>), what: &str) {
    assert_eq!(vec![ours.rows, ours.cols], golden.0, "{what}: shape");
    let same = ours
        .data
        .iter()
        .zip(&golden.1)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{what}: values differ");
}

fn check_item(ds: &UnavDataset, it: &Value, training: bool, st: &safetensors::SafeTensors) {
    let idx = it["index"].as_u64().unwrap() as usize;
    let item = if training {
        let draws: Vec<[usize; 3]> = serde_json::from_value(it["draws"].clone()).unwrap();
        let mut rng = Replay(draws, 0);
        let item = ds.train_item(idx, &mut rng).unwrap();
        assert_eq!(
            rng.1,
            rng.0.len(),
            "fewer draws than the official code made"
        );
        // The same windows from CPython's generator after `random.seed(seed)`.
        let seed = it["seed"].as_u64().unwrap();
        assert_eq!(
            ds.train_item(idx, &mut PyRandom::seed(seed)).unwrap(),
            item,
            "PyRandom, seed {seed}"
        );
        item
    } else {
        ds.item(idx).unwrap()
    };
    let key = it["key"].as_str().unwrap();
    assert_eq!(item.video_id, it["video_id"].as_str().unwrap());
    assert_matrix(
        &item.feats.visual,
        tensor(st, &format!("{key}/visual")),
        key,
    );
    assert_matrix(&item.feats.audio, tensor(st, &format!("{key}/audio")), key);
    let segs: Vec<[f64; 2]> = serde_json::from_value(it["segments"].clone()).unwrap();
    assert_eq!(item.segments.len(), segs.len(), "{key}: segments");
    for (a, b) in item.segments.iter().zip(&segs) {
        for k in 0..2 {
            assert!(
                (a[k] as f64 - b[k]).abs() <= 1e-6,
                "{key}: segment {a:?} vs {b:?}"
            );
        }
    }
    let labels: Vec<i64> = serde_json::from_value(it["labels"].clone()).unwrap();
    assert_eq!(item.labels, labels, "{key}: labels");
    assert_eq!(item.fps, it["fps"].as_f64().unwrap(), "{key}: fps");
    assert_eq!(
        item.duration,
        it["duration"].as_f64().unwrap(),
        "{key}: duration"
    );
    assert_eq!(item.feat_stride as u64, it["feat_stride"].as_u64().unwrap());
    assert_eq!(
        item.feat_num_frames as u64,
        it["feat_num_frames"].as_u64().unwrap()
    );
}

#[test]
fn items_equal_the_official_loader() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("data_golden.json")).unwrap())
            .unwrap();
    let bytes = std::fs::read(fixture().join("data_golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let paths = UnavPaths::in_dir(&fixture().join("data")).unwrap();
    let mut checked = 0;
    for (name, case) in golden["cases"].as_object().unwrap() {
        let cfg: DenseDataConfig = serde_json::from_value(case["config"].clone()).unwrap();
        let split: Vec<String> = serde_json::from_value(case["split"].clone()).unwrap();
        let split: Vec<&str> = split.iter().map(String::as_str).collect();
        let ds = UnavDataset::open(paths.clone(), &split, cfg).unwrap();
        let dict: Vec<(String, i64)> = serde_json::from_value(case["label_dict"].clone()).unwrap();
        assert_eq!(ds.label_dict, dict, "{name}: label dictionary");
        let empty: Vec<i64> = serde_json::from_value(case["empty_label_ids"].clone()).unwrap();
        assert_eq!(ds.empty_label_ids(), empty, "{name}: empty classes");
        let training = case["training"].as_bool().unwrap();
        for it in case["items"].as_array().unwrap() {
            check_item(&ds, it, training, &st);
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} items checked");
}

/// A writable copy of the fixture dataset.
fn copy_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    for sub in ["annotations", "av_features"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
        for e in std::fs::read_dir(fixture().join("data").join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), root.join(sub).join(e.file_name())).unwrap();
        }
    }
    (tmp, root)
}

fn small_cfg() -> DenseDataConfig {
    DenseDataConfig {
        rgb_dim: 6,
        flow_dim: 6,
        audio_dim: 4,
        ..DenseDataConfig::default()
    }
}

fn open(root: &Path, split: &[&str]) -> Result<UnavDataset, DenseDataError> {
    UnavDataset::open(UnavPaths::in_dir(root)?, split, small_cfg())
}

fn edit_json(root: &Path, f: impl FnOnce(&mut Value)) {
    let p = root.join("annotations/unav100_annotations.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

fn message(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[test]
fn feature_problems_are_named_errors() {
    let (_tmp, root) = copy_fixture();
    let ds = open(&root, &["train", "validation", "test"]).unwrap();
    ds.check_features().unwrap();
    let feats = root.join("av_features");
    std::fs::remove_file(feats.join("vid_val_c_vggish.npy")).unwrap();
    let e = message(ds.item(2).unwrap_err());
    assert!(
        e.contains("vid_val_c_vggish.npy") && e.contains("missing") && e.contains("vid_val_c"),
        "{e}"
    );
    write_npy(
        &feats.join("vid_val_c_vggish.npy"),
        &Matrix {
            rows: 3,
            cols: 5,
            data: vec![0.0; 15],
        },
    )
    .unwrap();
    let e = message(ds.item(2).unwrap_err());
    assert!(
        e.contains("vid_val_c_vggish.npy") && e.contains("4 channels expected, the file has 5"),
        "{e}"
    );
    let mut m = read_npy(&feats.join("vid_train_b_rgb.npy"), "b").unwrap();
    m.data[6 * 3 + 2] = f32::NAN;
    write_npy(&feats.join("vid_train_b_rgb.npy"), &m).unwrap();
    let e = message(ds.check_features().unwrap_err());
    assert!(
        e.contains("vid_train_b_rgb.npy")
            && e.contains("non-finite value NaN at snippet 3, channel 2"),
        "{e}"
    );
    std::fs::write(feats.join("vid_train_a_flow.npy"), b"not numpy").unwrap();
    let e = message(ds.item(0).unwrap_err());
    assert!(
        e.contains("vid_train_a_flow.npy") && e.contains("not a .npy file"),
        "{e}"
    );
    let short = Matrix {
        rows: 10,
        cols: 6,
        data: vec![0.5; 60],
    };
    write_npy(&feats.join("vid_train_a_flow.npy"), &short).unwrap();
    let e = message(ds.item(0).unwrap_err());
    assert!(
        e.contains("93 RGB snippets but 10 flow snippets") && e.contains("vid_train_a"),
        "{e}"
    );
}

#[test]
fn annotation_problems_are_named_errors() {
    let cases: [(&str, fn(&mut Value)); 6] = [
        ("ends before it starts", |v| {
            v["database"]["vid_val_c"]["annotations"][1]["segment"] = serde_json::json!([9.0, 4.0])
        }),
        ("outside the video [0, 20]", |v| {
            v["database"]["vid_val_c"]["annotations"][0]["segment"] = serde_json::json!([1.0, 20.5])
        }),
        ("outside 0..100", |v| {
            v["database"]["vid_val_c"]["annotations"][0]["label_id"] = serde_json::json!(100)
        }),
        ("has id 4 here but 41 before", |v| {
            v["database"]["vid_val_c"]["annotations"][2]["label_id"] = serde_json::json!(4)
        }),
        ("needs a string \"subset\"", |v| {
            v["database"]["vid_val_c"]
                .as_object_mut()
                .unwrap()
                .remove("subset")
                .map(drop)
                .unwrap()
        }),
        ("needs a string \"label\"", |v| {
            v["database"]["vid_val_c"]["annotations"][0]
                .as_object_mut()
                .unwrap()
                .remove("label")
                .map(drop)
                .unwrap()
        }),
    ];
    for (want, edit) in cases {
        let (_tmp, root) = copy_fixture();
        edit_json(&root, edit);
        let e = message(open(&root, &["validation"]).unwrap_err());
        assert!(
            e.contains("unav100_annotations.json") && e.contains("vid_val_c") && e.contains(want),
            "{want}: {e}"
        );
    }
    let (_tmp, root) = copy_fixture();
    let e = message(open(&root, &["val"]).unwrap_err());
    assert!(e.contains("no video in subset(s) val"), "{e}");
    std::fs::remove_dir_all(root.join("annotations")).unwrap();
    let e = message(open(&root, &["train"]).unwrap_err());
    assert!(
        e.contains("missing") && e.contains("unav100_annotations.json"),
        "{e}"
    );
}

#[test]
fn default_fps_off_needs_the_file_fps() {
    let (_tmp, root) = copy_fixture();
    edit_json(&root, |v| {
        drop(
            v["database"]["vid_test_d"]
                .as_object_mut()
                .unwrap()
                .remove("fps"),
        )
    });
    let cfg = DenseDataConfig {
        default_fps: None,
        ..small_cfg()
    };
    let e =
        message(UnavDataset::open(UnavPaths::in_dir(&root).unwrap(), &["test"], cfg).unwrap_err());
    assert!(
        e.contains("vid_test_d") && e.contains("unknown video fps"),
        "{e}"
    );
    assert!(
        open(&root, &["test"]).is_ok(),
        "default_fps 25 ignores the file's fps"
    );
}

fn tiny_synth() -> UnavSynthConfig {
    UnavSynthConfig {
        videos: 8,
        seed: 3,
        classes: 5,
        rgb_dim: 8,
        flow_dim: 8,
        audio_dim: 8,
        noise: 0.2,
        ..UnavSynthConfig::default()
    }
}

#[test]
fn synthetic_set_loads_and_its_boundaries_match_the_features() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_synth();
    let s = synth::generate(tmp.path(), &cfg).unwrap();
    assert_eq!((s.videos, s.train, s.validation, s.test), (8, 6, 1, 1));
    assert!(s.overlapping > 0, "some events overlap: {s:?}");
    let dcfg = DenseDataConfig {
        rgb_dim: 8,
        flow_dim: 8,
        audio_dim: 8,
        ..DenseDataConfig::default()
    };
    let ds = UnavDataset::open(
        UnavPaths::in_dir(tmp.path()).unwrap(),
        &["train", "validation", "test"],
        dcfg,
    )
    .unwrap();
    assert_eq!(ds.len(), 8);
    let protos = synth::Prototypes::new(&cfg);
    let planned = synth::plan_videos(&cfg);
    for (i, v) in ds.videos.iter().enumerate() {
        let item = ds.item(i).unwrap();
        assert_eq!(item.feats.len(), synth::snippet_count(&cfg, v.duration));
        assert_eq!(v.segments.len(), planned[i].events.len());
        for t in 0..item.feats.len() {
            for c in 0..cfg.classes {
                // On the feature grid: an event covers snippet t iff start <= t <= end.
                let mine = || {
                    item.segments
                        .iter()
                        .zip(&item.labels)
                        .filter(move |(_, l)| **l == c as i64)
                };
                let tf = t as f32;
                if mine().any(|(s, _)| (s[0] - tf).abs() < 1e-3 || (s[1] - tf).abs() < 1e-3) {
                    continue; // on a boundary: f32 rounding may put it either side
                }
                let inside = mine().any(|(s, _)| s[0] <= tf && tf <= s[1]);
                let proj = |m: &Matrix, p: &[f32]| {
                    (0..m.rows)
                        .map(|r| m.data[r * m.cols + t] * p[r])
                        .sum::<f32>()
                };
                let (pv, pa) = (
                    proj(&item.feats.visual, &protos.visual[c]),
                    proj(&item.feats.audio, &protos.audio[c]),
                );
                assert_eq!(
                    pv > 1.2,
                    inside,
                    "video {i} snippet {t} class {c}: visual {pv}"
                );
                assert_eq!(
                    pa > 1.2,
                    inside,
                    "video {i} snippet {t} class {c}: audio {pa}"
                );
            }
        }
    }
}

#[test]
fn synthetic_set_is_deterministic_and_refuses_to_overwrite() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    synth::generate(a.path(), &tiny_synth()).unwrap();
    synth::generate(b.path(), &tiny_synth()).unwrap();
    for f in [
        "annotations/unav100_annotations.json",
        "av_features/synth_00003_flow.npy",
        "av_features/synth_00007_vggish.npy",
    ] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f}"
        );
    }
    let e = message(synth::generate(a.path(), &tiny_synth()).unwrap_err());
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn cace_synth_kind_unav_writes_a_loadable_set() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("unav");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_cace"))
        .args([
            "synth",
            "--kind",
            "unav",
            "--videos",
            "4",
            "--seed",
            "1",
            "--classes",
            "3",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(said.contains("wrote 4 UnAV-layout videos"), "{said}");
    let ds = UnavDataset::open(
        UnavPaths::in_dir(&out).unwrap(),
        &["train", "validation", "test"],
        DenseDataConfig::default(),
    )
    .unwrap();
    assert_eq!(ds.len(), 4);
    ds.check_features().unwrap();
    assert!(ds.label_dict.iter().all(|(_, id)| (0..3).contains(id)));
    let item = ds.item(0).unwrap();
    assert_eq!((item.feats.visual.rows, item.feats.audio.rows), (2048, 128));
}
