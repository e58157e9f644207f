//! One fine-tuning run as the shared epoch loop ([`crate::train::run_loop`]) drives it: the
//! official step (REFERENCE §6.3) per batch, retrieval accuracy on the held-out videos, and
//! what `best/` and `last/` hold.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::clip::{Clip, symmetric_info_nce};
use super::config::FinetuneConfig;
use super::data::Video;
use super::frames::FrameCache;
use super::weights::save_backbone;
use crate::T;
use crate::checkpoint::{self, StateDict, native};
use crate::optim::{KeyedGrads, Sgd};
use crate::train::run_dir::{EpochLog, EpochScore, RunDir, RunState};
use crate::train::run_loop::{Task, progress_bar};

/// The whole model (encoder, heads, BatchNorm statistics) in `last/` and `best/`.
pub const MODEL_FILE: &str = "clip.safetensors";
/// SGD's momentum buffers in `last/`.
pub const MOMENTUM_FILE: &str = "momentum.safetensors";
/// Metadata key of [`MODEL_FILE`] holding BatchNorm's `num_batches_tracked`.
pub const TRACKED_KEY: &str = "num_batches_tracked";

/// One line of `metrics.jsonl`. Accuracies in percent; retrieval among the held-out videos
/// (`a2v`: the audio finds its video's frames; `v2a`: the frames find their audio).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneLog {
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub seconds: f64,
    /// Top-1 of the training logits (rows: frames → audio), as the official loop prints.
    pub train_top1: f64,
    pub a2v_top1: Option<f64>,
    pub a2v_top5: Option<f64>,
    pub v2a_top1: Option<f64>,
    pub v2a_top5: Option<f64>,
}

impl EpochLog for FinetuneLog {
    fn epoch(&self) -> usize {
        self.epoch
    }
}

pub struct FinetuneTask<'a> {
    pub cfg: &'a FinetuneConfig,
    pub model: Clip,
    pub sgd: Sgd,
    /// BatchNorm's `num_batches_tracked`: forward passes in training mode so far.
    pub batches_tracked: u64,
    pub train: Vec<Video>,
    pub held_out: Vec<Video>,
    pub cache: FrameCache,
    /// The device without autodiff (retrieval) and with it (training).
    pub base: Device,
    pub device: Device,
    pub verbose: bool,
}

impl FinetuneTask<'_> {
    /// One step on `batch`: each share of `local_batch` videos contrasted on its own, their
    /// gradients averaged (DistributedDataParallel's rule), then SGD. Returns (loss, top-1
    /// count) summed over shares, on the device.
    fn step(&mut self, rows: &[usize], lr: f64) -> Result<(Tensor<1>, Tensor<1>)> {
        crate::pool::run(|| self.step_here(rows, lr))
    }

    /// [`Self::step`] on the calling thread.
    fn step_here(&mut self, rows: &[usize], lr: f64) -> Result<(Tensor<1>, Tensor<1>)> {
        let batch: Vec<&Video> = rows.iter().map(|&r| &self.train[r]).collect();
        let shares: Vec<&[&Video]> = batch.chunks(self.cfg.local_batch).collect();
        let r = shares.len() as f64;
        let mut sum: Option<KeyedGrads> = None;
        let (mut loss_sum, mut hits) = (None::<Tensor<1>>, None::<Tensor<1>>);
        for share in shares {
            let images = self.cache.batch(share, &self.device)?;
            let audio = audio_tensor(share, &self.device);
            let e = self.model.embed(images, audio);
            let logits = self.model.logits(&e);
            let loss = symmetric_info_nce(logits.clone());
            self.batches_tracked += 1;
            let grads = KeyedGrads::collect(&self.model, &loss.clone().div_scalar(r).backward());
            sum = Some(match sum {
                None => grads,
                Some(s) => add(s, grads),
            });
            let h = top1_hits(logits.inner());
            let l = loss.inner();
            loss_sum = Some(loss_sum.map_or(l.clone(), |s| s + l));
            hits = Some(hits.map_or(h.clone(), |s| s + h));
        }
        self.sgd.step(&mut self.model, &sum.expect("a share"), lr);
        Ok((loss_sum.expect("a share"), hits.expect("a share")))
    }

    /// Whether retrieval is measured: it ranks at least two held-out videos.
    pub fn has_retrieval(&self) -> bool {
        self.held_out.len() >= 2
    }

    /// Retrieval accuracy (%) among the held-out videos: `(a2v top-1, top-5, v2a top-1, top-5)`.
    fn retrieval(&self) -> Result<Option<[f64; 4]>> {
        if !self.has_retrieval() {
            return Ok(None);
        }
        let model = self.model.valid();
        let (mut image, mut audio) = (Vec::new(), Vec::new());
        let videos: Vec<&Video> = self.held_out.iter().collect();
        for chunk in videos.chunks(self.cfg.local_batch) {
            let e = model.embed(
                self.cache.batch(chunk, &self.base)?,
                audio_tensor(chunk, &self.base),
            );
            image.push(e.image);
            audio.push(e.audio);
        }
        let sim = Tensor::cat(image, 0).matmul(Tensor::cat(audio, 0).transpose()); // [N, N]
        let v2a = top_k_hits(&crate::to_vec(sim.clone()), videos.len());
        let a2v = top_k_hits(&crate::to_vec(sim.transpose()), videos.len());
        Ok(Some([a2v.0, a2v.1, v2a.0, v2a.1]))
    }
}

/// `[B, T, A]` audio vectors of `videos`.
fn audio_tensor(videos: &[&Video], device: &Device) -> Tensor<3> {
    let a = videos[0].audio.len() / T;
    let data: Vec<f32> = videos
        .iter()
        .flat_map(|v| v.audio.iter().copied())
        .collect();
    Tensor::from_data(TensorData::new(data, [videos.len(), T, a]), device)
}

fn add(mut a: KeyedGrads, b: KeyedGrads) -> KeyedGrads {
    for ((ka, ga), (kb, gb)) in a.grads.iter_mut().zip(b.grads) {
        debug_assert_eq!(*ka, kb);
        *ga = ga.clone() + gb;
    }
    a
}

/// How many rows of `logits` have their largest value on the diagonal, `[1]`.
fn top1_hits(logits: Tensor<2>) -> Tensor<1> {
    let [b, _] = logits.dims();
    let best = logits.argmax(1).reshape([b]);
    let diag = Tensor::<1, burn::tensor::Int>::arange(0..b as i64, &best.device());
    best.equal(diag).float().sum()
}

/// Top-1 and top-5 accuracy (%) of `n × n` row-major similarities, target on the diagonal.
pub fn top_k_hits(sim: &[f32], n: usize) -> (f64, f64) {
    let (mut top1, mut top5) = (0, 0);
    for i in 0..n {
        let row = &sim[i * n..(i + 1) * n];
        let rank = row.iter().filter(|&&v| v > row[i]).count();
        top1 += (rank == 0) as usize;
        top5 += (rank < 5) as usize;
    }
    (
        100.0 * top1 as f64 / n as f64,
        100.0 * top5 as f64 / n as f64,
    )
}

/// Seed of epoch `epoch`'s shuffle.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch as u64 + 1)
}

impl Task for FinetuneTask<'_> {
    type Log = FinetuneLog;

    fn epoch(&mut self, epoch: usize) -> Result<(FinetuneLog, EpochScore)> {
        let t0 = Instant::now();
        let lr = self.cfg.lr(epoch);
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(epoch_seed(
            self.cfg.seed,
            epoch,
        )));
        let n_batches = order.len() / self.cfg.batch_size; // drop_last, as the official loader
        let bar = progress_bar(self.verbose, n_batches, epoch, self.cfg.epochs);
        let (mut loss, mut hits) = (0.0, 0.0);
        for (i, rows) in order.chunks_exact(self.cfg.batch_size).enumerate() {
            let (l, h) = self
                .step(rows, lr)
                .with_context(|| format!("batch {}", i + 1))?;
            let shares = (self.cfg.batch_size / self.cfg.local_batch) as f64;
            loss += crate::to_vec(l)[0] as f64 / shares;
            hits += crate::to_vec(h)[0] as f64;
            if let Some(bar) = &bar {
                bar.set_message(format!("loss {:.4}", loss / (i + 1) as f64));
                bar.inc(1);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let r = self.retrieval()?;
        let log = FinetuneLog {
            epoch,
            loss: loss / n_batches as f64,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
            train_top1: 100.0 * hits / (n_batches * self.cfg.batch_size) as f64,
            a2v_top1: r.map(|r| r[0]),
            a2v_top5: r.map(|r| r[1]),
            v2a_top1: r.map(|r| r[2]),
            v2a_top5: r.map(|r| r[3]),
        };
        // Selection on the held-out retrieval (mean of both directions' top-1).
        let score = EpochScore {
            epoch,
            val_acc: r.map(|r| (r[0] + r[2]) / 2.0),
            test_acc: None,
        };
        Ok((log, score))
    }

    type Weights = StateDict;

    fn weights(&self) -> StateDict {
        checkpoint::state_dict(&self.model)
    }

    /// `clip.safetensors` (everything, for `--resume`) and the encoder's two `.pth` files.
    fn save_model(&self, weights: &StateDict, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tracked = Some((TRACKED_KEY, self.batches_tracked.to_string()));
        crate::fsutil::write_file(
            &dir.join(MODEL_FILE),
            &native::to_safetensors(weights, tracked)?,
        )?;
        save_backbone(
            &self.model.encoder_i,
            self.cfg.encoder,
            self.batches_tracked,
            dir,
        )
    }

    fn save_resume_state(&self, dir: &Path) -> Result<()> {
        let mut keys: Vec<&String> = self.sgd.momentum.keys().collect();
        keys.sort();
        let sd = StateDict {
            entries: keys
                .into_iter()
                .map(|k| {
                    let t = &self.sgd.momentum[k];
                    let data = crate::to_vec(t.clone());
                    (
                        k.clone(),
                        checkpoint::StoredTensor {
                            shape: vec![data.len()],
                            data,
                        },
                    )
                })
                .collect(),
        };
        crate::fsutil::write_file(
            &dir.join(MOMENTUM_FILE),
            &native::to_safetensors(&sd, None)?,
        )
    }

    fn after_epoch(
        &self,
        run: &RunDir,
        history: &[FinetuneLog],
        _state: &RunState,
        improved: bool,
    ) {
        let m = history.last().expect("an epoch was just run");
        if self.verbose {
            let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} %"));
            println!(
                "epoch {:>3}/{}  loss {:.4}  train top-1 {:.1} %  held-out a2v {} / {}  v2a {} / {} (top-1 / top-5)  lr {:.1e}  {:.1} s{}",
                m.epoch + 1,
                self.cfg.epochs,
                m.loss,
                m.train_top1,
                pct(m.a2v_top1),
                pct(m.a2v_top5),
                pct(m.v2a_top1),
                pct(m.v2a_top5),
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
