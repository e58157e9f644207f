//! One dense training run as the shared epoch loop ([`crate::train::run_loop`]) drives it:
//! the official iterations over shuffled, truncated training videos ([`super::step`]), then
//! mAP of the evaluated weights on the validation and test videos.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::schedule::WarmupCosine;
use super::step::DenseTrainer;
use crate::checkpoint::{self, StateDict, native};
use crate::dense::checkpoint::{self as dense_ckpt, Weights};
use crate::dense::data::UnavDataset;
use crate::dense::data::truncate::SeededRng;
use crate::dense::infer;
use crate::dense::metrics::{self, GtSegment};
use crate::dense::postprocess::TestConfig;
use crate::train::optimizer_io;
use crate::train::run_dir::{EpochLog, EpochScore, RunDir, RunState};
use crate::train::run_loop::{Task, progress_bar};

/// `last/` holds the optimizer's moments here and the loss normaliser in [`STATE_FILE`].
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "dense_state.json";

/// One line of `metrics.jsonl`; mAP in percent (average over tIoU 0.1…0.9, and per tIoU).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DenseLog {
    pub epoch: usize,
    pub loss: f64,
    pub cls_loss: f64,
    pub reg_loss: f64,
    /// BECE's contrastive term (unweighted), in epochs with BECE on.
    pub contrastive_loss: Option<f64>,
    /// Rate of the epoch's last iteration.
    pub lr: f64,
    pub seconds: f64,
    pub val_map: Option<f64>,
    pub test_map: Option<f64>,
    pub val_map_tiou: Option<Vec<f64>>,
    pub test_map_tiou: Option<Vec<f64>>,
}

impl EpochLog for DenseLog {
    fn epoch(&self) -> usize {
        self.epoch
    }
}

/// Videos of one evaluation split with their ground truth.
pub struct EvalSplit {
    pub videos: UnavDataset,
    pub gt: Vec<GtSegment>,
}

/// What `last/` holds besides the weights and the moments.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TrainerState {
    pub loss_normalizer: f64,
}

pub struct DenseTask<'a> {
    pub trainer: DenseTrainer,
    pub train: &'a UnavDataset,
    pub val: Option<EvalSplit>,
    pub test: Option<EvalSplit>,
    pub eval_weights: Weights,
    pub test_cfg: TestConfig,
    pub verbose: bool,
}

/// Seed of epoch `epoch`'s shuffle, truncations and drop-path draws.
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch as u64 + 1)
}

impl DenseTask<'_> {
    pub fn iters_per_epoch(&self) -> usize {
        self.train.len() / self.trainer.cfg.batch_size // drop_last, as the official loader
    }

    fn schedule(&self) -> WarmupCosine {
        let n = self.iters_per_epoch();
        let c = &self.trainer.cfg;
        WarmupCosine::new(c.lr, c.warmup_epochs * n, c.total_epochs() * n)
    }

    /// Average and per-tIoU mAP (%) of the evaluated weights on `split`.
    fn score(&self, split: &Option<EvalSplit>) -> Result<Option<(f64, Vec<f64>)>> {
        let Some(split) = split else { return Ok(None) };
        let c = &self.trainer.cfg;
        let base = self.trainer.device.clone().inner();
        let valid;
        let model = match self.eval_weights {
            Weights::Ema => &self.trainer.ema,
            Weights::Model => {
                valid = burn::module::Module::valid(&self.trainer.model);
                &valid
            }
        };
        let dets = infer::detect_dataset(
            model,
            &c.model,
            &split.videos,
            c.eval_batch_size,
            &self.test_cfg,
            &base,
        )?;
        let r = metrics::evaluate(
            &split.gt,
            &infer::to_rows(&dets),
            &metrics::unav_tiou_thresholds(),
        );
        Ok(Some((
            100.0 * r.average_map,
            r.map.iter().map(|m| 100.0 * m).collect(),
        )))
    }
}

impl Task for DenseTask<'_> {
    type Log = DenseLog;

    fn epoch(&mut self, epoch: usize) -> Result<(DenseLog, EpochScore)> {
        let t0 = Instant::now();
        let seed = epoch_seed(self.trainer.cfg.seed, epoch);
        self.trainer.device.seed(seed);
        let bece = self.trainer.cfg.bece_on(epoch);
        self.trainer.set_bece(bece);
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut crop = SeededRng::new(seed ^ 0x5eed_c0de);
        let (n, schedule, bs) = (
            self.iters_per_epoch(),
            self.schedule(),
            self.trainer.cfg.batch_size,
        );
        let total = self.trainer.cfg.total_epochs();
        let bar = progress_bar(self.verbose, n, epoch, total);
        let (mut sums, mut contrast, mut lr) = ([0.0; 3], None::<f64>, 0.0);
        for (i, rows) in order.chunks_exact(bs).enumerate() {
            let items = rows
                .iter()
                .map(|&r| self.train.train_item(r, &mut crop))
                .collect::<Result<Vec<_>, _>>()?;
            lr = schedule.lr(epoch * n + i);
            let l = self
                .trainer
                .step(&items, lr)
                .with_context(|| format!("iteration {}", i + 1))?;
            for (s, v) in sums.iter_mut().zip([l.total, l.cls, l.reg]) {
                *s += v;
            }
            if let Some(c) = l.contrastive {
                contrast = Some(contrast.unwrap_or(0.0) + c);
            }
            if let Some(bar) = &bar {
                bar.set_message(format!("loss {:.4}", sums[0] / (i + 1) as f64));
                bar.inc(1);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let (val, test) = (self.score(&self.val)?, self.score(&self.test)?);
        let log = DenseLog {
            epoch,
            loss: sums[0] / n as f64,
            cls_loss: sums[1] / n as f64,
            reg_loss: sums[2] / n as f64,
            contrastive_loss: contrast.map(|c| c / n as f64),
            lr,
            seconds: t0.elapsed().as_secs_f64(),
            val_map: val.as_ref().map(|v| v.0),
            test_map: test.as_ref().map(|v| v.0),
            val_map_tiou: val.map(|v| v.1),
            test_map_tiou: test.map(|v| v.1),
        };
        let score = EpochScore {
            epoch,
            val_acc: log.val_map,
            test_acc: log.test_map,
        };
        Ok((log, score))
    }

    type Weights = (StateDict, StateDict);

    fn weights(&self) -> (StateDict, StateDict) {
        (
            checkpoint::state_dict(&self.trainer.model),
            checkpoint::state_dict(&self.trainer.ema),
        )
    }

    fn save_model(&self, weights: &Self::Weights, dir: &Path) -> Result<()> {
        dense_ckpt::save(
            dir,
            &weights.0,
            &weights.1,
            &self.trainer.cfg,
            &self.train.label_dict,
        )
    }

    fn save_resume_state(&self, dir: &Path) -> Result<()> {
        optimizer_io::save(&dir.join(OPTIMIZER_FILE), &self.trainer.adam)?;
        let state = TrainerState {
            loss_normalizer: self.trainer.normalizer.value,
        };
        native::write_atomic(
            &dir.join(STATE_FILE),
            serde_json::to_string_pretty(&state)?.as_bytes(),
        )
    }

    fn after_epoch(&self, run: &RunDir, history: &[DenseLog], _state: &RunState, improved: bool) {
        let m = history.last().expect("an epoch was just run");
        if self.verbose {
            let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} %"));
            println!(
                "epoch {:>3}/{}  loss {:.4} (cls {:.4}, reg {:.4})  val mAP {}  test mAP {}  lr {:.2e}  {:.1} s{}",
                m.epoch + 1,
                self.trainer.cfg.total_epochs(),
                m.loss,
                m.cls_loss,
                m.reg_loss,
                pct(m.val_map),
                pct(m.test_map),
                m.lr,
                m.seconds,
                if improved { "  *best" } else { "" }
            );
        }
        if let Err(e) = super::curves(&run.path, history) {
            eprintln!("warning: could not draw curves: {e:#}");
        }
    }
}
