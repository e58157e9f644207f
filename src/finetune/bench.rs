//! `cace bench --finetune ENCODER`: the time of one fine-tuning step (forward of a share's
//! frames, InfoNCE, backward, SGD) and of the evaluation-mode forward, on random weights and
//! inputs (speed does not depend on the values), with the peak memory of the process.
//! `tools/bench_finetune_torch.py` measures the official PyTorch step with the same sizes.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use super::backbone::{BackboneConfig, BackboneKind};
use super::clip::{ClipConfig, symmetric_info_nce};
use crate::T;
use crate::bench::{peak_rss_mb, phase};
use crate::encoders::image::INPUT_SIZE;
use crate::optim::{KeyedGrads, Sgd, SgdConfig};

#[derive(Debug, Clone, Serialize)]
pub struct FinetuneBench {
    pub encoder: BackboneKind,
    /// Videos per share (10 frames each).
    pub videos: usize,
    pub step_ms: f64,
    /// Training throughput: step time per video (10 frames).
    pub ms_per_video: f64,
    /// Evaluation-mode forward of the share (what the held-out retrieval costs).
    pub eval_ms: f64,
    /// Cores busy (CPU time / wall time), system time and page faults per repetition, for
    /// the steps and for the evaluation forwards.
    pub step_cpu_util: f64,
    pub step_sys_ms: f64,
    pub step_faults: f64,
    pub eval_cpu_util: f64,
    pub eval_sys_ms: f64,
    pub eval_faults: f64,
    pub peak_rss_mb: f64,
    pub threads: usize,
}

pub fn run(kind: BackboneKind, videos: usize, reps: usize, device: &Device) -> FinetuneBench {
    device.seed(0);
    let train = device.clone().autodiff();
    let mut model = ClipConfig::new(BackboneConfig::real(kind)).init(&train);
    let mut sgd = Sgd::new(SgdConfig::default());
    let images = |d: &Device| {
        Tensor::<5>::random(
            [videos, T, 3, INPUT_SIZE, INPUT_SIZE],
            Distribution::Normal(0.0, 1.0),
            d,
        )
    };
    let audio =
        |d: &Device| Tensor::<3>::random([videos, T, 128], Distribution::Normal(0.0, 1.0), d);
    // On the pool's threads, as `cace finetune` runs it ([`crate::pool`]).
    let step = phase(1, reps, || {
        crate::pool::run(|| {
            let e = model.embed(images(&train), audio(&train));
            let loss = symmetric_info_nce(model.logits(&e));
            let grads = KeyedGrads::collect(&model, &loss.backward());
            sgd.step(&mut model, &grads, 1e-3);
            let _ = crate::to_vec(model.alignment_a.val());
        })
    });
    let valid = model.valid();
    let eval = phase(1, reps, || {
        crate::pool::run(|| {
            let e = valid.embed(images(device), audio(device));
            let _ = crate::to_vec(e.image);
        })
    });
    FinetuneBench {
        encoder: kind,
        videos,
        step_ms: step.seconds * 1e3,
        ms_per_video: step.seconds * 1e3 / videos as f64,
        eval_ms: eval.seconds * 1e3,
        step_cpu_util: step.cpu_util,
        step_sys_ms: step.sys_ms,
        step_faults: step.faults,
        eval_cpu_util: eval.cpu_util,
        eval_sys_ms: eval.sys_ms,
        eval_faults: eval.faults,
        // The phases reset the kernel's high-water mark: the process peak is the largest.
        peak_rss_mb: peak_rss_mb().max(step.peak_rss_mb).max(eval.peak_rss_mb),
        threads: rayon::current_num_threads(),
    }
}
