//! Training of the dense model (official UnAV `train.py`): AdamW (lr 1e-4, weight decay 1e-4
//! on the weights of linear layers and convolutions only), a linear warm-up of 5 epochs then a
//! cosine over 40, per iteration; batch 16 of videos truncated to 224 snippets; gradients
//! clipped at norm 1; a moving average of the weights (decay 0.999), which evaluation uses.
//!
//! The run directory is the one of `cace train` ([`crate::train::run_dir`]): `metrics.jsonl`
//! (losses, learning rate, val and test mAP per epoch), `curves.png`, `best/` (selected on
//! the validation average mAP: the honest protocol), atomic `last/`, `--resume`, and
//! `report.json`. Checkpoints: [`crate::dense::checkpoint`].
//!
//! Where this differs from the official loop: videos are shuffled and cropped with our own
//! seeded generators (the official draws come from torch's), and the per-epoch evaluation
//! scores the weights `eval_weights` names (the moving average by default, which is what the
//! official `eval.py` reports; the official loop scores the live weights for its selection).

pub mod config;
pub mod ema;
pub mod schedule;
pub mod step;
pub mod task;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

pub use config::DenseTrainConfig;
use task::{DenseLog, DenseTask, EvalSplit, OPTIMIZER_FILE, STATE_FILE, TrainerState};

use super::checkpoint::{EMA_FILE, MODEL_FILE, Weights};
use super::data::{UnavDataset, UnavPaths};
use super::metrics;
use super::model::DenseModel;
use super::postprocess::TestConfig;
use crate::checkpoint::{self, native};
use crate::model::state::ParamList;
use crate::optim::AdamConfig;
use crate::train::optimizer_io;
use crate::train::run_dir::{RunDir, RunState, curve, read_json, read_state};
use crate::train::run_loop::run_epochs;

/// Options of one `cace dense train` run.
pub struct DenseTrainOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    pub config: DenseTrainConfig,
    pub resume: bool,
    pub eval_weights: Weights,
    pub device: Device,
    pub verbose: bool,
}

/// `RUN/report.json`: the epoch selected on validation and its scores (mAP in %).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DenseReport {
    pub epochs: usize,
    pub selected_on: String,
    pub best_epoch: Option<usize>,
    pub val_map: Option<f64>,
    pub test_map: Option<f64>,
    pub test_map_tiou: Option<Vec<f64>>,
    pub tiou: Vec<f64>,
}

/// Trains; returns the report.
pub fn train(opts: &DenseTrainOptions) -> Result<DenseReport> {
    let mut cfg = opts.config.clone();
    cfg.validate()?;
    let (run, last) = RunDir::open(&opts.out, opts.resume)?;
    let paths = UnavPaths::in_dir(&opts.data)?;
    let open = |split: &str| UnavDataset::open(paths.clone(), &[split], cfg.data.clone());
    let train = open("train")?;
    if train.len() < cfg.batch_size {
        bail!(
            "{}: {} training videos, fewer than one batch of {} (lower batch_size in --config)",
            opts.data.display(),
            train.len(),
            cfg.batch_size
        );
    }
    // The official run gives classes without training data a classifier bias near −13.8.
    cfg.model.head_empty_cls = train
        .empty_label_ids()
        .iter()
        .map(|&c| c as usize)
        .collect();
    let base = opts.device.clone();
    let device = base.clone().autodiff();
    base.seed(cfg.seed);
    device.seed(cfg.seed);
    let model = DenseModel::new(&cfg.model, &device)?;
    let mut trainer = step::DenseTrainer::new(&cfg, model, &device)?;
    let state =
        match &last {
            Some(dir) => {
                run.check_resume(&cfg, |c| c.epochs, |_, _| {
                bail!(
                    "{}: a run on the cosine schedule cannot be extended (the rate of every \
                     iteration depends on the total); start a new run",
                    run.path.display()
                )
            })?;
                load_last(&mut trainer, dir, &base)?;
                read_state(dir)?
            }
            None => {
                run.start(&cfg)?;
                RunState::default()
            }
        };
    let eval_split = |split: &str| -> Result<Option<EvalSplit>> {
        let ds = open(split)?;
        if ds.is_empty() {
            return Ok(None);
        }
        ds.check_features()?; // a bad file is reported now, not after the first epoch
        let gt = metrics::load_ground_truth(&paths.json_file, Some(split))?;
        Ok(Some(EvalSplit { videos: ds, gt }))
    };
    let mut task = DenseTask {
        trainer,
        train: &train,
        val: eval_split("validation")?,
        test: eval_split("test")?,
        eval_weights: opts.eval_weights,
        test_cfg: TestConfig::unav100(),
        verbose: opts.verbose,
    };
    let mut history = run.history(state.next_epoch)?;
    let has_val = task.val.is_some();
    let total = cfg.total_epochs();
    let state = run_epochs(&run, &mut task, state, total, has_val, &mut history)?;
    let report = report(&state, &history, total);
    run.write_json(crate::train::run_dir::REPORT_FILE, &report)?;
    Ok(report)
}

fn report(state: &RunState, history: &[DenseLog], epochs: usize) -> DenseReport {
    let best = state.best_val;
    let line = best.and_then(|b| history.iter().find(|m| m.epoch == b.epoch));
    DenseReport {
        epochs,
        selected_on: "validation average mAP".into(),
        best_epoch: best.map(|b| b.epoch),
        val_map: best.and_then(|b| b.val_acc),
        test_map: best.and_then(|b| b.test_acc),
        test_map_tiou: line.and_then(|m| m.test_map_tiou.clone()),
        tiou: metrics::unav_tiou_thresholds(),
    }
}

/// Restores weights, moving average, AdamW moments and the loss normaliser from `last/`.
fn load_last(trainer: &mut step::DenseTrainer, dir: &Path, base: &Device) -> Result<()> {
    let read = |name: &str| -> Result<(checkpoint::StateDict, PathBuf)> {
        let file = dir.join(name);
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        Ok((native::from_safetensors(&bytes, &file)?, file))
    };
    let (sd, file) = read(MODEL_FILE)?;
    checkpoint::load_state_dict(&mut trainer.model, sd, &trainer.device, &file)?;
    let (sd, file) = read(EMA_FILE)?;
    checkpoint::load_state_dict(&mut trainer.ema, sd, base, &file)?;
    let c = &trainer.cfg;
    let adam = AdamConfig {
        lr: c.lr,
        beta1: c.betas.0,
        beta2: c.betas.1,
        eps: c.eps,
    };
    let params = ParamList::of(&mut trainer.model);
    trainer.adam = optimizer_io::load(&dir.join(OPTIMIZER_FILE), adam, &params, base)?;
    let s: TrainerState = read_json(&dir.join(STATE_FILE), "trainer state")?;
    trainer.normalizer.value = s.loss_normalizer;
    Ok(())
}

/// `RUN/curves.png`: losses, and val / test average mAP.
fn curves(run: &Path, history: &[DenseLog]) -> Result<()> {
    use crate::plot::Series;
    let loss = curve(history, |m| Some(m.loss));
    let cls = curve(history, |m| Some(m.cls_loss));
    let reg = curve(history, |m| Some(m.reg_loss));
    let val = curve(history, |m| m.val_map);
    let test = curve(history, |m| m.test_map);
    let best = history
        .iter()
        .filter(|m| m.val_map.is_some())
        .max_by(|a, b| a.val_map.partial_cmp(&b.val_map).unwrap())
        .map(|m| (m.epoch + 1) as f64);
    crate::plot::training_curves(
        &run.join("curves.png"),
        &format!("dense localization ({} epochs)", history.len()),
        &[
            Series {
                name: "loss",
                points: &loss,
            },
            Series {
                name: "focal (cls)",
                points: &cls,
            },
            Series {
                name: "DIoU (reg)",
                points: &reg,
            },
        ],
        &[
            Series {
                name: "val average mAP",
                points: &val,
            },
            Series {
                name: "test average mAP",
                points: &test,
            },
        ],
        best,
    )
}
