//! `cace dense train --data DIR --out RUN [--epochs E] [--seed S] [--config JSON] [--resume]`.

use std::path::PathBuf;

use anyhow::Result;
use cace_net::dense::checkpoint::Weights;
use cace_net::dense::train::{DenseTrainConfig, DenseTrainOptions, train};

use super::super::args::DeviceArg;
use super::super::train::run_config;

#[derive(clap::Args)]
pub struct Args {
    /// UnAV-layout folder: `annotations/unav100_annotations.json` and `av_features/`.
    #[arg(long)]
    data: PathBuf,
    /// Run directory (train_config.json, metrics.jsonl, curves.png, best/, last/, report.json).
    #[arg(long)]
    out: PathBuf,
    /// Epochs of the cosine schedule after the warm-up epochs [default: 40; the official run
    /// has 5 warm-up epochs more].
    #[arg(long)]
    epochs: Option<usize>,
    /// Seed of the initialisation, shuffles, crops and drop path [default: 1234567891].
    #[arg(long)]
    seed: Option<u64>,
    /// Settings as JSON (fields of `DenseTrainConfig`: `model`, `data`, `epochs`,
    /// `warmup_epochs`, `batch_size`, `lr`, …; the options above override them).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Weights scored each epoch and selected on validation: the moving average (as the
    /// official eval.py) or the weights as trained.
    #[arg(long, value_enum, default_value = "ema")]
    eval_weights: Weights,
    #[command(flatten)]
    device: DeviceArg,
    /// Continue the run saved in `--out`.
    #[arg(long)]
    resume: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut config = run_config(
        a.config.as_ref(),
        &a.out,
        a.resume,
        "dense training config",
        DenseTrainConfig::default,
    )?;
    config.epochs = a.epochs.unwrap_or(config.epochs);
    config.seed = a.seed.unwrap_or(config.seed);
    let r = train(&DenseTrainOptions {
        data: a.data,
        out: a.out.clone(),
        config,
        resume: a.resume,
        eval_weights: a.eval_weights,
        device: a.device.get()?,
        verbose: true,
    })?;
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} %"));
    match r.best_epoch {
        Some(e) => println!(
            "selected epoch {} on validation: val average mAP {}, test average mAP {}",
            e + 1,
            pct(r.val_map),
            pct(r.test_map)
        ),
        None => println!("no validation videos: nothing selected; the last epoch is in best/"),
    }
    println!(
        "checkpoint: {} (cace dense eval --checkpoint {} --data DIR)",
        a.out.join("best").display(),
        a.out.display()
    );
    Ok(())
}
