//! The pieces that differ between devices, run on the device under test (`CACE_TEST_DEVICE`,
//! default `cpu`; tests/common/device.rs): dropout (a counter-based mask on the CPU, burn's
//! Bernoulli draw elsewhere), a short `cace train` / `cace eval` / `cace predict` run, and the
//! features held on the device giving the same run as batches sent from the host.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Tensor;
use cace_net::model::dropout::Dropout;
use common::device::{name, test_device};
use serde_json::Value;

/// The `cace` built with these tests, or `CACE_BIN` (binaries carried to another machine,
/// tools/gpu-check.sh).
fn cace(args: &[&str]) -> String {
    let bin = std::env::var("CACE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cace").to_string());
    let out = Command::new(bin).args(args).output().expect("run cace");
    assert!(
        out.status.success(),
        "cace {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tmp(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cace-device-{}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small synthetic set in the AVE layout (`cace synth`), small enough for a software GPU.
fn synthetic(dir: &Path, videos: usize) -> PathBuf {
    let data = dir.join("data");
    let n = videos.to_string();
    cace(&[
        "synth",
        "--out",
        s(&data),
        "--videos",
        &n,
        "--seed",
        "2",
        "--f32",
    ]);
    data
}

/// `cace train` on the test device with the config `json`; the lines of `metrics.jsonl`
/// without their timing.
fn train(data: &Path, run: &Path, json: &str) -> Vec<Value> {
    let cfg = run.with_extension("json");
    std::fs::write(&cfg, json).unwrap();
    let dev = name();
    let (data, run_s, cfg_s) = (s(data), s(run), s(&cfg));
    cace(&[
        "train", "--data", data, "--out", run_s, "--config", cfg_s, "--device", &dev,
    ]);
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
fn dropout_drops_p_scales_the_rest_and_follows_the_seed() {
    let device = test_device().autodiff();
    let d = Dropout::new(0.3);
    let n = 1 << 16;
    let draw = |seed: u64| {
        device.seed(seed);
        cace_net::to_vec(d.forward(Tensor::<2>::ones([64, n / 64], &device)))
    };
    let a = draw(11);
    let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    // Binomial: std of the fraction is sqrt(0.21 / 65536) = 1.8e-3; allow 5 std.
    assert!(
        (dropped - 0.3).abs() < 9e-3,
        "{}: dropped {dropped}",
        name()
    );
    let scale = (1.0f64 / 0.7) as f32;
    assert!(
        a.iter()
            .all(|&v| v == 0.0 || (v - scale).abs() <= 1e-6 * scale),
        "{}: values other than 0 and 1/(1 − p)",
        name()
    );
    assert_eq!(a, draw(11), "{}: same seed, different mask", name());
    assert_ne!(a, draw(12), "{}: different seeds, same mask", name());
    // Not the same mask for every row.
    assert_ne!(a[..n / 64], a[n / 64..2 * n / 64]);
    // Evaluation (no autodiff) is the identity.
    let x = Tensor::<2>::ones([4, 8], &test_device());
    assert_eq!(cace_net::to_vec(d.forward(x)), vec![1.0; 32]);
}

fn event_logits(json: &Value) -> Vec<f64> {
    json["videos"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| {
            let e = v["event_logits"].as_array().unwrap().iter();
            e.chain(v["class_logits"].as_array().unwrap())
                .map(|x| x.as_f64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn one_epoch_train_then_eval_and_predict_agree_with_the_cpu() {
    let dir = tmp("train");
    let data = synthetic(&dir, 24);
    let run = dir.join("run");
    let dev = name();
    let m = &train(&data, &run, r#"{"epochs": 1, "batch_size": 8, "seed": 5}"#)[0];
    let loss = m["train_loss"].as_f64().unwrap();
    // Four cross-entropy / BCE terms of a fresh model: about ln 2 + ln 28 + 0.7 + ln 28.
    assert!(loss.is_finite() && loss > 1.0 && loss < 20.0, "{dev}: {m}");
    assert!(m["grad_norm_mean"].as_f64().unwrap() > 0.0, "{dev}: {m}");
    assert!(m["test_acc"].as_f64().is_some(), "{dev}: {m}");

    let ckpt = run.join("best");
    let eval = cace(&[
        "eval",
        "--checkpoint",
        s(&ckpt),
        "--data",
        s(&data),
        "--device",
        &dev,
    ]);
    assert!(eval.contains("accuracy:"), "{eval}");

    // The trained checkpoint gives the same outputs here as on the CPU (f32 tolerance).
    let predict = |device: &str| -> Value {
        let out = dir.join(format!("pred-{}.json", device.replace(':', "_")));
        cace(&[
            "predict",
            "--checkpoint",
            s(&ckpt),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--device",
            device,
        ]);
        serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
    };
    let (here, cpu) = (event_logits(&predict(&dev)), event_logits(&predict("cpu")));
    assert_eq!(here.len(), cpu.len());
    assert!(!here.is_empty());
    for (i, (a, b)) in here.iter().zip(&cpu).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 + 1e-4 * b.abs(),
            "{dev}: logit {i} is {a}, on the CPU {b}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn features_on_the_device_give_the_same_run_as_batches_from_the_host() {
    let dir = tmp("resident");
    let data = synthetic(&dir, 16);
    let dev = name();
    let metrics = |on_device: bool| {
        let json = format!(
            r#"{{"epochs": 2, "batch_size": 5, "bece_start_epoch": 1, "seed": 9, "features_on_device": {on_device}}}"#
        );
        train(&data, &dir.join(format!("run-{on_device}")), &json)
    };
    let (host, device) = (metrics(false), metrics(true));
    assert_eq!(host.len(), 2);
    assert_eq!(host[1]["bece_on"], true);
    if cace_net::device::is_flex(&test_device()) {
        // The CPU is deterministic: the same run to the last bit.
        assert_eq!(host, device);
    } else {
        // GPU kernels may reduce in a different order from run to run (seen on wgpu: losses
        // equal to 1e-8 relative): the same run within f32 rounding.
        close(&host, &device, &dev);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Equal structure and values, numbers within 1e-5 relative (1e-6 absolute near 0).
fn close(a: &[Value], b: &[Value], what: &str) {
    fn walk(a: &Value, b: &Value, path: &str) {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!((x - y).abs() <= 1e-6 + 1e-5 * x.abs(), "{path}: {x} vs {y}");
            }
            (Value::Object(x), Value::Object(y)) => {
                assert_eq!(
                    x.keys().collect::<Vec<_>>(),
                    y.keys().collect::<Vec<_>>(),
                    "{path}"
                );
                for (k, v) in x {
                    walk(v, &y[k], &format!("{path}.{k}"));
                }
            }
            _ => assert_eq!(a, b, "{path}"),
        }
    }
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        walk(x, y, &format!("{what}: epoch {i}"));
    }
}

/// bf16 where the device has it (the CPU with AVX512-BF16, CUDA, ROCm), refused with a reason
/// elsewhere (wgpu: no bf16 type in its shaders). Where it runs: a linear layer's output and
/// gradients are the f32 ones to bf16's precision, and the gradients stay f32; one epoch of
/// `cace train` in bf16 ends with a loss within 0.1 % of the f32 run's, not equal to it.
#[test]
fn bf16_runs_where_the_device_has_it_and_is_refused_elsewhere() {
    use burn::tensor::{DType, TensorData};
    use cace_net::precision::{self, Precision, gemm_bf16};
    let (device, dev) = (test_device(), name());
    let expected = if cace_net::device::is_flex(&device) {
        gemm_bf16::available()
    } else {
        cace_net::device::has_bf16(&device)
    };
    let checked = precision::check(Precision::Bf16, &device);
    assert_eq!(checked.is_ok(), expected, "{dev}: {checked:?}");
    if let Err(e) = checked {
        assert!(e.to_string().contains("--precision bf16"), "{dev}: {e}");
        return;
    }

    // Inputs made here, not drawn from the device's generator, which the dropout test seeds
    // and draws from at the same time on another thread.
    let ad = device.autodiff();
    let wave = |[m, n]: [usize; 2], seed: f32| {
        let v = (0..m * n)
            .map(|i| (i as f32 * 0.7548 + seed).sin() * 1.7)
            .collect();
        Tensor::<2>::from_data(TensorData::new(v, [m, n]), &ad)
    };
    let (x, w, r) = (
        wave([64, 45], 0.1),
        wave([45, 30], 0.2),
        wave([64, 30], 0.3),
    );
    let run = |p: Precision| {
        let _scope = precision::scope(p);
        let (x, w) = (x.clone().require_grad(), w.clone().require_grad());
        let y = precision::linear_parts(x.clone(), w.clone(), None);
        let grads = (y.clone() * r.clone()).sum().backward();
        let (gx, gw) = (x.grad(&grads).unwrap(), w.grad(&grads).unwrap());
        assert_eq!([gx.dtype(), gw.dtype()], [DType::F32; 2], "{dev} {p}");
        [y.inner(), gx, gw].map(cace_net::to_vec)
    };
    let (bf16, f32) = (run(Precision::Bf16), run(Precision::F32));
    // Each product's operands are off by ≤ 2⁻⁹ relative, so a sum by ≤ 2⁻⁸·Σ|a||b| (and a
    // GPU rounds the output to bf16: 2⁻⁹·|y|). The bound from the same products of |a|, |b|.
    let (ax, aw, ar) = (x.abs().inner(), w.abs().inner(), r.abs().inner());
    let sums = [
        ax.clone().matmul(aw.clone()),
        ar.clone().matmul(aw.transpose()),
        ax.transpose().matmul(ar),
    ];
    for (what, ((b, f), s)) in ["y", "dx", "dW"]
        .iter()
        .zip(bf16.iter().zip(&f32).zip(sums))
    {
        let s = cace_net::to_vec(s);
        let within =
            |i: usize| (b[i] - f[i]).abs() <= 1.01 * (s[i] / 256.0 + f[i].abs() / 512.0) + 1e-4;
        assert!(
            (0..b.len()).all(within),
            "{dev} {what}: bf16 off the f32 values by more than the rounding"
        );
        assert_ne!(b, f, "{dev} {what}: bf16 gave the f32 values");
    }

    let dir = tmp("bf16");
    let data = synthetic(&dir, 24);
    let loss = |precision: &str| {
        let json =
            format!(r#"{{"epochs": 1, "batch_size": 8, "seed": 5, "precision": "{precision}"}}"#);
        train(&data, &dir.join(precision), &json)[0]["train_loss"]
            .as_f64()
            .unwrap()
    };
    let (b, f) = (loss("bf16"), loss("f32"));
    // Measured on the CPU: 5.10263 and 5.10270 (1.4e-5 apart).
    assert!(
        b != f && (b - f).abs() < 1e-3 * f,
        "{dev}: train loss {b} in bf16, {f} in f32"
    );
    let _ = std::fs::remove_dir_all(dir);
}
