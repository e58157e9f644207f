//! Audio-visual event localization on AVE as a [`Task`]: the official objective and schedule
//! (REFERENCE §4), batches from memory, disk or the device, and accuracy on val and test.
//!
//! A training step reads nothing back from the device: losses, the gradient norm and the
//! predictions wait there and are read every [`READ_EVERY`] steps (on a GPU every read is a
//! synchronisation).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::optimizer_io;
use super::report::fmt_acc;
use super::run_dir::{EpochLog, EpochScore, RunDir, RunState, curve};
use super::run_loop::{Task, progress_bar};
use crate::T;
use crate::checkpoint::{self, native};
use crate::data::ave::{AveDir, Split};
use crate::data::batch::{FeatureStore, Features, Shapes, require_labels};
use crate::loss::objective;
use crate::metric::{Accuracy, predict};
use crate::model::state::ParamList;
use crate::model::{CaceNet, ForwardOptions};
use crate::optim::{Adam, KeyedGrads};
use crate::resident::{AUTO_DEVICE_BYTES, Batches, DeviceData, Readback, flat};

const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Steps whose losses, norms and predictions wait on the device before one read.
const READ_EVERY: usize = 32;

/// Loss terms in the order a step queues them; `contrastive` only while BECE is on.
const TERMS: [&str; 5] = ["is_event", "event_class", "gate", "cas", "contrastive"];

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_acc: Option<f64>,
    pub test_acc: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
    pub bece_on: bool,
    /// Mean loss terms over the epoch's batches.
    pub loss_terms: BTreeMap<String, f64>,
    pub grad_norm_mean: f64,
}

impl EpochLog for EpochMetrics {
    fn epoch(&self) -> usize {
        self.epoch
    }
}

/// The rows of each split and where their features come from.
pub struct AveData {
    pub train: Vec<usize>,
    /// `None` when the dataset has no val split or an empty one (then nothing is selected).
    pub val: Option<Vec<usize>>,
    pub test: Option<Vec<usize>>,
    pub shapes: Shapes,
    pub source: Batches,
}

impl AveData {
    /// Opens `dir` and checks it against `cfg` (labels, categories, feature widths), warns
    /// about overlapping or empty splits, and loads the features: in memory, on the device or
    /// streamed, as `cfg` and their size decide.
    pub fn prepare(dir: &Path, cfg: &TrainConfig, device: &Device) -> Result<Self> {
        let data = AveDir::open(dir)?;
        let train = data.order(Split::Train)?;
        let val = data.order(Split::Val).ok();
        let test = data.order(Split::Test).ok();
        if train.is_empty() {
            bail!("{}: the train split is empty", data.dir().display());
        }
        for w in split_warnings(&train, val.as_deref(), test.as_deref()) {
            eprintln!("warning: {}: {w}", data.dir().display());
        }
        let val = val.filter(|v| !v.is_empty());
        let mut needed = train.clone();
        needed.extend(val.iter().flatten());
        needed.extend(test.iter().flatten());
        check_labels(&data, &needed, cfg)?;
        let shapes = Shapes::of(&data)?;
        crate::inference::check_feature_widths(&cfg.model, &data)?;
        let source = load_features(&data, cfg, shapes, &needed, device)?;
        Ok(Self {
            train,
            val,
            test,
            shapes,
            source,
        })
    }
}

fn check_labels(data: &AveDir, rows: &[usize], cfg: &TrainConfig) -> Result<()> {
    require_labels(data)?;
    if let Some(c) = data
        .max_event_class(rows)
        .filter(|&c| c >= cfg.model.num_classes)
    {
        bail!(
            "{}: the labels use category {c} ({}) but the model config has num_classes {}",
            data.dir().display(),
            crate::data::annotations::CATEGORIES[c],
            cfg.model.num_classes
        );
    }
    Ok(())
}

fn load_features(
    data: &AveDir,
    cfg: &TrainConfig,
    shapes: Shapes,
    rows: &[usize],
    device: &Device,
) -> Result<Batches> {
    let in_memory = cfg
        .features_in_memory
        .unwrap_or_else(|| FeatureStore::bytes_needed(data, rows.len()) <= 2 << 30);
    let features = if in_memory {
        Features::Memory(Arc::new(FeatureStore::load(data, rows)?))
    } else {
        Features::Disk(data.dir().to_path_buf())
    };
    let on_device = cfg.features_on_device.unwrap_or_else(|| {
        !crate::device::is_flex(device)
            && DeviceData::bytes_needed(shapes, rows.len()) <= AUTO_DEVICE_BYTES
    });
    Ok(if on_device {
        let resident = DeviceData::load(&features, shapes, rows, cfg.zero_audio, device)?;
        Batches::Device(Arc::new(resident)) // the host copy, if any, is dropped here
    } else {
        Batches::Host(features)
    })
}

/// What is wrong with the splits but does not stop training: no or an empty val split (no
/// honest model selection), val/test rows that are also training rows.
pub fn split_warnings(
    train: &[usize],
    val: Option<&[usize]>,
    test: Option<&[usize]>,
) -> Vec<String> {
    let mut out = Vec::new();
    match val {
        None => out.push("no val split: best/ will be the last epoch, not a selected one".into()),
        Some([]) => out.push("the val split is empty: best/ will be the last epoch".into()),
        Some(_) => {}
    }
    let train: std::collections::HashSet<usize> = train.iter().copied().collect();
    for (name, rows) in [("val", val), ("test", test)] {
        let shared = rows
            .unwrap_or(&[])
            .iter()
            .filter(|r| train.contains(r))
            .count();
        if shared > 0 {
            out.push(format!(
                "{shared} {name} rows are also training rows: {name} accuracy is not held-out"
            ));
        }
    }
    out
}

/// Official accuracy of an evaluation-mode `model` on `rows`; also returns predictions and
/// targets (segment-major, in `rows` order). The outputs stay on the device until the last
/// batch has run and are then read in one transfer.
pub fn evaluate(
    model: &CaceNet,
    source: &Batches,
    shapes: Shapes,
    rows: &[usize],
    batch_size: usize,
    zero_audio: bool,
    device: &Device,
) -> Result<(Accuracy, Vec<usize>, Vec<usize>)> {
    let batches = rows.chunks(batch_size).map(<[usize]>::to_vec).collect();
    let mut outputs = Readback::default();
    let mut segments = Vec::new();
    for batch in source.iter(shapes, batches, zero_audio, device) {
        let batch = batch?;
        let tg = batch.targets.context("evaluation needs labels")?;
        let out = model.forward(batch.visual, batch.audio, ForwardOptions::bece_on());
        outputs.push(vec![flat(out.is_event), flat(out.event_scores)]);
        segments.push(tg.segment);
    }
    let mut acc = Accuracy::default();
    let (mut preds, mut targets) = (Vec::new(), Vec::new());
    for (values, segment) in outputs.read().into_iter().zip(segments) {
        let b = segment.len() / T;
        let pred = predict(&values[..b * T], &values[b * T..], b);
        acc.update(&pred, &segment);
        preds.extend(pred);
        targets.extend(segment);
    }
    Ok((acc, preds, targets))
}

/// A training epoch's sums, accumulated on the host from values read back in batches of steps
/// (in step order, with the same f64 arithmetic as reading them after every step).
#[derive(Default)]
struct EpochSums {
    terms: HashMap<String, f64>,
    acc: Accuracy,
    loss: f64,
    norm: f64,
    seen: usize,
    steps: usize,
}

impl EpochSums {
    /// Adds one step: `values` = total loss, the loss terms, the global gradient norm, the
    /// `[B, T]` event logits and `[B, C]` class scores; `segment` its targets.
    fn add(&mut self, values: &[f32], segment: &[usize], bece_on: bool) -> Result<()> {
        let b = segment.len() / T;
        let k = if bece_on { 5 } else { 4 };
        let norm = values[1 + k];
        if !norm.is_finite() {
            bail!(
                "batch {}: non-finite gradient (global norm {norm})",
                self.steps + 1
            );
        }
        let n = b as f64;
        self.loss += values[0] as f64 * n;
        for (name, &v) in TERMS.iter().zip(&values[1..1 + k]) {
            *self.terms.entry(name.to_string()).or_default() += v as f64 * n;
        }
        self.norm += norm as f64;
        let (logits, scores) = values[2 + k..].split_at(b * T);
        self.acc.update(&predict(logits, scores, b), segment);
        self.seen += b;
        self.steps += 1;
        Ok(())
    }

    /// Reads the queued steps back and adds them.
    fn read(
        &mut self,
        pending: &mut Readback,
        segments: &mut Vec<Vec<usize>>,
        bece_on: bool,
    ) -> Result<()> {
        for (values, segment) in pending.read().into_iter().zip(segments.drain(..)) {
            self.add(&values, &segment, bece_on)?;
        }
        Ok(())
    }

    fn mean_loss(&self) -> f64 {
        self.loss / self.seen.max(1) as f64
    }
}

fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch as u64 + 1)
}

/// The AVE training task: model, optimizer and data of one run.
pub struct AveTask<'a> {
    cfg: &'a TrainConfig,
    data: AveData,
    model: CaceNet,
    adam: Adam,
    /// The device without autodiff (evaluation) and with it (training).
    base: Device,
    device: Device,
    verbose: bool,
}

impl<'a> AveTask<'a> {
    /// A fresh run: the model initialised from the config's seed.
    pub fn fresh(
        cfg: &'a TrainConfig,
        data: AveData,
        base: &Device,
        verbose: bool,
    ) -> Result<Self> {
        let device = base.clone().autodiff();
        base.seed(cfg.seed);
        device.seed(cfg.seed);
        let model = CaceNet::new(&cfg.model, &device)?;
        let adam = Adam::new(cfg.adam.clone());
        Ok(Self::with(cfg, data, model, adam, base, verbose))
    }

    /// A run continued from the checkpoint directory `last`.
    pub fn resume(
        cfg: &'a TrainConfig,
        data: AveData,
        last: &Path,
        base: &Device,
        verbose: bool,
    ) -> Result<Self> {
        let device = base.clone().autodiff();
        let mut model = checkpoint::load(last, Some(cfg.model.clone()), &device)?.model;
        let params = ParamList::of(&mut model);
        let file = last.join(OPTIMIZER_FILE);
        let adam = optimizer_io::load(&file, cfg.adam.clone(), &params, base)?;
        Ok(Self::with(cfg, data, model, adam, base, verbose))
    }

    fn with(
        cfg: &'a TrainConfig,
        data: AveData,
        model: CaceNet,
        adam: Adam,
        base: &Device,
        verbose: bool,
    ) -> Self {
        Self {
            cfg,
            data,
            model,
            adam,
            base: base.clone(),
            device: base.clone().autodiff(),
            verbose,
        }
    }

    pub fn has_val(&self) -> bool {
        self.data.val.is_some()
    }

    /// One optimisation step; returns the values to read later (see [`EpochSums::add`]).
    fn step(
        &mut self,
        visual: Tensor<5>,
        audio: Tensor<3>,
        targets: &crate::loss::Targets,
        bece_on: bool,
        lr: f64,
    ) -> Vec<Tensor<1>> {
        let cfg = self.cfg;
        let out = self.model.forward(
            visual,
            audio,
            ForwardOptions {
                bece_on,
                noise: None,
            },
        );
        let weight = bece_on.then_some(cfg.contrastive_weight);
        let terms = objective(&out, targets, weight, cfg.tau);
        let mut grads = KeyedGrads::collect(&self.model, &terms.total.backward());
        let norm = grads.clip_global_norm(cfg.clip_norm);
        self.adam.step(&mut self.model, &grads, lr);

        let mut values = vec![terms.total, terms.is_event, terms.event_class, terms.gate];
        values.extend([terms.cas].into_iter().chain(terms.contrastive));
        values.extend([
            norm,
            flat(out.is_event.inner()),
            flat(out.event_scores.inner()),
        ]);
        values
    }

    /// Trains on `batches` (rows, in order).
    fn train_epoch(
        &mut self,
        batches: Vec<Vec<usize>>,
        bece_on: bool,
        lr: f64,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<EpochSums> {
        let (shapes, zero_audio) = (self.data.shapes, self.cfg.zero_audio);
        let source = self.data.source.clone();
        let mut sums = EpochSums::default();
        let mut pending = Readback::default();
        let mut segments = Vec::new();
        for batch in source.iter(shapes, batches, zero_audio, &self.device.clone()) {
            let batch = batch?;
            let targets = batch.targets.context("training needs labels")?;
            // On the pool's threads ([`crate::pool`]).
            let step = || self.step(batch.visual, batch.audio, &targets, bece_on, lr);
            pending.push(crate::pool::run(step));
            segments.push(targets.segment);
            if segments.len() == READ_EVERY {
                sums.read(&mut pending, &mut segments, bece_on)?;
                if let Some(bar) = bar {
                    bar.set_message(format!("loss {:.4}", sums.mean_loss()));
                }
            }
            if let Some(bar) = bar {
                bar.inc(1);
            }
        }
        sums.read(&mut pending, &mut segments, bece_on)?;
        Ok(sums)
    }

    /// Accuracy (%) of the current model on `rows`; `None` without rows.
    fn accuracy(&self, rows: Option<&Vec<usize>>) -> Result<Option<f64>> {
        let Some(rows) = rows else { return Ok(None) };
        let model = self.model.valid();
        let (acc, _, _) = evaluate(
            &model,
            &self.data.source,
            self.data.shapes,
            rows,
            self.cfg.eval_batch_size,
            self.cfg.zero_audio,
            &self.base,
        )?;
        Ok(acc.percent())
    }
}

impl Task for AveTask<'_> {
    type Log = EpochMetrics;

    fn epoch(&mut self, epoch: usize) -> Result<(EpochMetrics, EpochScore)> {
        let t0 = Instant::now();
        let cfg = self.cfg;
        let bece_on = cfg.model.contrastive && epoch >= cfg.bece_start();
        let lr = cfg.schedule().lr(epoch);
        // Shuffle, dropout and BECE noise drawn from seeds of (seed, epoch): see the module doc.
        let seed = epoch_seed(cfg.seed, epoch);
        self.base.seed(seed);
        self.device.seed(seed);
        let mut order = self.data.train.clone();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let batches: Vec<Vec<usize>> = order
            .chunks(cfg.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        let n_batches = batches.len();

        let bar = progress_bar(self.verbose, n_batches, epoch, cfg.epochs);
        let sums = self.train_epoch(batches, bece_on, lr, bar.as_ref())?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let val_acc = self.accuracy(self.data.val.as_ref())?;
        let test_acc = self.accuracy(self.data.test.as_ref())?;
        let seen = sums.seen as f64;
        let metrics = EpochMetrics {
            epoch,
            train_loss: sums.loss / seen,
            train_acc: sums.acc.percent().unwrap_or(0.0),
            val_acc,
            test_acc,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
            bece_on,
            loss_terms: sums.terms.into_iter().map(|(k, v)| (k, v / seen)).collect(),
            grad_norm_mean: sums.norm / n_batches as f64,
        };
        let score = EpochScore {
            epoch,
            val_acc,
            test_acc,
        };
        Ok((metrics, score))
    }

    type Weights = checkpoint::StateDict;

    fn weights(&self) -> checkpoint::StateDict {
        checkpoint::state_dict(&self.model)
    }

    fn save_model(&self, weights: &checkpoint::StateDict, dir: &Path) -> Result<()> {
        native::write(dir, weights, &self.cfg.model)
    }

    fn save_resume_state(&self, dir: &Path) -> Result<()> {
        optimizer_io::save(&dir.join(OPTIMIZER_FILE), &self.adam)
    }

    fn after_epoch(
        &self,
        run: &RunDir,
        history: &[EpochMetrics],
        state: &RunState,
        improved: bool,
    ) {
        let m = history.last().expect("an epoch was just run");
        if self.verbose {
            println!(
                "epoch {:>3}/{}  loss {:.4}  train {:.2} %  val {}  test {}  lr {:.2e}  {:.1} s{}",
                m.epoch + 1,
                self.cfg.epochs,
                m.train_loss,
                m.train_acc,
                fmt_acc(m.val_acc),
                fmt_acc(m.test_acc),
                m.lr,
                m.seconds,
                if improved { "  *best val" } else { "" }
            );
        }
        let best = state.best_val.map(|s| s.epoch);
        if let Err(e) = curves_for_run(&run.path, history, best) {
            eprintln!("warning: could not draw curves: {e:#}");
        }
    }
}

/// Draws `RUN_DIR/curves.png` from a run's metrics: train loss, val and test accuracy, and the
/// best-val epoch (1-based on the x axis).
fn curves_for_run(
    run: &Path,
    history: &[EpochMetrics],
    best_val_epoch: Option<usize>,
) -> anyhow::Result<()> {
    let loss = curve(history, |m| Some(m.train_loss));
    let val = curve(history, |m| m.val_acc);
    let test = curve(history, |m| m.test_acc);
    let mut acc = Vec::new();
    if !val.is_empty() {
        acc.push(crate::plot::Series {
            name: "val",
            points: &val,
        });
    }
    if !test.is_empty() {
        acc.push(crate::plot::Series {
            name: "test",
            points: &test,
        });
    }
    let title = format!("CACE-Net training ({} epochs)", history.len());
    crate::plot::training_curves(
        &run.join("curves.png"),
        &title,
        &[crate::plot::Series {
            name: "train loss",
            points: &loss,
        }],
        &acc,
        best_val_epoch.map(|e| (e + 1) as f64),
    )
}
