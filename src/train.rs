//! Training with the official objective and schedule (REFERENCE §4), an honest protocol
//! (best epoch chosen on **val**) beside the official one (best epoch on **test**), and runs
//! that survive being killed: `last/` is replaced atomically after every epoch and `--resume`
//! continues from it with the same result as an uninterrupted run.
//!
//! Determinism: the shuffle and the backend RNG (dropout, BECE noise) are re-seeded at the start
//! of every epoch from `(seed, epoch)`, so a resumed run draws exactly what the uninterrupted run
//! would have drawn, without saving RNG internals.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, native};
use crate::config::ModelConfig;
use crate::data::ave::{AveDir, Split};
use crate::data::batch::{FeatureStore, Features, Shapes, require_labels};
use crate::loss::objective;
use crate::metric::{Accuracy, predict};
use crate::model::{CaceNet, ForwardOptions};
use crate::optim::{Adam, AdamConfig, AdamState, KeyedGrads, MultiStepLr};
use crate::resident::{AUTO_DEVICE_BYTES, Batches, DeviceData, Readback, flat};
use crate::{T, to_vec};

/// Everything a run depends on; saved as `RUN_DIR/train_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub adam: AdamConfig,
    /// Epochs after which the learning rate is multiplied by `lr_gamma` (`MultiStepLR`).
    pub lr_milestones: Vec<usize>,
    pub lr_gamma: f64,
    /// Global L2 gradient-norm clip (`clip_grad_norm_`).
    pub clip_norm: f64,
    /// Weight of BECE's contrastive term (`contras_coeff`).
    pub contrastive_weight: f64,
    /// Contrastive temperature τ.
    pub tau: f64,
    /// First epoch (0-based) with BECE's contrastive term and λ-mix on. `None` = the official
    /// `epoch >= n_epoch / 8` (a float comparison: ⌈n_epoch / 8⌉, 25 for 200 epochs).
    pub bece_start_epoch: Option<usize>,
    pub seed: u64,
    /// Replace the audio features by zeros (an ablation: how much does sound matter?).
    pub zero_audio: bool,
    /// Hold the features in memory (`true`) or stream each batch from the HDF5 files
    /// (`false`). `None`: in memory when they take at most 2 GiB as f32.
    pub features_in_memory: Option<bool>,
    /// Copy the features to the compute device once and keep them there (`true`), or send each
    /// batch over from the host (`false`). `None`: on a GPU when they take at most 6 GiB as f32
    /// ([`AUTO_DEVICE_BYTES`]), never on the CPU (nothing to gain there).
    pub features_on_device: Option<bool>,
}

impl Default for TrainConfig {
    /// The published run (REFERENCE §4.1).
    fn default() -> Self {
        Self {
            model: ModelConfig::default(),
            epochs: 200,
            batch_size: 64,
            eval_batch_size: 64,
            adam: AdamConfig::default(),
            lr_milestones: vec![10, 20, 30],
            lr_gamma: 0.5,
            clip_norm: 0.5,
            contrastive_weight: 1.0,
            tau: 0.01,
            bece_start_epoch: None,
            seed: 3917,
            zero_audio: false,
            features_in_memory: None,
            features_on_device: None,
        }
    }
}

impl TrainConfig {
    pub fn bece_start(&self) -> usize {
        self.bece_start_epoch.unwrap_or(self.epochs.div_ceil(8))
    }

    pub fn schedule(&self) -> MultiStepLr {
        MultiStepLr {
            base_lr: self.adam.lr,
            milestones: self.lr_milestones.clone(),
            gamma: self.lr_gamma,
        }
    }

    /// Checks every field's range before anything is written; the error names the field.
    pub fn validate(&self) -> Result<()> {
        self.model
            .validate()
            .map_err(|e| anyhow::anyhow!("model config: {e}"))?;
        for (name, v) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("eval_batch_size", self.eval_batch_size),
        ] {
            if v == 0 {
                bail!("{name} must be at least 1, got 0");
            }
        }
        let positive = [
            ("adam.lr", self.adam.lr),
            ("adam.eps", self.adam.eps),
            ("tau", self.tau),
            ("clip_norm", self.clip_norm),
            ("lr_gamma", self.lr_gamma),
        ];
        for (name, v) in positive {
            if !(v > 0.0 && v.is_finite()) {
                bail!("{name} must be a positive number, got {v}");
            }
        }
        for (name, v) in [
            ("adam.beta1", self.adam.beta1),
            ("adam.beta2", self.adam.beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                bail!("{name} must be in [0, 1), got {v}");
            }
        }
        if !(self.contrastive_weight >= 0.0 && self.contrastive_weight.is_finite()) {
            bail!(
                "contrastive_weight must be >= 0, got {}",
                self.contrastive_weight
            );
        }
        if self.lr_milestones.windows(2).any(|w| w[0] >= w[1]) {
            bail!(
                "lr_milestones must be increasing, got {:?}",
                self.lr_milestones
            );
        }
        Ok(())
    }
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

/// Loss terms in the order a step queues them; `contrastive` only while BECE is on.
const TERMS: [&str; 5] = ["is_event", "event_class", "gate", "cas", "contrastive"];

impl EpochSums {
    /// Adds one step: `values` = total loss, the loss terms, the global gradient norm, the
    /// `[B, T]` event logits and `[B, C]` class scores; `segment` its targets. Returns the norm
    /// when it is not finite.
    fn add(&mut self, values: &[f32], segment: &[usize], bece_on: bool) -> Result<(), f32> {
        let b = segment.len() / T;
        let k = if bece_on { 5 } else { 4 };
        let norm = values[1 + k];
        if !norm.is_finite() {
            return Err(norm);
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
}

/// Steps whose losses, norms and predictions wait on the device before one read.
const READ_EVERY: usize = 32;

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
    pub loss_terms: std::collections::BTreeMap<String, f64>,
    pub grad_norm_mean: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochScore {
    pub epoch: usize,
    pub val_acc: Option<f64>,
    pub test_acc: Option<f64>,
}

/// Saved in `last/state.json`: where to continue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    next_epoch: usize,
    best_val: Option<EpochScore>,
    best_test: Option<EpochScore>,
}

/// `RUN_DIR/report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub epochs: usize,
    /// Honest protocol: the epoch with the best **val** accuracy, and test accuracy there.
    pub best_val_epoch: Option<usize>,
    pub val_acc_at_best_val: Option<f64>,
    pub test_acc_at_best_val: Option<f64>,
    /// Official protocol (CACE-Net's script): the best **test** accuracy over all epochs.
    pub test_acc_best_over_epochs: Option<f64>,
    pub best_test_epoch: Option<usize>,
    pub final_test_acc: Option<f64>,
    pub seed: u64,
    pub train_seconds: f64,
}

/// Options of one `cace train` run.
pub struct RunOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    pub config: TrainConfig,
    pub resume: bool,
    pub device: Device,
    /// Print one line per epoch and show a progress bar.
    pub verbose: bool,
}

const LAST: &str = "last";
const BEST: &str = "best";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "state.json";
const METRICS_FILE: &str = "metrics.jsonl";
pub const CONFIG_FILE: &str = "train_config.json";
pub const REPORT_FILE: &str = "report.json";

fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch as u64 + 1)
}

/// Writes a checkpoint directory atomically: files go to `<name>.tmp/`, which then replaces
/// `<name>/` by rename (the old one is removed only after the new one is in place).
fn save_dir(run: &Path, name: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = run.join(format!("{name}.tmp"));
    let old = run.join(format!("{name}.old"));
    let dst = run.join(name);
    let _ = fs::remove_dir_all(&tmp);
    write(&tmp)?;
    if dst.exists() {
        let _ = fs::remove_dir_all(&old);
        fs::rename(&dst, &old).with_context(|| format!("renaming {}", dst.display()))?;
    }
    fs::rename(&tmp, &dst)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// `last/`, or `last.old/` if a kill interrupted the swap between the two renames.
fn last_dir(run: &Path) -> Option<PathBuf> {
    [LAST, "last.old"]
        .iter()
        .map(|n| run.join(n))
        .find(|p| p.join(STATE_FILE).exists())
}

fn save_optimizer(path: &Path, adam: &Adam) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let mut keys: Vec<&String> = adam.state.keys().collect();
    keys.sort();
    let mut blobs = Vec::new();
    let mut steps = std::collections::BTreeMap::new();
    for k in &keys {
        let st = &adam.state[*k];
        steps.insert((*k).clone(), st.step);
        for (kind, t) in [("exp_avg", &st.exp_avg), ("exp_avg_sq", &st.exp_avg_sq)] {
            let v = to_vec(t.clone());
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            blobs.push((format!("{kind}/{k}"), v.len(), bytes));
        }
    }
    let views = blobs
        .iter()
        .map(|(n, len, b)| Ok((n.clone(), TensorView::new(Dtype::F32, vec![*len], b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let meta = HashMap::from([("steps".to_string(), serde_json::to_string(&steps)?)]);
    native::write_atomic(path, &safetensors::serialize(views, Some(meta))?)
}

fn load_optimizer(path: &Path, config: AdamConfig, device: &Device) -> Result<Adam> {
    use safetensors::SafeTensors;
    let bytes =
        fs::read(path).with_context(|| format!("reading optimizer state {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a valid safetensors file", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)?;
    let steps: HashMap<String, u64> = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("steps"))
        .map(|s| serde_json::from_str(s))
        .transpose()?
        .with_context(|| format!("{}: no step counts", path.display()))?;
    let read = |name: String| -> Result<Tensor<1>> {
        let v = st
            .tensor(&name)
            .with_context(|| format!("{}: missing {name}", path.display()))?;
        let data: Vec<f32> = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let n = data.len();
        Ok(Tensor::from_data(TensorData::new(data, [n]), device))
    };
    let mut adam = Adam::new(config);
    for (k, step) in steps {
        let exp_avg = read(format!("exp_avg/{k}"))?;
        let exp_avg_sq = read(format!("exp_avg_sq/{k}"))?;
        adam.state.insert(
            k,
            AdamState {
                step,
                exp_avg,
                exp_avg_sq,
            },
        );
    }
    Ok(adam)
}

fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}: bad line", path.display())))
        .collect()
}

/// What is wrong with the splits but does not stop training: no or an empty val split (no
/// honest model selection), val/test rows that are also training rows.
fn split_warnings(train: &[usize], val: Option<&[usize]>, test: Option<&[usize]>) -> Vec<String> {
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

/// The dotted names of the fields where two configs differ (`model.psi`, `epochs`).
fn config_diff(a: &TrainConfig, b: &TrainConfig) -> Vec<String> {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                for (k, v) in x {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(v, y.get(k).unwrap_or(&serde_json::Value::Null), &p, out);
                }
            }
            _ if a != b => out.push(path.to_string()),
            _ => {}
        }
    }
    let (a, b) = (serde_json::to_value(a), serde_json::to_value(b));
    let mut out = Vec::new();
    walk(
        &a.expect("config serialises"),
        &b.expect("config serialises"),
        "",
        &mut out,
    );
    out
}

/// `--resume` continues the saved run with the same config; the one change allowed is more
/// `epochs` (extending a run) when BECE's start epoch stays where it was. The saved config is
/// then updated.
fn check_resumable(run: &Path, cfg: &TrainConfig) -> Result<()> {
    let file = run.join(CONFIG_FILE);
    let saved: TrainConfig = fs::read(&file)
        .map_err(anyhow::Error::from)
        .and_then(|b| Ok(serde_json::from_slice(&b)?))
        .with_context(|| format!("{}: unreadable saved config", file.display()))?;
    let diff = config_diff(&saved, cfg);
    if diff.is_empty() {
        return Ok(());
    }
    let extends = diff == ["epochs"] && cfg.epochs > saved.epochs;
    if extends && cfg.bece_start() == saved.bece_start() {
        return native::write_atomic(&file, serde_json::to_string_pretty(cfg)?.as_bytes());
    }
    if extends {
        bail!(
            "{}: extending the run to {} epochs would move BECE's start from epoch {} to {}; \
             set \"bece_start_epoch\": {} in the config to keep it",
            run.display(),
            cfg.epochs,
            saved.bece_start(),
            cfg.bece_start(),
            saved.bece_start()
        );
    }
    bail!(
        "{}: --resume needs the training config of the saved run ({}); these fields differ: {}",
        run.display(),
        file.display(),
        diff.join(", ")
    )
}

/// Trains one run; returns its report.
pub fn train(opts: &RunOptions) -> Result<Report> {
    let cfg = &opts.config;
    cfg.validate()?;
    let run = &opts.out;
    let started = Instant::now();

    // Never clobber a run: a directory with a saved run needs --resume.
    let existing = last_dir(run);
    if existing.is_some() && !opts.resume {
        bail!(
            "{} already holds a run (last/); pass --resume to continue it or choose another --out",
            run.display()
        );
    }
    // A run's files without last/ (deleted by hand?) can be neither resumed nor replaced.
    let leftovers: Vec<&str> = [BEST, REPORT_FILE, METRICS_FILE]
        .into_iter()
        .filter(|f| run.join(f).exists())
        .collect();
    if existing.is_none() && !leftovers.is_empty() {
        bail!(
            "{} holds files of an earlier run ({}) but no last/ to resume from; \
             nothing was changed: choose another --out, or move those files away",
            run.display(),
            leftovers.join(", ")
        );
    }
    let data = AveDir::open(&opts.data)?;
    let train_rows = data.order(Split::Train)?;
    let val_rows = data.order(Split::Val).ok();
    let test_rows = data.order(Split::Test).ok();
    if train_rows.is_empty() {
        bail!("{}: the train split is empty", data.dir().display());
    }
    for w in split_warnings(&train_rows, val_rows.as_deref(), test_rows.as_deref()) {
        eprintln!("warning: {}: {w}", data.dir().display());
    }
    // An empty val split selects nothing: treated as absent (best/ = the last epoch).
    let val_rows = val_rows.filter(|v| !v.is_empty());
    let mut needed = train_rows.clone();
    needed.extend(val_rows.iter().flatten());
    needed.extend(test_rows.iter().flatten());
    require_labels(&data)?;
    if let Some(c) = data
        .max_event_class(&needed)
        .filter(|&c| c >= cfg.model.num_classes)
    {
        bail!(
            "{}: the labels use category {c} ({}) but the model config has num_classes {}",
            data.dir().display(),
            crate::data::annotations::CATEGORIES[c],
            cfg.model.num_classes
        );
    }
    let shapes = Shapes::of(&data)?;
    crate::inference::check_feature_widths(&cfg.model, &data)?;

    let in_memory = cfg
        .features_in_memory
        .unwrap_or_else(|| FeatureStore::bytes_needed(&data, needed.len()) <= 2 << 30);
    let features = if in_memory {
        Features::Memory(Arc::new(FeatureStore::load(&data, &needed)?))
    } else {
        Features::Disk(opts.data.clone())
    };
    let on_device = cfg.features_on_device.unwrap_or_else(|| {
        !crate::device::is_flex(&opts.device)
            && DeviceData::bytes_needed(shapes, needed.len()) <= AUTO_DEVICE_BYTES
    });
    let source = if on_device {
        let resident = DeviceData::load(&features, shapes, &needed, cfg.zero_audio, &opts.device)?;
        Batches::Device(Arc::new(resident)) // the host copy, if any, is dropped here
    } else {
        Batches::Host(features)
    };

    fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
    let base = opts.device.clone();
    let device = base.clone().autodiff();
    let schedule = cfg.schedule();

    // Fresh or resumed state.
    let (mut model, mut adam, mut state) = match existing.filter(|_| opts.resume) {
        Some(dir) => {
            check_resumable(run, cfg)?;
            let loaded = checkpoint::load(&dir, Some(cfg.model.clone()), &device)?;
            let adam = load_optimizer(&dir.join(OPTIMIZER_FILE), cfg.adam.clone(), &base)?;
            let state_file = dir.join(STATE_FILE);
            let state: RunState = fs::read(&state_file)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice(&b)?))
                .with_context(|| format!("{}: unreadable run state", state_file.display()))?;
            (loaded.model, adam, state)
        }
        None => {
            native::write_atomic(
                &run.join(CONFIG_FILE),
                serde_json::to_string_pretty(cfg)?.as_bytes(),
            )?;
            let _ = fs::remove_file(run.join(METRICS_FILE));
            base.seed(cfg.seed);
            device.seed(cfg.seed);
            let model = CaceNet::new(&cfg.model, &device);
            (
                model,
                Adam::new(cfg.adam.clone()),
                RunState {
                    next_epoch: 0,
                    best_val: None,
                    best_test: None,
                },
            )
        }
    };

    // Drop metric lines of epochs that will be recomputed (a kill after the append).
    let mut history: Vec<EpochMetrics> = read_metrics(&run.join(METRICS_FILE))?
        .into_iter()
        .filter(|m| m.epoch < state.next_epoch)
        .collect();
    let body: String = history
        .iter()
        .map(|m| serde_json::to_string(m).unwrap() + "\n")
        .collect();
    native::write_atomic(&run.join(METRICS_FILE), body.as_bytes())?;

    let kill_after: Option<usize> = std::env::var("CACE_FAULT_KILL_AFTER_STEPS")
        .ok()
        .and_then(|s| s.parse().ok());
    let mut steps_done = 0usize;
    for epoch in state.next_epoch..cfg.epochs {
        let t0 = Instant::now();
        let bece_on = cfg.model.contrastive && epoch >= cfg.bece_start();
        let lr = schedule.lr(epoch);
        let seed = epoch_seed(cfg.seed, epoch);
        base.seed(seed);
        device.seed(seed);
        let mut order = train_rows.clone();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));

        let batches: Vec<Vec<usize>> = order
            .chunks(cfg.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        let n_batches = batches.len();
        let bar = progress_bar(opts.verbose, n_batches, epoch, cfg.epochs);
        let mut sums = EpochSums::default();
        let mut pending = Readback::default();
        let mut segments = Vec::new();
        let mut account = |pending: &mut Readback, segments: &mut Vec<Vec<usize>>| -> Result<()> {
            for (values, segment) in pending.read().into_iter().zip(segments.drain(..)) {
                if let Err(norm) = sums.add(&values, &segment, bece_on) {
                    bail!(
                        "epoch {}, batch {}: non-finite gradient (global norm {norm}); stopping, {} keeps the last good epoch",
                        epoch + 1,
                        sums.steps + 1,
                        run.join(LAST).display()
                    );
                }
            }
            if let Some(bar) = &bar {
                bar.set_message(format!("loss {:.4}", sums.loss / sums.seen.max(1) as f64));
            }
            Ok(())
        };
        for batch in source.iter(shapes, batches, cfg.zero_audio, &device) {
            let batch = batch?;
            let targets = batch.targets.context("training needs labels")?;
            let out = model.forward(
                batch.visual,
                batch.audio,
                ForwardOptions {
                    bece_on,
                    noise: None,
                },
            );
            let terms = objective(
                &out,
                &targets,
                bece_on.then_some(cfg.contrastive_weight),
                cfg.tau,
            );
            let mut grads = KeyedGrads::collect(&model, &terms.total.backward());
            let norm = grads.clip_global_norm(cfg.clip_norm);
            adam.step(&mut model, &grads, lr);

            // Nothing is read here: the values wait on the device (see `READ_EVERY`).
            let mut values = vec![terms.total, terms.is_event, terms.event_class, terms.gate];
            values.extend([terms.cas].into_iter().chain(terms.contrastive));
            values.extend([
                norm,
                flat(out.is_event.inner()),
                flat(out.event_scores.inner()),
            ]);
            pending.push(values);
            segments.push(targets.segment);
            if segments.len() == READ_EVERY {
                account(&mut pending, &mut segments)?;
            }
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            steps_done += 1;
            if kill_after == Some(steps_done) {
                // Fault injection for the resume test: die like `kill -9` would.
                let _ = std::process::Command::new("kill")
                    .args(["-9", &std::process::id().to_string()])
                    .status();
                std::process::abort();
            }
        }
        account(&mut pending, &mut segments)?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }

        let eval_model = model.valid();
        let eval = |rows: &Option<Vec<usize>>| -> Result<Option<f64>> {
            match rows {
                Some(r) => Ok(evaluate(
                    &eval_model,
                    &source,
                    shapes,
                    r,
                    cfg.eval_batch_size,
                    cfg.zero_audio,
                    &base,
                )?
                .0
                .percent()),
                None => Ok(None),
            }
        };
        let val_acc = eval(&val_rows)?;
        let test_acc = eval(&test_rows)?;
        let score = EpochScore {
            epoch,
            val_acc,
            test_acc,
        };
        let improved = |best: &Option<EpochScore>, get: fn(&EpochScore) -> Option<f64>| match (
            best.as_ref().and_then(get),
            get(&score),
        ) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(b), Some(s)) => s > b, // strictly greater, like the official loop
        };
        let val_improved = improved(&state.best_val, |s| s.val_acc);
        if val_improved {
            state.best_val = Some(score);
        }
        if improved(&state.best_test, |s| s.test_acc) {
            state.best_test = Some(score);
        }
        let metrics = EpochMetrics {
            epoch,
            train_loss: sums.loss / sums.seen as f64,
            train_acc: sums.acc.percent().unwrap_or(0.0),
            val_acc,
            test_acc,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
            bece_on,
            loss_terms: sums
                .terms
                .into_iter()
                .map(|(k, v)| (k, v / sums.seen as f64))
                .collect(),
            grad_norm_mean: sums.norm / n_batches as f64,
        };
        history.push(metrics.clone());

        // Persist: metrics line, best (if improved), then last/ with the state to resume from.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(run.join(METRICS_FILE))?;
        writeln!(f, "{}", serde_json::to_string(&metrics)?)?;
        f.sync_all()?;
        let sd = checkpoint::state_dict(&model);
        if val_improved || (val_rows.is_none() && epoch + 1 == cfg.epochs) {
            save_dir(run, BEST, |d| native::write(d, &sd, &cfg.model))?;
        }
        state.next_epoch = epoch + 1;
        save_dir(run, LAST, |d| {
            native::write(d, &sd, &cfg.model)?;
            save_optimizer(&d.join(OPTIMIZER_FILE), &adam)?;
            native::write_atomic(
                &d.join(STATE_FILE),
                serde_json::to_string_pretty(&state)?.as_bytes(),
            )
        })?;
        if opts.verbose {
            println!(
                "epoch {:>3}/{}  loss {:.4}  train {:.2} %  val {}  test {}  lr {:.2e}  {:.1} s{}",
                epoch + 1,
                cfg.epochs,
                metrics.train_loss,
                metrics.train_acc,
                fmt_acc(val_acc),
                fmt_acc(test_acc),
                lr,
                metrics.seconds,
                if val_improved { "  *best val" } else { "" }
            );
        }
        if let Err(e) = crate::plot::curves_for_run(run, &history, state.best_val.map(|s| s.epoch))
        {
            eprintln!("warning: could not draw curves: {e:#}");
        }
    }

    let report = Report {
        epochs: cfg.epochs,
        best_val_epoch: state.best_val.map(|s| s.epoch),
        val_acc_at_best_val: state.best_val.and_then(|s| s.val_acc),
        test_acc_at_best_val: state.best_val.and_then(|s| s.test_acc),
        test_acc_best_over_epochs: state.best_test.and_then(|s| s.test_acc),
        best_test_epoch: state.best_test.map(|s| s.epoch),
        final_test_acc: history.last().and_then(|m| m.test_acc),
        seed: cfg.seed,
        train_seconds: started.elapsed().as_secs_f64(),
    };
    native::write_atomic(
        &run.join(REPORT_FILE),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    Ok(report)
}

pub fn fmt_acc(a: Option<f64>) -> String {
    a.map_or("-".to_string(), |a| format!("{a:.2} %"))
}

fn progress_bar(
    verbose: bool,
    len: usize,
    epoch: usize,
    epochs: usize,
) -> Option<indicatif::ProgressBar> {
    if !verbose {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}  {per_sec}  eta {eta}",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    Some(bar)
}

/// Prints a report, labelling the official protocol as such.
pub fn print_report(r: &Report) {
    println!(
        "best val epoch: {}",
        r.best_val_epoch.map_or("-".into(), |e| (e + 1).to_string())
    );
    println!(
        "val accuracy at best val epoch:  {}",
        fmt_acc(r.val_acc_at_best_val)
    );
    println!(
        "test accuracy at best val epoch: {}  (honest protocol: model selected on val)",
        fmt_acc(r.test_acc_at_best_val)
    );
    println!(
        "best test accuracy over epochs:  {}  (official CACE-Net protocol: selected on test, optimistic)",
        fmt_acc(r.test_acc_best_over_epochs)
    );
}

/// Mean ± std (sample std, n − 1) of several seeds' reports.
#[derive(Debug, Clone, Serialize)]
pub struct SeedSummary {
    pub seeds: Vec<u64>,
    pub test_acc_at_best_val: MeanStd,
    pub test_acc_best_over_epochs: MeanStd,
    pub reports: Vec<Report>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl MeanStd {
    pub fn of(xs: &[f64]) -> Self {
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n.max(1) as f64;
        let var = if n > 1 {
            xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Self {
            mean,
            std: var.sqrt(),
            n,
        }
    }
}

impl std::fmt::Display for MeanStd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} ± {:.2} % (n = {})", self.mean, self.std, self.n)
    }
}

impl SeedSummary {
    pub fn from_reports(reports: &[Report]) -> Self {
        let honest: Vec<f64> = reports
            .iter()
            .filter_map(|r| r.test_acc_at_best_val)
            .collect();
        let official: Vec<f64> = reports
            .iter()
            .filter_map(|r| r.test_acc_best_over_epochs)
            .collect();
        Self {
            seeds: reports.iter().map(|r| r.seed).collect(),
            test_acc_at_best_val: MeanStd::of(&honest),
            test_acc_best_over_epochs: MeanStd::of(&official),
            reports: reports.to_vec(),
        }
    }

    pub fn print(&self) {
        println!("seeds {:?}", self.seeds);
        println!(
            "test accuracy at best val epoch: {}  (honest protocol)",
            self.test_acc_at_best_val
        );
        println!(
            "best test accuracy over epochs:  {}  (official CACE-Net protocol, selected on test)",
            self.test_acc_best_over_epochs
        );
    }
}
