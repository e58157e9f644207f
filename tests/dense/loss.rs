//! Dense (UnAV-100) training targets and losses equal the official code.
//!
//! `tests/fixtures/dense/loss_golden.safetensors` comes from `tools/make_dense_loss_golden.py`:
//! the official point generator, `label_points` (class-aware and class-agnostic) for two videos
//! with overlapping events, and `PtTransformer.losses` for two consecutive steps (the loss
//! normaliser's EMA carries over) and with automatic weighting, plus the gradients of the
//! final loss with respect to the logits and offsets.
//!
//! Tolerances: points and targets are exact up to 1 ulp-level 1e-6 (the same f32 operations);
//! losses 1e-5 relative (sums of ~1500 f32 terms in a different order); gradients 1e-5
//! relative to the largest gradient magnitude.

use crate::common;

use std::collections::HashMap;

use burn::tensor::{Device, Tensor, TensorData};
use cace_net::dense::model::DenseModelConfig;
use cace_net::dense::model::labels::label_points;
use cace_net::dense::model::losses::{LossNormalizer, dense_losses};
use cace_net::to_vec;

const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dense/loss_golden.safetensors"
);

struct Golden {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    num_classes: usize,
    max_seq_len: usize,
    levels: usize,
    init_norm: f64,
}

fn golden() -> Golden {
    let (tensors, meta) = common::golden::read_all(std::path::Path::new(FILE));
    let config: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
    Golden {
        tensors,
        num_classes: config["num_classes"].as_u64().unwrap() as usize,
        max_seq_len: config["max_seq_len"].as_u64().unwrap() as usize,
        levels: config["regression_range"].as_array().unwrap().len(),
        init_norm: config["init_loss_norm"].as_f64().unwrap(),
    }
}

impl Golden {
    fn get(&self, key: &str) -> &(Vec<usize>, Vec<f32>) {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("golden tensor {key} missing"))
    }

    fn tensor<const D: usize>(&self, key: &str, device: &Device) -> Tensor<D> {
        let (shape, data) = self.get(key).clone();
        Tensor::from_data(TensorData::new(data, shape), device)
    }

    fn config(&self) -> DenseModelConfig {
        DenseModelConfig {
            num_classes: self.num_classes,
            max_seq_len: self.max_seq_len,
            ..DenseModelConfig::default()
        }
    }

    fn points(&self) -> Vec<f32> {
        (0..self.levels)
            .flat_map(|l| self.get(&format!("points.{l}")).1.clone())
            .collect()
    }

    fn gt(&self, b: usize) -> (Vec<[f32; 2]>, Vec<usize>) {
        let segs = self.get(&format!("gt.{b}.segments")).1.clone();
        let labels = self.get(&format!("gt.{b}.labels")).1.clone();
        (
            segs.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
            labels.iter().map(|&x| x as usize).collect(),
        )
    }
}

fn close(what: &str, ours: &[f32], reference: &[f32], tol: f64) -> f64 {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let scale = reference
        .iter()
        .fold(1e-12f64, |m, &x| m.max((x as f64).abs()));
    let mut worst = 0f64;
    for (i, (&a, &b)) in ours.iter().zip(reference).enumerate() {
        let e = (a as f64 - b as f64).abs() / scale;
        assert!(
            e <= tol,
            "{what}[{i}]: ours {a} vs official {b} ({e:.3e} > {tol:.0e})"
        );
        worst = worst.max(e);
    }
    worst
}

#[test]
fn points_and_targets_equal_official() {
    let device = common::device::test_device();
    let g = golden();
    let generator = g.config().point_generator().unwrap();
    let pts = generator.points(0, true, &device).unwrap();
    for (l, p) in pts.into_iter().enumerate() {
        assert_eq!(
            &to_vec(p),
            &g.get(&format!("points.{l}")).1,
            "points level {l}"
        );
    }
    let points = g.points();
    for (name, aware) in [("aware", true), ("agnostic", false)] {
        for b in 0..2 {
            let (segs, labels) = g.gt(b);
            let t = label_points(&points, &segs, &labels, g.num_classes, aware);
            let (_, cls) = g.get(&format!("target.{name}.{b}.cls"));
            assert_eq!(&t.cls, cls, "{name} video {b} class targets");
            let (_, reg) = g.get(&format!("target.{name}.{b}.reg"));
            close(
                &format!("{name} video {b} regression targets"),
                &t.reg,
                reg,
                1e-6,
            );
        }
    }
    // No events: all-zero targets.
    let t = label_points(&points, &[], &[], 4, true);
    assert!(t.cls.iter().chain(&t.reg).all(|&x| x == 0.0));
}

fn gt_stacked(g: &Golden, device: &Device) -> (Tensor<3>, Tensor<4>) {
    let points = g.points();
    let ft = points.len() / 4;
    let c = g.num_classes;
    let mut cls = Vec::new();
    let mut reg = Vec::new();
    for b in 0..2 {
        let (segs, labels) = g.gt(b);
        let t = label_points(&points, &segs, &labels, c, true);
        cls.extend(t.cls);
        reg.extend(t.reg);
    }
    (
        Tensor::from_data(TensorData::new(cls, [2, ft, c]), device),
        Tensor::from_data(TensorData::new(reg, [2, ft, c, 2]), device),
    )
}

fn inputs(
    g: &Golden,
    k: &str,
    device: &Device,
) -> (Vec<Tensor<3>>, Vec<Tensor<4>>, Vec<Tensor<2>>) {
    let cls = (0..g.levels)
        .map(|l| g.tensor(&format!("in.{k}.cls.{l}"), device))
        .collect();
    let off = (0..g.levels)
        .map(|l| g.tensor(&format!("in.{k}.off.{l}"), device))
        .collect();
    let masks = (0..g.levels)
        .map(|l| g.tensor(&format!("mask.{l}"), device))
        .collect();
    (cls, off, masks)
}

#[test]
fn losses_and_gradients_equal_official() {
    let device = common::device::test_device().autodiff();
    let g = golden();
    let mut normalizer = LossNormalizer::new(g.init_norm);
    let mut worst = 0f64;
    for k in ["0", "1"] {
        let (gt_cls, gt_off) = gt_stacked(&g, &device);
        let (cls, off, masks) = inputs(&g, k, &device);
        let cls: Vec<Tensor<3>> = cls.into_iter().map(|x| x.require_grad()).collect();
        let off: Vec<Tensor<4>> = off.into_iter().map(|x| x.require_grad()).collect();
        let losses = dense_losses(
            &cls,
            &off,
            &masks,
            gt_cls,
            gt_off,
            &mut normalizer,
            1.0,
            0.0,
        );
        let want = |n: &str| g.get(&format!("loss.{k}.{n}")).1.clone();
        assert_eq!(
            normalizer.value as f32,
            want("normalizer")[0],
            "step {k} normaliser"
        );
        for (n, t) in [
            ("cls", &losses.cls),
            ("reg", &losses.reg),
            ("final", &losses.total),
        ] {
            worst = worst.max(close(
                &format!("step {k} {n} loss"),
                &to_vec(t.clone()),
                &want(n),
                1e-5,
            ));
        }
        let grads = losses.total.backward();
        for l in 0..g.levels {
            let gc = cls[l].grad(&grads).expect("logit gradient");
            let (_, want) = g.get(&format!("grad.{k}.cls.{l}"));
            close(
                &format!("step {k} d/dlogits level {l}"),
                &to_vec(gc),
                want,
                1e-5,
            );
            let go = off[l].grad(&grads).expect("offset gradient");
            let (_, want) = g.get(&format!("grad.{k}.off.{l}"));
            close(
                &format!("step {k} d/doffsets level {l}"),
                &to_vec(go),
                want,
                1e-5,
            );
        }
    }
    eprintln!("worst relative loss error {worst:.3e}");

    // Automatic weighting (weight ≤ 0), fresh normaliser, step-0 inputs.
    let device = common::device::test_device();
    let (gt_cls, gt_off) = gt_stacked(&g, &device);
    let (cls, off, masks) = inputs(&g, "0", &device);
    let mut normalizer = LossNormalizer::new(g.init_norm);
    let losses = dense_losses(
        &cls,
        &off,
        &masks,
        gt_cls,
        gt_off,
        &mut normalizer,
        -1.0,
        0.0,
    );
    for (n, t) in [
        ("cls", &losses.cls),
        ("reg", &losses.reg),
        ("final", &losses.total),
    ] {
        close(
            &format!("auto {n} loss"),
            &to_vec(t.clone()),
            &g.get(&format!("loss.auto.{n}")).1,
            1e-5,
        );
    }
}
