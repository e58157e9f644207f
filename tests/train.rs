//! Training runs end to end through the `cace` binary: a run killed with SIGKILL mid-epoch and
//! resumed ends with the same report as an uninterrupted run; existing runs are never
//! clobbered; bad datasets fail with the file named.

use std::path::{Path, PathBuf};
use std::process::Command;

use cace_net::data::annotations::builtin_annotations;
use cace_net::data::ave::{FeatureDType, Split, write_features};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

fn cace(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cace"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run cace");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked at") && !err.contains("internal error"),
        "cace {args:?} panicked (a bug): {err}"
    );
    out
}

/// A scratch folder for one test, removed when the test ends (`tempfile`), pass or fail.
fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("cace-train-{name}-"))
        .tempdir()
        .expect("a scratch folder")
}

/// 20 rows with real labels (annotation rows 0, 200, 400, ...) and random features:
/// 12 train, 4 val, 4 test.
fn tiny_dataset(dir: &Path) {
    let anns = builtin_annotations();
    let n = 20;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let visual: Vec<f32> = (0..n * 10 * 49 * 512)
        .map(|_| rng.random::<f32>() * 0.5)
        .collect();
    let audio: Vec<f32> = (0..n * 10 * 128).map(|_| rng.random::<f32>()).collect();
    let mut labels = vec![0f32; n * 10 * 29];
    for i in 0..n {
        for (t, l) in anns[i * 200].segment_labels().iter().enumerate() {
            labels[(i * 10 + t) * 29 + l] = 1.0;
        }
    }
    let orders = vec![
        (Split::Train, (0..12).collect()),
        (Split::Val, (12..16).collect()),
        (Split::Test, (16..20).collect()),
    ];
    write_features(
        dir,
        &visual,
        &[n, 10, 7, 7, 512],
        &audio,
        &[n, 10, 128],
        Some(&labels),
        &orders,
        FeatureDType::F32,
    )
    .unwrap();
}

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("train.json");
    std::fs::write(&path, r#"{"epochs": 3, "batch_size": 5, "eval_batch_size": 8, "bece_start_epoch": 1, "seed": 11}"#).unwrap();
    path
}

fn train(
    data: &Path,
    out: &Path,
    cfg: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cace(&args, env)
}

/// Runs `cace train` and kills it with SIGKILL half an epoch's time after it printed its first
/// epoch line. Returns how many epochs had been printed by then (1, or 2 on a very slow
/// second epoch).
fn kill_during_second_epoch(data: &Path, out: &Path, cfg: &Path) -> usize {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_cace"))
        .args([
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run cace");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines
        .find_map(|l| l.ok().filter(|l| l.starts_with("epoch")))
        .expect("an epoch line before the end of the output");
    // "epoch   1/3  loss ...  lr 1.00e-4  1.3 s  *best val": the epoch's seconds.
    let seconds: f64 = first
        .split("  ")
        .filter_map(|f| f.strip_suffix(" s")?.trim().parse().ok())
        .last()
        .expect("the epoch's time in its line");
    std::thread::sleep(std::time::Duration::from_secs_f64(seconds / 2.0));
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    assert!(!status.success());
    // Epoch lines printed: the first (read above) and those that came before the kill.
    1 + lines
        .map_while(Result::ok)
        .filter(|l| l.starts_with("epoch"))
        .count()
}

fn without_timing(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("train_seconds");
    v
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

#[test]
fn sigkill_mid_epoch_then_resume_gives_the_same_run() {
    let scratch = tmp("resume");
    let dir = scratch.path();
    let data = dir.join("data");
    tiny_dataset(&data);
    let cfg = config(dir);

    let full = dir.join("full");
    let out = train(&data, &full, &cfg, &[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("official CACE-Net protocol"), "{stdout}");

    // Killed from outside (SIGKILL) half an epoch after it reported its first epoch: in the
    // middle of the second one, wherever that is.
    let killed = dir.join("killed");
    let done = kill_during_second_epoch(&data, &killed, &cfg);
    assert!(
        !killed.join("report.json").exists(),
        "the run finished before the kill"
    );
    // Its line is appended just before an epoch's last/ is saved and printed just after.
    let saved = metrics(&killed).len();
    assert!(
        saved == done || saved == done + 1,
        "{saved} metric lines, {done} epochs printed"
    );

    // Without --resume the saved run is refused and left alone.
    let before = std::fs::read(killed.join("last/model.safetensors")).unwrap();
    let out = train(&data, &killed, &cfg, &[], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
    assert_eq!(
        std::fs::read(killed.join("last/model.safetensors")).unwrap(),
        before
    );

    let out = train(&data, &killed, &cfg, &["--resume"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let report = |run: &Path| {
        without_timing(
            serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap(),
        )
    };
    assert_eq!(report(&killed), report(&full));
    assert_eq!(metrics(&killed), metrics(&full));
    assert_eq!(
        std::fs::read(killed.join("best/model.safetensors")).unwrap(),
        std::fs::read(full.join("best/model.safetensors")).unwrap()
    );
    let r = report(&full);
    for key in [
        "best_val_epoch",
        "val_acc_at_best_val",
        "test_acc_at_best_val",
        "test_acc_best_over_epochs",
    ] {
        assert!(!r[key].is_null(), "{key} missing in {r}");
    }
    let m = metrics(&full);
    assert_eq!(m.len(), 3);
    assert_eq!(m[0]["bece_on"], false);
    assert_eq!(m[1]["bece_on"], true);
    assert!(m[1]["loss_terms"]["contrastive"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_datasets_fail_naming_the_file_and_keep_the_run() {
    let scratch = tmp("bad");
    let dir = scratch.path();
    let data = dir.join("data");
    tiny_dataset(&data);
    let cfg = config(dir);
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("notes.txt"), "keep me").unwrap();

    // Truncated visual file.
    let v = std::fs::read(data.join("visual_feature.h5")).unwrap();
    std::fs::write(data.join("visual_feature.h5"), &v[..v.len() / 3]).unwrap();
    let out = train(&data, &run, &cfg, &[], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("visual_feature.h5"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    assert_eq!(
        std::fs::read_to_string(run.join("notes.txt")).unwrap(),
        "keep me"
    );

    let fails = |needles: &[&str]| {
        let out = train(&data, &run, &cfg, &[], &[]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        for n in needles {
            assert!(err.contains(n), "error should mention `{n}`: {err}");
        }
        assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
        assert_eq!(
            std::fs::read_to_string(run.join("notes.txt")).unwrap(),
            "keep me"
        );
        assert!(!run.join("last").exists() && !run.join("metrics.jsonl").exists());
    };

    // Missing order file for train.
    tiny_dataset(&data);
    std::fs::remove_file(data.join("train_order.h5")).unwrap();
    fails(&["train_order.h5"]);

    // Order index out of range.
    tiny_dataset(&data);
    let _ = std::fs::remove_file(data.join("test_order.h5"));
    cace_net::data::h5::write(&data.join("test_order.h5"), "order", &[3], &[16i64, 17, 99])
        .unwrap();
    fails(&["test_order.h5", "99"]);

    // NaN in the visual features.
    tiny_dataset(&data);
    {
        let f = rust_hdf5::H5File::open_rw(data.join("visual_feature.h5")).unwrap();
        let ds = f.dataset_writer("avadataset").unwrap();
        ds.write_slice(&[3, 4, 2, 2, 7], &[1, 1, 1, 1, 1], &[f32::NAN])
            .unwrap();
        drop(ds);
        f.close().unwrap();
    }
    fails(&["visual_feature.h5", "row 3"]);

    // Audio features of the wrong width for the model.
    let anns_rows: Vec<f32> = vec![0.0; 20 * 10 * 64];
    let visual = vec![0.1f32; 20 * 10 * 49 * 512];
    let mut labels = vec![0f32; 20 * 10 * 29];
    labels.iter_mut().step_by(29).for_each(|x| *x = 1.0);
    let orders = vec![
        (Split::Train, (0..12).collect()),
        (Split::Val, (12..16).collect()),
        (Split::Test, (16..20).collect()),
    ];
    write_features(
        &data,
        &visual,
        &[20, 10, 7, 7, 512],
        &anns_rows,
        &[20, 10, 64],
        Some(&labels),
        &orders,
        FeatureDType::F32,
    )
    .unwrap();
    fails(&["audio", "64"]);

    // A malformed Annotations.txt line (labels come from it when labels.h5 is absent).
    tiny_dataset(&data);
    std::fs::remove_file(data.join("labels.h5")).unwrap();
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(if i == 6 {
            "Bark&abc&good&3\n"
        } else {
            "Bark&abc&good&0&10\n"
        });
    }
    std::fs::write(data.join("Annotations.txt"), text).unwrap();
    fails(&["Annotations.txt", "line 7"]);
}

#[test]
fn streaming_batches_from_disk_gives_the_same_run_as_memory() {
    let scratch = tmp("stream");
    let dir = scratch.path();
    let data = dir.join("data");
    tiny_dataset(&data);
    let run = |in_memory: bool| {
        let cfg = dir.join(format!("cfg-{in_memory}.json"));
        std::fs::write(&cfg, format!(r#"{{"epochs": 2, "batch_size": 5, "bece_start_epoch": 1, "seed": 3, "features_in_memory": {in_memory}}}"#)).unwrap();
        let out = dir.join(format!("run-{in_memory}"));
        let o = train(&data, &out, &cfg, &[], &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        metrics(&out)
    };
    let (memory, disk) = (run(true), run(false));
    assert_eq!(memory.len(), 2);
    assert_eq!(memory, disk);
}

#[test]
fn several_seeds_report_mean_and_std() {
    let scratch = tmp("seeds");
    let dir = scratch.path();
    let data = dir.join("data");
    tiny_dataset(&data);
    let cfg = dir.join("cfg.json");
    std::fs::write(&cfg, r#"{"epochs": 1, "batch_size": 6}"#).unwrap();
    let out = dir.join("runs");
    let o = train(&data, &out, &cfg, &["--seeds", "4,5"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("seeds_summary.json")).unwrap()).unwrap();
    let honest: Vec<f64> = ["seed-4", "seed-5"]
        .iter()
        .map(|s| {
            serde_json::from_slice::<Value>(
                &std::fs::read(out.join(s).join("report.json")).unwrap(),
            )
            .unwrap()["test_acc_at_best_val"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let mean = (honest[0] + honest[1]) / 2.0;
    let std = ((honest[0] - mean).powi(2) + (honest[1] - mean).powi(2)).sqrt(); // n - 1 = 1
    assert_eq!(summary["seeds"], serde_json::json!([4, 5]));
    assert!((summary["test_acc_at_best_val"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
    assert!((summary["test_acc_at_best_val"]["std"].as_f64().unwrap() - std).abs() < 1e-9);
    assert!(String::from_utf8_lossy(&o.stdout).contains("official CACE-Net protocol"));
}

/// A finished run whose last/ was deleted is neither overwritten nor restarted (issue #13,
/// bug 2): both `train` and `train --resume` fail, naming what is there, and every file stays.
#[test]
fn run_without_last_is_never_overwritten() {
    let scratch = tmp("no-last");
    let dir = scratch.path();
    let data = dir.join("data");
    tiny_dataset(&data);
    let cfg = config(dir);
    let run = dir.join("run");
    let out = train(&data, &run, &cfg, &[], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(run.join("last")).unwrap();
    let snapshot = |p: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<PathBuf> = ["report.json", "metrics.jsonl", "best/model.safetensors"]
            .iter()
            .map(|f| p.join(f))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
            .collect()
    };
    let before = snapshot(&run);
    for extra in [&[][..], &["--resume"][..]] {
        let out = train(&data, &run, &cfg, extra, &[]);
        assert!(!out.status.success(), "{extra:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no last/"), "{extra:?}: {err}");
        assert!(err.contains("report.json"), "{extra:?}: {err}");
        assert_eq!(snapshot(&run), before, "{extra:?} changed the run");
    }
}

/// Bad config values fail before anything is written, naming the field (issue #13, bugs 4–6).
#[test]
fn bad_config_fields_are_named_before_anything_is_written() {
    let scratch = tmp("bad-cfg");
    let dir = scratch.path();
    let data = dir.join("data");
    tiny_dataset(&data);
    for (json, field) in [
        (r#"{"model": {"d_model": 0}}"#, "d_model"),
        (r#"{"model": {"d_model": 1000000000}}"#, "d_model"),
        (r#"{"model": {"visual_dim": 4000000000}}"#, "visual_dim"),
        (r#"{"model": {"psi": 1.5}}"#, "psi"),
        (r#"{"model": {"lambda": -0.1}}"#, "lambda"),
        (
            r#"{"model": {"dropout": {"relation": 1.0}}}"#,
            "dropout.relation",
        ),
        (r#"{"model": {"num_classes": 2}}"#, "num_classes"),
        (r#"{"adam": {"lr": -1.0}}"#, "adam.lr"),
        (r#"{"tau": 0.0}"#, "tau"),
        (r#"{"batch_size": 0}"#, "batch_size"),
        (r#"{"lr_milestones": [20, 10]}"#, "lr_milestones"),
    ] {
        let cfg = dir.join("cfg.json");
        std::fs::write(&cfg, json).unwrap();
        let run = dir.join("run");
        let out = train(&data, &run, &cfg, &[], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{json} was accepted");
        assert!(err.contains(field), "{json}: {err}");
        assert!(!err.contains("panicked"), "{json}: {err}");
        assert!(
            !run.join("train_config.json").exists(),
            "{json}: wrote the config"
        );
    }
}

/// Weak spots of issue #13: each answered with a clear message, nothing saved is lost.
#[test]
fn resume_names_differing_fields_extends_runs_and_checks_seeds_first() {
    let scratch = tmp("resume-cfg");
    let dir = scratch.path();
    let data = dir.join("data");
    tiny_dataset(&data);
    let cfg = config(dir); // 3 epochs, bece_start_epoch 1
    let run = dir.join("run");
    assert!(train(&data, &run, &cfg, &[], &[]).status.success());

    // A different config: the error names the fields.
    let other = dir.join("other.json");
    std::fs::write(&other, r#"{"epochs": 3, "batch_size": 4, "eval_batch_size": 8, "bece_start_epoch": 1, "seed": 11, "model": {"psi": 0.2}}"#).unwrap();
    let out = train(&data, &run, &other, &["--resume"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("batch_size") && err.contains("model.psi"),
        "{err}"
    );

    // More epochs extends the finished run: 3 + 2 metric lines, the first 3 unchanged.
    let before = metrics(&run);
    let out = train(&data, &run, &cfg, &["--resume", "--epochs", "5"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = metrics(&run);
    assert_eq!(after.len(), 5);
    assert_eq!(after[..3], before[..]);

    // A truncated state.json is named.
    let state = run.join("last/state.json");
    let text = std::fs::read(&state).unwrap();
    std::fs::write(&state, &text[..text.len() / 2]).unwrap();
    let out = train(&data, &run, &cfg, &["--resume", "--epochs", "6"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("last/state.json"), "{err}");

    // Duplicate seeds are refused before any training.
    let seeds = dir.join("seeds");
    let out = train(&data, &seeds, &cfg, &["--seeds", "1,2,1"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("seed 1 twice"),
        "{err}"
    );
    assert!(!seeds.exists(), "trained before checking the seeds");
}

/// Val/test rows that are training rows, and an empty val split, are warned about (issue #13).
#[test]
fn overlapping_and_empty_splits_are_warned_about() {
    let scratch = tmp("splits");
    let dir = scratch.path();
    let data = dir.join("data");
    tiny_dataset(&data);
    let cfg = dir.join("one.json");
    std::fs::write(
        &cfg,
        r#"{"epochs": 1, "batch_size": 5, "eval_batch_size": 8}"#,
    )
    .unwrap();
    let _ = std::fs::remove_file(data.join("test_order.h5"));
    cace_net::data::h5::write(&data.join("test_order.h5"), "order", &[2], &[0i64, 1]).unwrap();
    let _ = std::fs::remove_file(data.join("val_order.h5"));
    cace_net::data::h5::write::<i64>(&data.join("val_order.h5"), "order", &[0], &[]).unwrap();
    let run = dir.join("run");
    let out = train(&data, &run, &cfg, &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("2 test rows are also training rows"), "{err}");
    assert!(err.contains("the val split is empty"), "{err}");
    assert!(
        run.join("best/model.safetensors").exists(),
        "no best/ without val"
    );
}
/// A damaged `last/optimizer.safetensors` (one moment a value short) is refused by `--resume`
/// with the file and the tensor named; it used to reach the first Adam step, where the shapes
/// no longer matched.
#[test]
fn resume_refuses_optimizer_moments_of_the_wrong_size() {
    use safetensors::tensor::{SafeTensors, TensorView};
    let scratch = tmp("bad-optimizer");
    let dir = scratch.path();
    let data = dir.join("data");
    tiny_dataset(&data);
    let cfg = config(dir);
    let run = dir.join("run");
    let out = train(&data, &run, &cfg, &["--epochs", "1"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = run.join("last/optimizer.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let cut = names
        .iter()
        .find(|n| n.starts_with("exp_avg/"))
        .unwrap()
        .to_string();
    let views: Vec<(String, TensorView<'_>)> = names
        .iter()
        .map(|&n| {
            let v = st.tensor(n).unwrap();
            let (shape, data) = if n == cut {
                (vec![v.shape()[0] - 1], &v.data()[..v.data().len() - 4])
            } else {
                (v.shape().to_vec(), v.data())
            };
            (
                n.to_string(),
                TensorView::new(v.dtype(), shape, data).unwrap(),
            )
        })
        .collect();
    let damaged = safetensors::serialize(views, header.metadata().clone()).unwrap();
    std::fs::write(&file, damaged).unwrap();

    let out = train(&data, &run, &cfg, &["--resume", "--epochs", "2"], &[]);
    assert!(
        !out.status.success(),
        "resumed from a damaged optimizer state"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&file.display().to_string()) && err.contains(&cut),
        "{err}"
    );
}

/// `--precision bf16` trains with bf16 multiplies: the run records it, its losses are near the
/// f32 run's but not equal (the operands are rounded), and its checkpoint evaluates. On a CPU
/// without AVX512-BF16 the command stops before writing anything, saying why.
#[test]
fn bf16_runs_are_recorded_close_to_f32_and_refused_without_the_instruction() {
    let scratch = tmp("bf16");
    let dir = scratch.path();
    let data = dir.join("data");
    tiny_dataset(&data);
    let cfg = dir.join("cfg.json");
    std::fs::write(
        &cfg,
        r#"{"epochs": 2, "batch_size": 6, "bece_start_epoch": 1, "seed": 2}"#,
    )
    .unwrap();
    let (f32_run, bf16_run) = (dir.join("f32"), dir.join("bf16"));
    let o = train(&data, &bf16_run, &cfg, &["--precision", "bf16"], &[]);
    if !cace_net::precision::gemm_bf16::available() {
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("AVX512-BF16"));
        assert!(
            !bf16_run.exists(),
            "a refused run wrote {}",
            bf16_run.display()
        );
        return;
    }
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = train(&data, &f32_run, &cfg, &[], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let saved: Value =
        serde_json::from_slice(&std::fs::read(bf16_run.join("train_config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["precision"], "bf16");
    let loss = |run: &Path| -> Vec<f64> {
        metrics(run)
            .iter()
            .map(|m| m["train_loss"].as_f64().unwrap())
            .collect()
    };
    let (a, b) = (loss(&f32_run), loss(&bf16_run));
    assert_eq!(a.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        // bf16 keeps 8 bits of mantissa: a few per mille on a loss, never bit-equal.
        assert!(x != y, "bf16 gave the f32 loss {x}");
        assert!((x - y).abs() < 0.05 * x.abs(), "f32 {x} vs bf16 {y}");
    }
    let o = cace(
        &[
            "eval",
            "--checkpoint",
            bf16_run.join("best").to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--split",
            "test",
            "--precision",
            "bf16",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("accuracy"));
}
