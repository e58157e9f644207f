//! Every model variant of issue 6 (temporal encoders, guides, BECE augmentations, Table 2 *)
//! on a tiny synthetic set: forward + backward, output shapes, the loss decreasing over a few
//! Adam steps on one batch, the state-dict key counts REFERENCE §3.3 gives, and a short
//! `cace train --config` run for each.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Device, Tensor, TensorData};
use cace_net::config::{Augmentation, Guide, ModelConfig};
use cace_net::data::ave::{AveDir, Split};
use cace_net::data::synth::{SynthConfig, generate};
use cace_net::loss::{Targets, objective};
use cace_net::model::state::ParamList;
use cace_net::model::temporal::TemporalKind;
use cace_net::model::{CaceNet, ForwardOptions};
use cace_net::optim::{Adam, AdamConfig, KeyedGrads};

fn variants() -> Vec<(&'static str, ModelConfig)> {
    let base = ModelConfig::default;
    let with = |f: &dyn Fn(&mut ModelConfig)| {
        let mut c = base();
        f(&mut c);
        c
    };
    vec![
        ("default", base()),
        ("temporal-lstm", with(&|c| c.temporal = TemporalKind::Lstm)),
        ("temporal-fc", with(&|c| c.temporal = TemporalKind::Fc)),
        ("temporal-snn", with(&|c| c.temporal = TemporalKind::Snn)),
        ("temporal-none", with(&|c| c.temporal = TemporalKind::None)),
        ("guide-audio", with(&|c| c.guide = Guide::AudioGuide)),
        ("guide-visual", with(&|c| c.guide = Guide::VisualGuide)),
        ("guide-none", with(&|c| c.guide = Guide::None)),
        ("bece-off", with(&|c| c.contrastive = false)),
        (
            "bece-mask",
            with(&|c| c.augmentation = Augmentation::ChannelMask),
        ),
        (
            "bece-mixup",
            with(&|c| c.augmentation = Augmentation::Mixup),
        ),
        ("bece-star", with(&|c| c.enhanced_for_category = true)),
    ]
}

fn tiny_set(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cace-variants-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = SynthConfig {
        videos: 24,
        ..SynthConfig::default()
    };
    generate(&dir, &cfg).expect("synth");
    dir
}

fn batch(dir: &Path, device: &Device) -> (Tensor<5>, Tensor<3>, Targets) {
    let data = AveDir::open(dir).unwrap();
    let rows: Vec<usize> = data
        .order(Split::Train)
        .unwrap()
        .into_iter()
        .take(8)
        .collect();
    let (mut v, mut a, mut l) = (vec![], vec![], vec![]);
    data.read_visual(&rows, &mut v).unwrap();
    data.read_audio(&rows, &mut a).unwrap();
    data.read_labels(&rows, &mut l).unwrap();
    let b = rows.len();
    (
        Tensor::from_data(TensorData::new(v, [b, 10, 7, 7, 512]), device),
        Tensor::from_data(TensorData::new(a, [b, 10, 128]), device),
        Targets::from_onehot(&l, b),
    )
}

/// Forward and backward for every variant; shapes; 8 Adam steps on one batch lower the loss.
#[test]
fn every_variant_trains_and_evaluates() {
    let dir = tiny_set("steps");
    for (name, config) in variants() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let mut model = CaceNet::new(&config, &device).unwrap();
        let (v, a, targets) = batch(&dir, &device);
        let mut adam = Adam::new(AdamConfig::default());
        let mut losses = vec![];
        for _ in 0..8 {
            let out = model.forward(v.clone(), a.clone(), ForwardOptions::bece_on());
            assert_eq!(out.is_event.dims(), [8, 10], "{name}");
            assert_eq!(out.event_scores.dims(), [8, 28], "{name}");
            assert_eq!(out.q.dims(), [8, 10, 256], "{name}");
            let terms = objective(&out, &targets, config.contrastive.then_some(1.0), 0.01);
            let loss = cace_net::to_vec(terms.total.clone())[0];
            assert!(loss.is_finite(), "{name}: loss {loss}");
            losses.push(loss);
            let mut grads = KeyedGrads::collect(&model, &terms.total.backward());
            let norm = cace_net::to_vec(grads.global_norm())[0];
            assert!(norm > 0.0, "{name}: no gradient");
            grads.clip_global_norm(0.5);
            adam.step(&mut model, &grads, 7e-4);
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(
            last < 0.9 * first,
            "{name}: loss {first} → {last} ({losses:?})"
        );

        // Evaluation mode (no autodiff): shapes and finite outputs.
        let eval = burn::module::Module::valid(&model);
        let dev = Device::flex();
        let (v, a, _) = batch(&dir, &dev);
        let out = eval.forward(v, a, ForwardOptions::bece_on());
        let p = cace_net::to_vec(out.is_event);
        assert_eq!(p.len(), 80, "{name}");
        assert!(p.iter().all(|x| x.is_finite()), "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Key and value counts of the official variants (REFERENCE §3.3).
#[test]
fn state_dict_sizes_of_the_official_variants() {
    let device = Device::flex();
    let count = |c: ModelConfig| {
        let mut m = CaceNet::new(&c, &device).unwrap();
        let list = ParamList::of(&mut m);
        (list.entries.len(), list.total())
    };
    let mut c = ModelConfig::default();
    assert_eq!(count(c.clone()), (242, 13_118_681));
    c.guide = Guide::AudioGuide;
    assert_eq!(count(c.clone()), (242, 13_118_681));
    c.guide = Guide::VisualGuide;
    assert_eq!(count(c.clone()), (234, 12_723_673));
    c.guide = Guide::None;
    assert_eq!(count(c.clone()), (190, 11_029_719));
    // Temporal swaps replace the 16 BiLSTM tensors (8 per modality) by 4 (LSTM, FC) per
    // modality; values from the shapes in REFERENCE §3.3.
    let bilstm = 2 * (4 * 128 * 128 + 4 * 128 * 128 + 2 * 4 * 128)
        + 2 * (4 * 256 * 512 + 4 * 256 * 256 + 2 * 4 * 256);
    let lstm = (1024 * 128 + 1024 * 256 + 2 * 1024) + (2048 * 512 + 2048 * 512 + 2 * 2048);
    let fc = (256 * 128 + 256) + (512 * 512 + 512);
    let mut c = ModelConfig::default();
    c.temporal = TemporalKind::Lstm;
    assert_eq!(count(c.clone()), (242 - 16 + 8, 13_118_681 - bilstm + lstm));
    c.temporal = TemporalKind::Fc;
    assert_eq!(count(c.clone()), (242 - 16 + 4, 13_118_681 - bilstm + fc));
    // SNN: fc.0 weight/bias and the batch norm's weight, bias, running mean and variance.
    c.temporal = TemporalKind::Snn;
    let snn = (256 * 128 + 256 + 4 * 256) + (512 * 512 + 512 + 4 * 512);
    assert_eq!(count(c), (242 - 16 + 12, 13_118_681 - bilstm + snn));
}

/// Runs `cace` with `args` (paths or strings).
fn cace<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_cace"))
        .args(args)
        .output()
        .expect("run cace");
    let err = String::from_utf8_lossy(&out.stderr);
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(
        !err.contains("panicked at") && !err.contains("internal error"),
        "cace {shown:?} panicked (a bug): {err}"
    );
    out
}

/// [`cace`], which must succeed; the panic shows `what` and its stderr.
fn cace_ok<S: AsRef<std::ffi::OsStr>>(what: &str, args: &[S]) -> std::process::Output {
    let out = cace(args);
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Each variant goes through `cace train --config` (one epoch) and `cace eval`.
#[test]
fn every_variant_runs_through_the_cli() {
    let dir = tiny_set("cli");
    for (name, model) in variants() {
        let run = dir.join(format!("run-{name}"));
        let cfg = dir.join(format!("{name}.json"));
        let json = serde_json::json!({"model": model, "epochs": 1, "batch_size": 8});
        std::fs::write(&cfg, json.to_string()).unwrap();
        let d = dir.as_os_str();
        let train = [
            "train".as_ref(),
            "--data".as_ref(),
            d,
            "--out".as_ref(),
            run.as_os_str(),
            "--config".as_ref(),
            cfg.as_os_str(),
        ];
        cace_ok(name, &train);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
        let acc = report["test_acc_at_best_val"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&acc), "{name}: {acc}");
        let best = run.join("best");
        let eval = [
            "eval".as_ref(),
            "--checkpoint".as_ref(),
            best.as_os_str(),
            "--data".as_ref(),
            d,
        ];
        let out = cace_ok(name, &eval);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("accuracy: "),
            "{name}"
        );
    }

    // Figures 4 and 5 from the default model's checkpoint.
    let figs = dir.join("figs");
    let best = dir.join("run-default/best");
    let figures = |videos: &str, extra: &[&str]| -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec!["figures".into(), "--checkpoint".into()];
        a.extend([best.clone().into(), "--data".into(), dir.clone().into()]);
        a.extend(["--videos".into(), videos.into()]);
        a.extend(extra.iter().map(|&x| x.into()));
        a.extend(["--out".into(), figs.clone().into()]);
        a
    };
    cace_ok("figures", &figures("0,1", &["--segments", "0,9"]));
    let (w, h) = cace_net::plot::timeline_size(2);
    for v in [0, 1] {
        let png = std::fs::read(figs.join(format!("timeline_test_{v}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let dims = (
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            u32::from_be_bytes(png[20..24].try_into().unwrap()),
        );
        assert_eq!(
            dims,
            (w, h),
            "timeline with prediction and ground-truth rows"
        );
        for kind in ["audio-guided", "self-calibration"] {
            for t in [0, 9] {
                let f = figs.join(format!("attention_{kind}_test_{v}_t{t}.png"));
                assert!(
                    std::fs::metadata(&f)
                        .map(|m| m.len() > 1000)
                        .unwrap_or(false),
                    "{f:?}"
                );
            }
        }
    }
    // A video index past the split is an error naming the split.
    let out = cace(&figures("99", &[]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("test split has"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cace profile --json`: the official parameter counts of the default and vanilla models.
#[test]
fn profile_reports_the_official_parameter_counts() {
    let out = cace_ok("profile", &["profile", "--json", "--batch", "2"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows[0]["params_total"], 11_029_719);
    assert_eq!(rows[2]["params_total"], 13_118_681);
    assert_eq!(rows[2]["params_used"], 9_283_417);
    let g = rows[2]["gflops_per_video"].as_f64().unwrap();
    assert!((1.6..1.9).contains(&g), "{g}");
    assert!(rows[0]["gflops_per_video"].as_f64().unwrap() < 0.5);
}

/// The SNN's batch-norm running statistics are trained state: updated by training forwards,
/// saved in the state dict and restored on load (an evaluation with the defaults 0 / 1 would
/// give other outputs).
#[test]
fn snn_running_statistics_round_trip_through_the_state_dict() {
    let config = ModelConfig {
        temporal: TemporalKind::Snn,
        ..ModelConfig::default()
    };
    let dir = tiny_set("snn-state");
    let train_device = Device::flex().autodiff();
    train_device.seed(3);
    let model = CaceNet::new(&config, &train_device).unwrap();
    let (v, a, _) = batch(&dir, &train_device);
    for _ in 0..2 {
        let _ = model.forward(v.clone(), a.clone(), ForwardOptions::bece_on());
    }
    let trained = burn::module::Module::valid(&model);
    let sd = cace_net::checkpoint::state_dict(&trained);
    let mean = sd
        .get("audio_visual_rnn_layer.audio_snn.fc.2.running_mean")
        .expect("running mean saved");
    assert!(
        mean.data.iter().any(|x| x.abs() > 1e-3),
        "running mean never updated"
    );
    let device = Device::flex();
    let mut fresh = CaceNet::new(&config, &device).unwrap();
    let eval = |m: &CaceNet| {
        let (v, a, _) = batch(&dir, &device);
        cace_net::to_vec(m.forward(v, a, ForwardOptions::bece_on()).is_event)
    };
    let before = eval(&fresh);
    cace_net::checkpoint::load_state_dict(&mut fresh, sd, &device, Path::new("memory")).unwrap();
    assert_eq!(eval(&fresh), eval(&trained));
    assert_ne!(before, eval(&trained));
    let _ = std::fs::remove_dir_all(&dir);
}
