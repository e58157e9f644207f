//! `cace bench`: speed and memory of the default model on synthetic AVE-shaped inputs
//! (deterministic, warm-up excluded, medians). Numbers go to BENCHMARKS.md with the command.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::T;
use crate::config::ModelConfig;
use crate::loss::{Targets, objective};
use crate::model::{CaceNet, ForwardOptions};
use crate::optim::{Adam, AdamConfig, KeyedGrads};

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub device: String,
    /// The thread's [`crate::precision`] while measuring.
    pub precision: String,
    pub threads: usize,
    pub batch: usize,
    /// Forward + loss + backward + global clip + Adam, batch 64.
    pub train_step_ms: f64,
    /// 3,339 training videos: ⌈3339/64⌉ steps at the measured step time plus batch assembly.
    pub epoch_s: f64,
    pub eval_batch64_ms: f64,
    /// The 402-video test split in batches of 64.
    pub eval_402_s: f64,
    /// One video, batch 1.
    pub latency_ms: f64,
    pub peak_rss_mb: f64,
    /// GFLOP/s of the dominant multiplies: `[31360, 512] × [512, 512]` and `× [512, 1536]`.
    pub matmul_gflops_512: f64,
    pub matmul_gflops_1536: f64,
    pub batch_assembly_ms: f64,
    /// Cores busy (process CPU time / wall time) during the timed training steps and the
    /// timed evaluation batches.
    pub train_cpu_util: f64,
    pub eval_cpu_util: f64,
    /// System CPU time per timed step / batch (ms): mostly the kernel zeroing pages that the
    /// allocator returned and took back (page faults).
    pub train_sys_ms: f64,
    pub eval_sys_ms: f64,
    /// Page faults per timed step / batch.
    pub train_faults: f64,
    pub eval_faults: f64,
    /// Peak RSS (MB) of the training phase and of the evaluation phase alone (the kernel's
    /// high-water mark reset before each; equal to the process peak where that fails).
    pub train_peak_rss_mb: f64,
    pub eval_peak_rss_mb: f64,
    /// Peak of the bytes live on the heap (MB) in each phase: what the tensors need, where RSS
    /// also counts what the allocator keeps for reuse ([`crate::heap`]).
    pub train_peak_heap_mb: f64,
    pub eval_peak_heap_mb: f64,
}

/// What one phase cost: median seconds, cores busy on average, system time per repetition,
/// peak RSS and peak live heap (MB).
pub struct Phase {
    pub seconds: f64,
    pub cpu_util: f64,
    pub sys_ms: f64,
    /// Page faults per repetition (one per 4 KiB page, or per 2 MiB huge page).
    pub faults: f64,
    pub peak_rss_mb: f64,
    pub peak_heap_mb: f64,
}

/// [`time`] with the phase's CPU use and its own peak memory: the high-water mark is reset
/// (`/proc/self/clear_refs`, Linux) before the warm-up and read after the last repetition.
pub fn phase<F: FnMut()>(warmup: usize, reps: usize, mut f: F) -> Phase {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    crate::heap::reset_peak();
    for _ in 0..warmup {
        f();
    }
    let ((user0, sys0, faults0), wall0) = (cpu_times(), Instant::now());
    let seconds = time(0, reps, f);
    let wall = wall0.elapsed().as_secs_f64();
    let (user, sys, faults) = cpu_times();
    Phase {
        seconds,
        cpu_util: (user + sys - user0 - sys0) / wall.max(1e-9),
        sys_ms: (sys - sys0) * 1e3 / reps.max(1) as f64,
        faults: (faults - faults0) / reps.max(1) as f64,
        peak_rss_mb: peak_rss_mb(),
        peak_heap_mb: crate::heap::peak_bytes() as f64 / (1024.0 * 1024.0),
    }
}

/// User and system CPU time of this process so far (seconds) and its minor page faults, from
/// `/proc/self/stat` (0 elsewhere).
pub fn cpu_times() -> (f64, f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0, 0.0);
    };
    // Fields after the parenthesised command name; minflt, utime and stime are the 10th, 14th
    // and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Clock ticks per second: 100 on every Linux this runs on (USER_HZ).
    (ticks(11) / 100.0, ticks(12) / 100.0, ticks(7))
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

pub fn time<F: FnMut()>(warmup: usize, reps: usize, mut f: F) -> f64 {
    for _ in 0..warmup {
        f();
    }
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Peak resident set size of this process (Linux `VmHWM`), in MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn inputs(b: usize, rng: &mut ChaCha8Rng, device: &Device) -> (Tensor<5>, Tensor<3>, Targets) {
    let v: Vec<f32> = (0..b * T * 49 * 512)
        .map(|_| rng.random::<f32>() * 0.5)
        .collect();
    let a: Vec<f32> = (0..b * T * 128).map(|_| rng.random::<f32>()).collect();
    let mut labels = vec![0f32; b * T * 29];
    for i in 0..b {
        let class = i % 28;
        for t in 0..T {
            labels[(i * T + t) * 29 + if t >= 2 && t < 8 { class } else { 28 }] = 1.0;
        }
    }
    (
        Tensor::from_data(TensorData::new(v, [b, T, 7, 7, 512]), device),
        Tensor::from_data(TensorData::new(a, [b, T, 128]), device),
        Targets::from_onehot(&labels, b),
    )
}

fn sync<const D: usize>(t: Tensor<D>) {
    let _ = t.into_data();
}

pub fn run(device: &Device, reps: usize) -> BenchResult {
    let b = 64;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    device.seed(0);
    let train_device = device.clone().autodiff();
    let mut model =
        CaceNet::new(&ModelConfig::default(), &train_device).expect("the default config is valid");
    let mut adam = Adam::new(AdamConfig::default());
    let (v, a, targets) = inputs(b, &mut rng, &train_device);
    // On the pool's threads, as training runs it ([`crate::pool`]).
    let train = phase(2, reps, || {
        crate::pool::run(|| {
            let out = model.forward(v.clone(), a.clone(), ForwardOptions::bece_on());
            let terms = objective(&out, &targets, Some(1.0), 0.01);
            let mut grads = KeyedGrads::collect(&model, &terms.total.backward());
            grads.clip_global_norm(0.5);
            adam.step(&mut model, &grads, 7e-4);
            sync(model.v_fc.weight.val());
        })
    });
    let train_step = train.seconds;

    // Batch assembly: 64 rows gathered from a contiguous buffer, as training does.
    let rows = 256;
    let store: Vec<f32> = (0..rows * T * 49 * 512).map(|i| (i % 97) as f32).collect();
    let row_len = T * 49 * 512;
    let assembly = time(1, reps, || {
        let mut buf = Vec::with_capacity(b * row_len);
        for i in 0..b {
            let r = (i * 37) % rows;
            buf.extend_from_slice(&store[r * row_len..(r + 1) * row_len]);
        }
        sync(Tensor::<5>::from_data(
            TensorData::new(buf, [b, T, 7, 7, 512]),
            &train_device,
        ));
    });

    let eval_model = model.valid();
    let evaluate = |v: &Tensor<5>, a: &Tensor<3>| {
        let out = eval_model.forward(v.clone(), a.clone(), ForwardOptions::bece_on());
        sync(out.event_scores);
    };
    let (ve, ae, _) = inputs(b, &mut rng, device);
    let eval = phase(1, reps, || evaluate(&ve, &ae));
    let eval64 = eval.seconds;
    let (v1, a1, _) = inputs(1, &mut rng, device);
    let latency = time(3, reps.max(5), || evaluate(&v1, &a1));
    let (v18, a18, _) = inputs(402 - 6 * 64, &mut rng, device);
    let last = time(1, reps, || evaluate(&v18, &a18));

    let m = 64 * T * 49;
    let x = Tensor::<2>::random([m, 512], Distribution::Uniform(0.0, 1.0), device);
    let gflops = |n: usize| {
        let w = Tensor::<2>::random([512, n], Distribution::Uniform(-0.05, 0.05), device);
        let s = time(1, reps, || {
            sync(crate::precision::linear_parts(x.clone(), w.clone(), None))
        });
        2.0 * m as f64 * 512.0 * n as f64 / s / 1e9
    };
    let (g512, g1536) = (gflops(512), gflops(1536));

    let steps = 3339usize.div_ceil(b);
    BenchResult {
        device: format!("{device:?}"),
        precision: crate::precision::current().to_string(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        batch: b,
        train_step_ms: train_step * 1e3,
        epoch_s: steps as f64 * (train_step + assembly),
        eval_batch64_ms: eval64 * 1e3,
        eval_402_s: 6.0 * eval64 + last,
        latency_ms: latency * 1e3,
        // The phases reset the kernel's high-water mark: the process peak is the largest.
        peak_rss_mb: peak_rss_mb().max(train.peak_rss_mb).max(eval.peak_rss_mb),
        matmul_gflops_512: g512,
        matmul_gflops_1536: g1536,
        batch_assembly_ms: assembly * 1e3,
        train_cpu_util: train.cpu_util,
        eval_cpu_util: eval.cpu_util,
        train_sys_ms: train.sys_ms,
        eval_sys_ms: eval.sys_ms,
        train_faults: train.faults,
        eval_faults: eval.faults,
        train_peak_rss_mb: train.peak_rss_mb,
        eval_peak_rss_mb: eval.peak_rss_mb,
        train_peak_heap_mb: train.peak_heap_mb,
        eval_peak_heap_mb: eval.peak_heap_mb,
    }
}
