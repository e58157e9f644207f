//! Targeted fine-tuning of the visual encoder with the audio-visual InfoNCE loss (paper §3.4,
//! Tables 3 and S5; REFERENCE §6.3): `cace finetune`.
//!
//! Per video, 10 frames (one per second, [`frames`]) go through the image encoder in training
//! mode, their maps are averaged over time and pooled; the video's frozen audio vectors
//! ([`data`]) are averaged; both are projected and L2-normalised, and a symmetric InfoNCE over
//! the batch pulls matching pairs together ([`clip`]). SGD with momentum and weight decay, lr ×
//! 0.1 at epochs 15 and 30 (or cosine). The run directory is that of `cace train`
//! ([`crate::train::run_dir`]): `metrics.jsonl`, `curves.png`, `best/` (held-out retrieval),
//! atomic `last/`, `--resume`; the fine-tuned encoder is written as `RUN/resnet50.pth` (or
//! `vgg19_bn.pth`), which `cace extract --weights` reads, and `RUN/I_state_dict.pth.tar`.

pub use crate::encoders::backbone;
pub mod clip;
pub mod config;
pub mod data;
pub mod frames;
pub mod task;
pub mod weights;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use crate::checkpoint::{self, native};
use crate::model::state::ParamList;
use crate::optim::Sgd;
use crate::train::run_dir::{RunDir, RunState, curve, read_state};
use crate::train::run_loop::run_epochs;
use backbone::BackboneConfig;
use clip::ClipConfig;
pub use config::FinetuneConfig;
use frames::FrameCache;
use task::{FinetuneLog, FinetuneTask, MODEL_FILE, MOMENTUM_FILE, TRACKED_KEY};

/// Options of one `cace finetune` run.
pub struct FinetuneOptions {
    /// A folder of videos or a list file.
    pub videos: PathBuf,
    /// AVE-layout folder with the audio vectors.
    pub features: PathBuf,
    /// Folder with the pretrained encoder (`resnet50.pth` / `vgg19_bn.pth`).
    pub weights: PathBuf,
    pub out: PathBuf,
    pub config: FinetuneConfig,
    pub resume: bool,
    pub device: Device,
    pub verbose: bool,
    /// Other widths than the real encoder's (tests use slim ones with the real layout).
    pub backbone: Option<BackboneConfig>,
}

/// Fine-tunes; returns the number of epochs run.
pub fn finetune(opts: &FinetuneOptions) -> Result<usize> {
    let cfg = &opts.config;
    cfg.validate()?;
    let (run, last) = RunDir::open(&opts.out, opts.resume)?;
    let (train, held_out, skipped, audio_dim) = split_videos(opts)?;
    let base = opts.device.clone();
    let device = base.clone().autodiff();
    base.seed(cfg.seed);
    device.seed(cfg.seed);
    let clip_config = ClipConfig {
        hidden_dim: cfg.hidden_dim,
        tau: cfg.tau,
        audio_dim,
        ..ClipConfig::new(
            opts.backbone
                .clone()
                .unwrap_or_else(|| BackboneConfig::real(cfg.encoder)),
        )
    };
    let mut model = clip_config.init(&device);
    let mut sgd = Sgd::new(cfg.sgd.clone());
    let (state, batches_tracked) = match &last {
        Some(dir) => {
            check_resumable(&run, cfg)?;
            let tracked = load_last(&mut model, &mut sgd, dir, &base)?;
            (read_state(dir)?, tracked)
        }
        None => {
            let file = opts.weights.join(cfg.encoder.weights_file());
            let tracked =
                backbone::load_backbone(&mut model.encoder_i, cfg.encoder, &file, &device)?;
            run.start(cfg)?;
            (RunState::default(), tracked)
        }
    };
    let cache = FrameCache {
        dir: run.path.join("frames"),
        seed: cfg.seed,
    };
    let (train, held_out) = cache_frames(&cache, train, held_out, skipped, &run, opts.verbose)?;
    if train.len() < cfg.batch_size {
        bail!(
            "{} videos to train on ({} held out), fewer than one batch of {}: lower --batch-size \
             (and local_batch) or hold out fewer videos",
            train.len(),
            held_out.len(),
            cfg.batch_size
        );
    }
    let mut task = FinetuneTask {
        cfg,
        model,
        sgd,
        batches_tracked,
        train,
        held_out,
        cache,
        base,
        device,
        verbose: opts.verbose,
    };
    let mut history = run.history(state.next_epoch)?;
    let has_val = task.has_retrieval();
    let state = run_epochs(&run, &mut task, state, cfg.epochs, has_val, &mut history)?;
    // The final epoch's encoder at the top of the run, as the official loop's last checkpoint.
    weights::save_backbone(
        &task.model.encoder_i,
        cfg.encoder,
        task.batches_tracked,
        &run.path,
    )?;
    Ok(state.next_epoch)
}

/// The usable videos, shuffled by the seed: `(train, held_out, skipped, audio width)`. Fails
/// before anything is decoded when fewer than one batch would be left to train on.
fn split_videos(opts: &FinetuneOptions) -> Result<SplitVideos> {
    let cfg = &opts.config;
    let mut found = data::load(&opts.videos, &opts.features)?;
    found
        .videos
        .shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed));
    let held = cfg.held_out.min(found.videos.len());
    let train = found.videos.split_off(held);
    if train.len() < cfg.batch_size {
        bail!(
            "{} videos to train on ({held} held out), fewer than one batch of {}: lower \
             --batch-size (and local_batch) or hold out fewer videos",
            train.len(),
            cfg.batch_size
        );
    }
    Ok((train, found.videos, found.skipped, found.audio_dim))
}

type SplitVideos = (
    Vec<data::Video>,
    Vec<data::Video>,
    Vec<(String, String)>,
    usize,
);

/// Decodes the frames not cached yet; drops the videos that failed; reports what was skipped
/// (on stderr and in `RUN/skipped.tsv`) and lists the held-out videos (`RUN/held_out.tsv`).
fn cache_frames(
    cache: &FrameCache,
    train: Vec<data::Video>,
    held_out: Vec<data::Video>,
    mut skipped: Vec<(String, String)>,
    run: &RunDir,
    verbose: bool,
) -> Result<(Vec<data::Video>, Vec<data::Video>)> {
    let all: Vec<data::Video> = train.iter().chain(&held_out).cloned().collect();
    let started = std::time::Instant::now();
    if verbose {
        // A plain line too: the progress bar below is drawn only on a terminal, and decoding
        // can take minutes before the first epoch says anything.
        eprintln!(
            "frames of {} videos: decoding the ones not in {} yet (once)",
            all.len(),
            cache.dir.display()
        );
    }
    let bar = verbose.then(|| {
        let bar = indicatif::ProgressBar::new(all.len() as u64);
        bar.set_message("decoding frames (once)");
        bar
    });
    let failed = cache.fill(&all, bar.as_ref())?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
        eprintln!("frames ready ({:.0} s)", started.elapsed().as_secs_f64());
    }
    let bad: std::collections::HashSet<&str> = failed.iter().map(|(id, _)| id.as_str()).collect();
    let keep = |v: Vec<data::Video>| -> Vec<data::Video> {
        v.into_iter()
            .filter(|v| !bad.contains(v.id.as_str()))
            .collect()
    };
    let (train, held_out) = (keep(train), keep(held_out));
    // Which videos the retrieval accuracy is measured on.
    let ids: String = held_out.iter().map(|v| format!("{}\n", v.id)).collect();
    crate::fsutil::write_file(&run.path.join("held_out.tsv"), ids.as_bytes())?;
    skipped.extend(failed.iter().cloned());
    if !skipped.is_empty() {
        eprintln!(
            "skipped {} videos (list in {}):",
            skipped.len(),
            run.path.join("skipped.tsv").display()
        );
        for (id, why) in skipped.iter().take(5) {
            eprintln!("  {id}: {why}");
        }
        let text: String = skipped
            .iter()
            .map(|(id, why)| format!("{id}\t{why}\n"))
            .collect();
        crate::fsutil::write_file(&run.path.join("skipped.tsv"), text.as_bytes())?;
    }
    Ok((train, held_out))
}

/// `--resume` may extend a run with more `epochs`, except under the cosine schedule, whose
/// every epoch's rate depends on the total ([`RunDir::check_resume`]).
fn check_resumable(run: &RunDir, cfg: &FinetuneConfig) -> Result<()> {
    run.check_resume(
        cfg,
        |c| c.epochs,
        |_, cfg| {
            if cfg.cosine {
                bail!(
                    "{}: a run on the cosine schedule cannot be extended (the rate of every epoch \
                 depends on the total); start a new run",
                    run.path.display()
                );
            }
            Ok(())
        },
    )
}

/// Restores the model, BatchNorm's count and SGD's momentum from `last/`; returns the count.
fn load_last(model: &mut clip::Clip, sgd: &mut Sgd, dir: &Path, base: &Device) -> Result<u64> {
    let file = dir.join(MODEL_FILE);
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let sd = native::from_safetensors(&bytes, &file)?;
    let device = base.clone().autodiff();
    checkpoint::load_state_dict(model, sd, &device, &file)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let tracked = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(TRACKED_KEY))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{}: no {TRACKED_KEY} in its metadata", file.display()))?;
    let file = dir.join(MOMENTUM_FILE);
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let params = ParamList::of(model);
    for (key, t) in native::from_safetensors(&bytes, &file)?.entries {
        let numel = params
            .entries
            .iter()
            .find(|e| e.0 == key)
            .map(|e| e.2.iter().product());
        if numel != Some(t.data.len()) {
            bail!(
                "{}: momentum `{key}` does not match a parameter of the model",
                file.display()
            );
        }
        let tensor = burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(t.data, [numel.unwrap_or(0)]),
            base,
        );
        sgd.momentum.insert(key, tensor);
    }
    Ok(tracked)
}

/// `RUN/curves.png`: loss, and the held-out retrieval top-1 of both directions.
fn curves(run: &Path, history: &[FinetuneLog]) -> Result<()> {
    use crate::plot::Series;
    let loss = curve(history, |m| Some(m.loss));
    let a2v = curve(history, |m| m.a2v_top1);
    let v2a = curve(history, |m| m.v2a_top1);
    let mut acc = Vec::new();
    if !a2v.is_empty() {
        acc.push(Series {
            name: "held-out audio→video top-1",
            points: &a2v,
        });
        acc.push(Series {
            name: "held-out video→audio top-1",
            points: &v2a,
        });
    }
    crate::plot::training_curves(
        &run.join("curves.png"),
        &format!("encoder fine-tuning ({} epochs)", history.len()),
        &[Series {
            name: "InfoNCE loss",
            points: &loss,
        }],
        &acc,
        None,
    )
}
pub mod bench;
