//! The hostile-input matrix (issue #13): `cace` run on bad input, one case per row. Each must
//! end with exit status 1 and an `error:` line naming the file, option or field at fault,
//! never a panic; where data could be lost, the files are compared before and after.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use cace_net::checkpoint::{native, state_dict};
use cace_net::config::ModelConfig;
use cace_net::data::ave::{FeatureDType, Split, write_features};
use cace_net::model::CaceNet;

/// Runs `cace`; returns (exit code, stderr).
fn cace(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cace"))
        .args(args)
        .output()
        .expect("run cace");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 12 rows of random-ish features (visual `[10, 7, 7, vdim]`, audio 128-d), labels with
/// category `class` in every segment; 8 train, 2 val, 2 test.
fn dataset(dir: &Path, vdim: usize, class: usize) {
    let n = 12;
    let visual: Vec<f32> = (0..n * 10 * 49 * vdim)
        .map(|i| ((i * 7919) % 1000) as f32 / 2000.0)
        .collect();
    let audio: Vec<f32> = (0..n * 10 * 128)
        .map(|i| ((i * 104_729) % 1000) as f32 / 1000.0)
        .collect();
    let mut labels = vec![0f32; n * 10 * 29];
    labels.chunks_mut(29).for_each(|c| c[class] = 1.0);
    let orders = vec![
        (Split::Train, (0..8).collect()),
        (Split::Val, vec![8, 9]),
        (Split::Test, vec![10, 11]),
    ];
    write_features(
        dir,
        &visual,
        &[n, 10, 7, 7, vdim],
        &audio,
        &[n, 10, 128],
        Some(&labels),
        &orders,
        FeatureDType::F32,
    )
    .unwrap();
}

/// Every file under `dir`, recursively (relative path → bytes).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let f = Self {
            dir: tempfile::Builder::new()
                .prefix("cace-hostile-")
                .tempdir()
                .unwrap(),
        };
        dataset(&f.p("data"), 512, 3);
        dataset(&f.p("narrow"), 256, 3);
        dataset(&f.p("class27"), 512, 27);
        let model = CaceNet::new(&ModelConfig::default(), &Device::flex()).unwrap();
        native::write(&f.p("ckpt"), &state_dict(&model), &ModelConfig::default()).unwrap();
        let w = |name: &str, bytes: &[u8]| std::fs::write(f.p(name), bytes).unwrap();
        w(
            "garbage.pth.tar",
            &[0x50, 0x4b, 3, 4, 0xff, 0xfe, 0, 1, 2, 3],
        );
        w("empty.pth.tar", b"");
        w("d0.json", br#"{"model": {"d_model": 0}}"#);
        w("psi.json", br#"{"model": {"psi": 2.0}}"#);
        w(
            "classes.json",
            br#"{"epochs": 1, "model": {"num_classes": 10}}"#,
        );
        w("lr.json", br#"{"adam": {"lr": -1}}"#);
        w("unknown.json", br#"{"epochs": 1, "learning_rate": 0.1}"#);
        w("notjson.json", b"epochs = 3");
        // Data directories with one damaged file each.
        let copy = |from: &str, to: &str| {
            std::fs::create_dir_all(f.p(to)).unwrap();
            for e in std::fs::read_dir(f.p(from)).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), f.p(to).join(e.file_name())).unwrap();
            }
        };
        copy("data", "garbage_h5");
        w(
            "garbage_h5/visual_feature.h5",
            b"\x89HDF\r\n\x1a\n but then nothing",
        );
        copy("data", "truncated_h5");
        let labels = std::fs::read(f.p("data/labels.h5")).unwrap();
        w("truncated_h5/labels.h5", &labels[..labels.len() / 3]);
        // A finished run whose last/ was deleted, and one with a torn state.json.
        for run in ["run_no_last", "run_torn_state"] {
            std::fs::create_dir_all(f.p(run).join("best")).unwrap();
            std::fs::copy(
                f.p("ckpt/model.safetensors"),
                f.p(run).join("best/model.safetensors"),
            )
            .unwrap();
            w(&format!("{run}/metrics.jsonl"), b"{\"epoch\": 0}\n");
            w(&format!("{run}/report.json"), b"{}");
        }
        std::fs::create_dir_all(f.p("run_torn_state/last")).unwrap();
        w(
            "run_torn_state/last/state.json",
            b"{\"next_epoch\": 1, \"best_v",
        );
        w("run_torn_state/train_config.json", b"{}");
        f
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.p(name).to_str().unwrap().to_string()
    }
}

#[test]
fn every_hostile_input_is_a_clean_error() {
    let f = Fixture::new();
    let (data, ckpt) = (f.s("data"), f.s("ckpt"));
    let train = |data: &str, out: &str, more: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["train", "--data", data, "--out", out]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(more.iter().map(|s| s.to_string()));
        v
    };
    let eval = |data: &str, ckpt: &str, more: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["eval", "--data", data, "--checkpoint", ckpt]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(more.iter().map(|s| s.to_string()));
        v
    };
    let new_run = f.s("new_run");
    // (case, arguments, what the error must name)
    let cases: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        (
            "visual width differs from the checkpoint",
            eval(&f.s("narrow"), &ckpt, &[]),
            vec![f.s("narrow"), "visual 256-d".into()],
        ),
        (
            "predict with that width",
            {
                let mut v = eval(&f.s("narrow"), &ckpt, &["--out", &f.s("p.json")]);
                v[0] = "predict".into();
                v
            },
            vec![f.s("narrow")],
        ),
        (
            "train onto a run without last/",
            train(&data, &f.s("run_no_last"), &[]),
            vec![f.s("run_no_last"), "no last/".into()],
        ),
        (
            "resume from a torn state.json",
            train(&data, &f.s("run_torn_state"), &["--resume"]),
            vec!["state.json".into()],
        ),
        (
            "d_model 0",
            train(&data, &new_run, &["--config", &f.s("d0.json")]),
            vec!["d_model".into()],
        ),
        (
            "psi out of range",
            train(&data, &new_run, &["--config", &f.s("psi.json")]),
            vec!["model.psi".into()],
        ),
        (
            "negative learning rate",
            train(&data, &new_run, &["--config", &f.s("lr.json")]),
            vec!["adam.lr".into()],
        ),
        (
            "num_classes below the labels' categories",
            train(
                &f.s("class27"),
                &new_run,
                &["--config", &f.s("classes.json")],
            ),
            vec!["num_classes".into(), f.s("class27")],
        ),
        (
            "unknown config field",
            train(&data, &new_run, &["--config", &f.s("unknown.json")]),
            vec!["learning_rate".into(), f.s("unknown.json")],
        ),
        (
            "config is not JSON",
            train(&data, &new_run, &["--config", &f.s("notjson.json")]),
            vec![f.s("notjson.json")],
        ),
        (
            "the same seed twice",
            train(&data, &new_run, &["--seeds", "1,1"]),
            vec!["seed 1 twice".into()],
        ),
        (
            "batch size 0",
            eval(&data, &ckpt, &["--batch-size", "0"]),
            vec!["--batch-size".into()],
        ),
        (
            "damaged checkpoint",
            eval(&data, &f.s("garbage.pth.tar"), &[]),
            vec![f.s("garbage.pth.tar")],
        ),
        (
            "empty checkpoint",
            eval(&data, &f.s("empty.pth.tar"), &[]),
            vec![f.s("empty.pth.tar")],
        ),
        (
            "missing checkpoint",
            eval(&data, &f.s("nothing_here"), &[]),
            vec![f.s("nothing_here")],
        ),
        (
            "damaged HDF5 features",
            eval(&f.s("garbage_h5"), &ckpt, &[]),
            vec!["visual_feature.h5".into()],
        ),
        (
            "truncated HDF5 labels",
            eval(&f.s("truncated_h5"), &ckpt, &[]),
            vec!["labels.h5".into()],
        ),
        (
            "missing data directory",
            eval(&f.s("no_data"), &ckpt, &[]),
            vec![f.s("no_data")],
        ),
        (
            "full disk for --json",
            eval(&data, &ckpt, &["--json", "/dev/full"]),
            vec!["/dev/full".into()],
        ),
        (
            "unknown device",
            eval(&data, &ckpt, &["--device", "tpu"]),
            vec!["tpu".into()],
        ),
        (
            "import of a damaged file",
            vec![
                "import".into(),
                f.s("garbage.pth.tar"),
                "--out".into(),
                f.s("imported"),
            ],
            vec![f.s("garbage.pth.tar")],
        ),
        (
            "synth into a dataset",
            vec![
                "synth".into(),
                "--out".into(),
                data.clone(),
                "--videos".into(),
                "20".into(),
            ],
            vec![data.clone()],
        ),
    ];
    let keep = ["data", "run_no_last", "run_torn_state"].map(|d| (d, snapshot(&f.p(d))));
    let mut failures = Vec::new();
    for (case, args, needles) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = cace(&args);
        let clean = code == Some(1)
            && stderr.trim_start().starts_with("error:")
            && !stderr.contains("panicked")
            && !stderr.contains("internal error")
            && needles.iter().all(|n| stderr.contains(n.as_str()));
        if !clean {
            failures.push(format!("{case}: exit {code:?}, stderr: {stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (d, before) in keep {
        assert!(snapshot(&f.p(d)) == before, "{d} changed");
    }
    assert!(!f.p("new_run").join("train_config.json").exists());
    assert!(!f.p("imported").exists());
}
