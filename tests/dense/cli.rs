//! `cace dense train / eval / predict` and `cace ablate --table S3` end to end on a small
//! synthetic UnAV-layout set: the run directory, the report, `--resume`, and that the three
//! ways of scoring a checkpoint agree to the last digit (the report's test mAP; `dense eval
//! --checkpoint`; `dense predict` then `dense eval --detections`).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn cace(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cace"))
        .args(args)
        .output()
        .expect("run cace");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains("panicked at"),
        "cace {args:?} panicked (a bug): {err}"
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err,
    )
}

fn ok(args: &[&str]) -> String {
    let (success, out, err) = cace(args);
    assert!(success, "cace {args:?} failed: {err}");
    out
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A slim model (the data's widths, 100 classes) trained 1 warm-up + 1 cosine epoch.
const CONFIG: &str = r#"{
  "model": {"embd_dim": 16, "head_dim": 16, "dependency_dim": 4, "avca_dim": 16},
  "epochs": 1, "warmup_epochs": 1, "batch_size": 4, "lr": 1e-3, "ema_decay": 0.9,
  "bece_start_epoch": 1
}"#;

fn synth(dir: &Path) -> String {
    let data = dir.join("data");
    ok(&[
        "synth",
        "--kind",
        "unav",
        "--out",
        data.to_str().unwrap(),
        "--videos",
        "12",
        "--seed",
        "3",
    ]);
    data.to_str().unwrap().to_string()
}

#[test]
fn train_then_score_three_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth(tmp.path());
    let config = tmp.path().join("config.json");
    std::fs::write(&config, CONFIG).unwrap();
    let run = tmp.path().join("run");
    let (run_s, config_s) = (run.to_str().unwrap(), config.to_str().unwrap());
    ok(&[
        "dense", "train", "--data", &data, "--out", run_s, "--config", config_s, "--seed", "5",
    ]);

    let lines: Vec<Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "1 warm-up + 1 cosine epoch");
    for (e, l) in lines.iter().enumerate() {
        assert_eq!(l["epoch"], e);
        assert!(l["loss"].as_f64().unwrap().is_finite());
        assert_eq!(l["test_map_tiou"].as_array().unwrap().len(), 9);
    }
    for f in ["model.safetensors", "ema.safetensors", "train_config.json"] {
        assert!(run.join("best").join(f).exists(), "best/{f}");
    }
    assert!(run.join("curves.png").exists());
    let saved = json(&run.join("train_config.json"));
    assert_eq!(saved["seed"], 5);
    let report = json(&run.join("report.json"));
    let best = report["best_epoch"].as_u64().unwrap() as usize;
    assert_eq!(report["test_map"], lines[best]["test_map"]);

    // 1. The checkpoint scored by `dense eval` gives the report's number.
    let j1 = tmp.path().join("eval.json");
    ok(&[
        "dense",
        "eval",
        "--checkpoint",
        run_s,
        "--data",
        &data,
        "--json",
        j1.to_str().unwrap(),
    ]);
    let e1 = json(&j1);
    let reported = report["test_map"].as_f64().unwrap();
    assert!(
        (e1["average_mAP"].as_f64().unwrap() - reported).abs() < 1e-9,
        "{e1} vs {reported}"
    );
    // 2. Its detections in the official format, scored against the annotation file.
    let pred = tmp.path().join("pred.json");
    let out = ok(&[
        "dense",
        "predict",
        "--checkpoint",
        run_s,
        "--data",
        &data,
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert!(out.contains("2 videos"), "{out}");
    let p = json(&pred);
    let first = p["database"].as_object().unwrap().values().next().unwrap()[0].clone();
    assert!(
        first["label"]
            .as_str()
            .unwrap()
            .starts_with("synthetic event")
    );
    let j2 = tmp.path().join("eval2.json");
    let ann = format!("{data}/annotations/unav100_annotations.json");
    ok(&[
        "dense",
        "eval",
        "--detections",
        pred.to_str().unwrap(),
        "--annotations",
        &ann,
        "--json",
        j2.to_str().unwrap(),
    ]);
    assert_eq!(json(&j2)["mAP"], e1["mAP"]);

    // --resume of a finished run trains nothing and keeps its files; extending a cosine run
    // is refused with the reason, before anything is written.
    let before = std::fs::read(run.join("metrics.jsonl")).unwrap();
    ok(&[
        "dense", "train", "--data", &data, "--out", run_s, "--resume",
    ]);
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), before);
    let (success, _, err) = cace(&[
        "dense", "train", "--data", &data, "--out", run_s, "--resume", "--epochs", "3",
    ]);
    assert!(!success && err.contains("cosine"), "{err}");
    // A run directory is never overwritten without --resume.
    let (success, _, err) = cace(&[
        "dense", "train", "--data", &data, "--out", run_s, "--config", config_s,
    ]);
    assert!(!success && err.contains("--resume"), "{err}");
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), before);
}

#[test]
fn table_s3_runs_its_three_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth(tmp.path());
    let config = tmp.path().join("config.json");
    std::fs::write(&config, CONFIG).unwrap();
    let out = tmp.path().join("s3");
    ok(&[
        "ablate",
        "--table",
        "S3",
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--seeds",
        "1",
    ]);
    let t = json(&out.join("table.json"));
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r["test_map"].as_array().unwrap().len(), 6);
    }
    // The rows really differ: AVCA and BECE add their parameters.
    let keys = |row: &str| {
        let file = out.join(row).join("seed-1/best/model.safetensors");
        let bytes = std::fs::read(file).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.names().into_iter().map(String::from).collect::<Vec<_>>()
    };
    let (base, avca, both) = (keys("baseline"), keys("avca"), keys("avca-bece"));
    assert!(
        !base
            .iter()
            .any(|k| k.starts_with("avca.") || k.starts_with("bece."))
    );
    assert!(
        avca.iter().any(|k| k.starts_with("avca.")) && !avca.iter().any(|k| k.starts_with("bece."))
    );
    assert!(both.iter().any(|k| k.starts_with("bece.encoder_q")));
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(
        md.contains("+ AVCA + BECE") && md.contains("(47.5)"),
        "{md}"
    );
    // BECE's contrastive term is logged from its start epoch.
    let last = std::fs::read_to_string(out.join("avca-bece/seed-1/metrics.jsonl")).unwrap();
    let lines: Vec<Value> = last
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines[0]["contrastive_loss"].is_null()
            && lines[1]["contrastive_loss"].as_f64().unwrap() > 0.0
    );
}
