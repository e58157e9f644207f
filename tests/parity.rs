//! Parity with the official implementation on `../shared/golden` (REFERENCE §2–§4, golden
//! README): same weights, same inputs → same outputs, activations, losses, gradients and one
//! optimiser step. Tolerances are the golden README's advice for an f32 port of the f64
//! reference (§4 there), each stated where it is used; they are the same on every device.
//!
//! The device under test is `CACE_TEST_DEVICE` (default `cpu`; e.g. `wgpu`, `cuda` in builds
//! with those features; tests/common/device.rs).

mod common;

use std::sync::OnceLock;

use burn::tensor::{Device, Tensor, TensorData};
use cace_net::checkpoint::{self, StateDict};
use cace_net::config::ModelConfig;
use cace_net::loss::{Targets, objective};
use cace_net::metric::{Accuracy, predict};
use cace_net::model::state::{Layout, ParamList};
use cace_net::model::{CaceNet, CaceOutput, ForwardOptions, Trace};
use cace_net::optim::{Adam, AdamConfig, KeyedGrads};
use common::device::test_device;
use common::golden::{G, assert_close, checkpoint as golden_ckpt, golden};

const B: usize = 3;

fn state() -> &'static StateDict {
    static SD: OnceLock<StateDict> = OnceLock::new();
    SD.get_or_init(|| checkpoint::read_official(&golden_ckpt()).expect("read official checkpoint"))
}

fn model(config: &ModelConfig, device: &Device) -> CaceNet {
    let mut m = CaceNet::new(config, device).unwrap();
    checkpoint::load_state_dict(&mut m, state().clone(), device, &golden_ckpt())
        .expect("load golden weights");
    m
}

fn tensor<const D: usize>(name: &str, device: &Device) -> Tensor<D> {
    let (shape, data) = golden().f32(name);
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// Golden inputs; the noise is stored sequence-first `[T, B, d]`.
fn inputs(device: &Device) -> (Tensor<5>, Tensor<3>, Tensor<3>) {
    let noise: Tensor<3> = tensor("input/aug_noise", device);
    (
        tensor("input/visual", device),
        tensor("input/audio", device),
        noise.swap_dims(0, 1),
    )
}

fn run(m: &CaceNet, device: &Device, trace: &mut Trace) -> CaceOutput {
    let (v, a, noise) = inputs(device);
    m.forward_traced(
        v,
        a,
        ForwardOptions {
            bece_on: true,
            noise: Some(noise),
        },
        trace,
    )
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Golden tensor in batch-first layout (sequence-first ones have shape `[10, 3, ...]`).
fn batch_first(name: &str) -> G {
    let g = golden().get(name);
    if g.shape.len() >= 2 && g.shape[0] == 10 && g.shape[1] == B {
        g.batch_first()
    } else {
        g
    }
}

fn labels() -> Targets {
    let (_, l) = golden().f32("input/labels");
    Targets::from_onehot(&l, B)
}

#[test]
#[cfg_attr(
    golden_absent,
    ignore = "golden vectors absent: set CACE_GOLDEN_DIR or provide ../shared/golden"
)]
fn eval_outputs_match_official() {
    let device = test_device();
    let m = model(&ModelConfig::default(), &device);
    let out = run(&m, &device, &mut Trace::off());
    // f32 vs f64 reference: measured max abs 7e-7 in PyTorch f32; README advises atol 1e-5, rtol 1e-4.
    let (atol, rtol) = (1e-5, 1e-4);
    for (name, t) in [
        ("out/is_event_scores", values(&out.is_event)),
        ("out/event_scores", values(&out.event_scores)),
        ("out/audio_visual_gate", values(&out.gate)),
        ("out/av_score", values(&out.av_score)),
        ("out/q", values(&out.q)),
        ("out/k", values(&out.k)),
    ] {
        let g64 = batch_first(&name.replace("out/", "out64/"));
        assert_close(name, &t, &g64.data, atol, rtol);
    }

    // pred and accuracy exactly (smallest |logit| 0.0028 and class gap 0.090 leave f32 room).
    let pred = predict(&values(&out.is_event), &values(&out.event_scores), B);
    let gpred: Vec<usize> = golden()
        .get("out/pred")
        .data
        .iter()
        .map(|&x| x as usize)
        .collect();
    assert_eq!(pred, gpred, "pred");
    let targets = labels();
    let gtarget: Vec<usize> = golden()
        .get("out/target")
        .data
        .iter()
        .map(|&x| x as usize)
        .collect();
    assert_eq!(targets.segment, gtarget, "target");
    let mut acc = Accuracy::default();
    acc.update(&pred, &targets.segment);
    assert_eq!(
        acc.percent().unwrap(),
        golden().scalar("out/accuracy"),
        "accuracy"
    );
}

#[test]
#[cfg_attr(
    golden_absent,
    ignore = "golden vectors absent: set CACE_GOLDEN_DIR or provide ../shared/golden"
)]
fn every_activation_matches_official() {
    let device = test_device();
    let m = model(&ModelConfig::default(), &device);
    let mut trace = Trace::on();
    run(&m, &device, &mut trace);
    let mut compared = 0;
    let mut missing = Vec::new();
    for name in golden()
        .names()
        .into_iter()
        .filter(|n| n.starts_with("act/"))
    {
        // act/NN_<path>: NN is the hook order, the rest our trace name.
        let ours = &name["act/".len() + 3..];
        let Some(data) = trace.get(ours) else {
            missing.push(name.clone());
            continue;
        };
        let actual = data.clone().convert::<f32>().try_to_vec::<f32>().unwrap();
        // f32 port: measured max abs 5e-6 (after the interaction LayerNorms); README advises atol 2e-5, rtol 1e-4.
        assert_close(&name, &actual, &batch_first(&name).data, 2e-5, 1e-4);
        compared += 1;
    }
    assert!(missing.is_empty(), "activations not traced: {missing:?}");
    assert_eq!(compared, 80, "all 80 golden activations compared");
}

/// Train-mode pass with dropout off, as the golden losses were recorded (golden README §2.4).
fn train_pass(device: &Device) -> (CaceNet, cace_net::loss::LossTerms) {
    let m = model(&ModelConfig::default().without_dropout(), device);
    let out = run(&m, device, &mut Trace::off());
    let terms = objective(&out, &labels(), Some(1.0), 0.01);
    (m, terms)
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().into_scalar::<f32>() as f64
}

#[test]
#[cfg_attr(
    golden_absent,
    ignore = "golden vectors absent: set CACE_GOLDEN_DIR or provide ../shared/golden"
)]
fn loss_terms_match_official() {
    let device = test_device();
    let (_, terms) = train_pass(&device);
    // README: f32 losses agree to 2e-7 relative; the issue asks for 1e-5.
    for (name, value) in [
        ("loss/loss_is_event", scalar(&terms.is_event)),
        ("loss/loss_event_class", scalar(&terms.event_class)),
        ("loss/loss_gate", scalar(&terms.gate)),
        ("loss/loss_cas", scalar(&terms.cas)),
        (
            "loss/loss_contrastive",
            scalar(terms.contrastive.as_ref().unwrap()),
        ),
        ("loss/total", scalar(&terms.total)),
    ] {
        let g = golden().scalar(name);
        assert!(
            ((value - g) / g).abs() < 1e-5,
            "{name}: {value} vs golden {g}"
        );
    }
}

/// Gradient of `key` in PyTorch layout.
fn torch_layout(grads: &KeyedGrads, layouts: &ParamList, key: &str) -> Option<Vec<f32>> {
    let g = values(grads.get(key)?);
    let (_, _, shape) = layouts.entries.iter().find(|(k, ..)| k == key).unwrap();
    Some(
        if shape.len() == 2 && layout_of(key) == Layout::Transposed {
            let (rows, cols) = (shape[0], shape[1]); // torch [out, in]; ours [in, out]
            let mut t = vec![0.0; g.len()];
            for i in 0..cols {
                for o in 0..rows {
                    t[o * cols + i] = g[i * rows + o];
                }
            }
            t
        } else {
            g
        },
    )
}

/// Every 2-D parameter of this model is a PyTorch `[out, in]` matrix stored transposed.
fn layout_of(_key: &str) -> Layout {
    Layout::Transposed
}

/// The four key biases whose true gradient is 0 (softmax shift invariance): f64 norms are
/// 1e-19..1e-17, f32 noise is up to 4e-9 (golden README §4).
const ZERO_GRAD_BIASES: [&str; 4] = [
    "spatial_channel_att.video_key.bias",
    "spatial_channel_att.video_key2.bias",
    "spatial_channel_att.audio_key.bias",
    "spatial_channel_att.vaudio_key.bias",
];

fn keys() -> Vec<String> {
    let text = std::fs::read_to_string(common::golden::dir().join("grad_norm_keys.json")).unwrap();
    let keys: Vec<String> = serde_json::from_str(&text).unwrap();
    keys.into_iter()
        .map(|k| k.trim_start_matches("module.").to_string())
        .collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

#[test]
#[cfg_attr(
    golden_absent,
    ignore = "golden vectors absent: set CACE_GOLDEN_DIR or provide ../shared/golden"
)]
fn gradients_and_adam_step_match_official() {
    let device = test_device().autodiff();
    let (mut m, terms) = train_pass(&device);
    let mut grads = KeyedGrads::collect(&m, &terms.total.backward());
    let layouts = ParamList::of(&mut m.clone());
    let keys = keys();
    assert_eq!(
        layouts
            .entries
            .iter()
            .map(|e| e.0.clone())
            .collect::<Vec<_>>(),
        keys,
        "state-dict order"
    );

    // Which parameters get a gradient: exactly the 172 the official autograd reaches.
    let is_none = golden().get("grad_is_none").data;
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            grads.get(key).is_none(),
            is_none[i] == 1.0,
            "{key}: gradient presence differs from the official run"
        );
    }

    // Per-parameter norms: README measured ≤ 1.8e-4 relative in f32 for norms > 1e-6; check 1e-3.
    let norms = golden().get("grad_norms").data;
    let mut checked = 0;
    for (i, key) in keys.iter().enumerate() {
        let Some(g) = torch_layout(&grads, &layouts, key) else {
            continue;
        };
        let n = norm(&g);
        if ZERO_GRAD_BIASES.contains(&key.as_str()) {
            assert!(
                n < 1e-8,
                "{key}: gradient norm {n:e} should be ~0 (f32 noise ≤ 4e-9)"
            );
        } else if norms[i] > 1e-6 {
            assert!(
                ((n - norms[i]) / norms[i]).abs() < 1e-3,
                "{key}: grad norm {n} vs golden {}",
                norms[i]
            );
            checked += 1;
        } else {
            assert!(
                (n - norms[i]).abs() < 1e-8,
                "{key}: grad norm {n:e} vs golden {:e}",
                norms[i]
            );
        }
    }
    assert!(checked >= 160, "only {checked} gradient norms compared");

    // Full gradients: README measured max|diff|/max|g| ≤ 2e-5; check atol 1e-4·max|g|.
    for name in golden()
        .names()
        .into_iter()
        .filter(|n| n.starts_with("grad/"))
    {
        let key = name["grad/module.".len()..].to_string();
        let g = golden().get(&name);
        let ours =
            torch_layout(&grads, &layouts, &key).unwrap_or_else(|| panic!("{key}: no gradient"));
        let max = g.data.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert_close(&name, &ours, &g.data, 1e-4 * max, 0.0);
    }

    // Global norm before clipping (clip_grad_norm_ return value).
    let before = m.clone();
    let global = scalar(&grads.clip_global_norm(0.5));
    let g_global = golden().scalar("global_grad_norm");
    assert!(
        ((global - g_global) / g_global).abs() < 1e-4,
        "global grad norm {global} vs {g_global}"
    );

    // One Adam step (lr 7e-4, betas 0.9/0.999, eps 1e-8) after clipping.
    let mut adam = Adam::new(AdamConfig::default());
    adam.step(&mut m, &grads, 7e-4);
    let old = checkpoint::state_dict(&before);
    let new = checkpoint::state_dict(&m);
    let update_norms = golden().get("update_norms").data;
    for (i, key) in keys.iter().enumerate() {
        let (a, b) = (&old.get(key).unwrap().data, &new.get(key).unwrap().data);
        let diff: Vec<f32> = a.iter().zip(b.iter()).map(|(x, y)| y - x).collect();
        let n = norm(&diff);
        if ZERO_GRAD_BIASES.contains(&key.as_str()) {
            // Adam turns f32 noise of a zero gradient into steps of ~4e-6 (README §4).
            assert!(n < 1e-5, "{key}: update norm {n:e}");
        } else if update_norms[i] == 0.0 {
            assert_eq!(n, 0.0, "{key}: a parameter without gradient moved");
        } else {
            assert!(
                ((n - update_norms[i]) / update_norms[i]).abs() < 1e-3,
                "{key}: update norm {n} vs golden {}",
                update_norms[i]
            );
        }
    }
    for name in golden()
        .names()
        .into_iter()
        .filter(|n| n.starts_with("after_step/"))
    {
        let key = &name["after_step/module.".len()..];
        let g = golden().get(&name);
        // Values ~0.06 moved by ~7e-4: f32 rounding of the value itself is ~4e-9.
        assert_close(&name, &new.get(key).unwrap().data, &g.data, 1e-6, 1e-5);
    }
}

#[test]
#[cfg_attr(
    golden_absent,
    ignore = "golden vectors absent: set CACE_GOLDEN_DIR or provide ../shared/golden"
)]
fn parameter_counts_match_table_s6() {
    let mut m = model(&ModelConfig::default(), &test_device());
    let list = ParamList::of(&mut m);
    assert_eq!(list.entries.len(), 242);
    assert_eq!(list.total(), 13_118_681);
    assert_eq!(list.used(), 9_283_417);
    assert_eq!(state().numel(), 13_118_681);
}
