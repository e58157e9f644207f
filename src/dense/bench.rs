//! `cace bench --dense DATA`: the time of one training iteration of the dense model (forward,
//! targets, losses, backward, clipping, AdamW, moving average) on a batch of real items of an
//! UnAV-layout set, and of the evaluation forward with post-processing, with the peak memory.
//! `tools/bench_dense_torch.py` times the official iteration on the same data and sizes.

use std::path::Path;

use anyhow::{Result, bail};
use burn::tensor::Device;
use serde::Serialize;

use super::data::truncate::SeededRng;
use super::data::{DenseItem, UnavDataset, UnavPaths};
use super::infer;
use super::model::DenseModel;
use super::postprocess::TestConfig;
use super::train::DenseTrainConfig;
use super::train::step::DenseTrainer;
use crate::bench::{peak_rss_mb, time};

#[derive(Debug, Clone, Serialize)]
pub struct DenseBench {
    pub batch: usize,
    pub max_seq_len: usize,
    pub step_ms: f64,
    pub ms_per_video: f64,
    /// Evaluation forward + post-processing of one batch of the same videos (untruncated).
    pub eval_ms: f64,
    pub peak_rss_mb: f64,
    pub threads: usize,
}

pub fn run(
    data: &Path,
    cfg: &DenseTrainConfig,
    reps: usize,
    device: &Device,
) -> Result<DenseBench> {
    cfg.validate()?;
    let ds = UnavDataset::open(UnavPaths::in_dir(data)?, &["train"], cfg.data.clone())?;
    if ds.len() < cfg.batch_size {
        bail!(
            "{}: {} training videos, fewer than a batch of {}",
            data.display(),
            ds.len(),
            cfg.batch_size
        );
    }
    let mut rng = SeededRng::new(0);
    let train_items = (0..cfg.batch_size)
        .map(|i| ds.train_item(i, &mut rng))
        .collect::<Result<Vec<DenseItem>, _>>()?;
    let eval_items = (0..cfg.batch_size)
        .map(|i| ds.item(i))
        .collect::<Result<Vec<DenseItem>, _>>()?;
    device.seed(cfg.seed);
    let train = device.clone().autodiff();
    let model = DenseModel::new(&cfg.model, &train)?;
    let mut trainer = DenseTrainer::new(cfg, model, &train)?;
    // The timed closures cannot return errors: each keeps its first one for after the timing.
    let mut step_result = Ok(());
    let step_s = time(1, reps, || {
        if step_result.is_ok() {
            step_result = trainer.step(&train_items, cfg.lr).map(|_| ());
        }
    });
    step_result?;
    let test = TestConfig::unav100();
    let mut eval_result = Ok(());
    let eval_s = time(1, reps, || {
        if eval_result.is_ok() {
            eval_result = infer::detect(
                &trainer.ema,
                &cfg.model,
                &eval_items,
                cfg.batch_size,
                &test,
                device,
            )
            .map(|_| ());
        }
    });
    eval_result?;
    Ok(DenseBench {
        batch: cfg.batch_size,
        max_seq_len: cfg.model.max_seq_len,
        step_ms: step_s * 1e3,
        ms_per_video: step_s * 1e3 / cfg.batch_size as f64,
        eval_ms: eval_s * 1e3,
        peak_rss_mb: peak_rss_mb(),
        threads: rayon::current_num_threads(),
    })
}
