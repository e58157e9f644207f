//! Batches for training and evaluation, from memory or streamed from the HDF5 files.
//!
//! `Memory` holds the needed rows as f32 in one contiguous buffer per modality (fast, but the
//! full AVE visual set is 4.2 GB). `Disk` reads each batch's rows from the HDF5 files (the OS
//! page cache keeps them warm; the process holds only a few batches). Either way a background
//! thread assembles the next batches while the model computes the current one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Result, bail};
use burn::tensor::{Device, Tensor, TensorData};

use crate::T;
use crate::data::annotations::BACKGROUND;
use crate::data::ave::{AveDir, VISUAL_FILE};
use crate::loss::Targets;

const LABELS: usize = BACKGROUND + 1;

/// Per-row shapes of a dataset: visual `[10, 7, 7, C]`, audio width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shapes {
    pub visual: [usize; 4],
    pub audio: usize,
}

impl Shapes {
    pub fn of(data: &AveDir) -> Result<Self> {
        let vs = data.visual_shape();
        if vs.len() != 4 {
            bail!(
                "{}: the model needs visual maps [N, 10, 7, 7, C]; found per-row shape {vs:?}",
                data.dir().join(VISUAL_FILE).display()
            );
        }
        Ok(Self {
            visual: [vs[0], vs[1], vs[2], vs[3]],
            audio: data.audio_dim(),
        })
    }

    fn visual_len(&self) -> usize {
        self.visual.iter().product()
    }
}

/// Training and evaluation need labels: `labels.h5`, `Annotations.txt`, or the 4143-row AVE set.
pub fn require_labels(data: &AveDir) -> Result<()> {
    if !data.has_labels() {
        bail!(
            "{}: no labels (labels.h5, or Annotations.txt, or the 4143-row AVE set)",
            data.dir().display()
        );
    }
    Ok(())
}

/// The rows a run needs, as f32 in memory.
pub struct FeatureStore {
    slot: HashMap<usize, usize>,
    visual: Vec<f32>,
    audio: Vec<f32>,
    labels: Vec<f32>,
    shapes: Shapes,
}

impl FeatureStore {
    /// Reads `rows` of `data` (features and one-hot labels) into memory.
    pub fn load(data: &AveDir, rows: &[usize]) -> Result<Self> {
        require_labels(data)?;
        let shapes = Shapes::of(data)?;
        let mut sorted = rows.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut visual = Vec::with_capacity(sorted.len() * shapes.visual_len());
        let mut audio = Vec::with_capacity(sorted.len() * T * shapes.audio);
        let mut labels = Vec::with_capacity(sorted.len() * T * LABELS);
        // Chunks of sorted rows keep HDF5 reads large and the temporary buffers small.
        for chunk in sorted.chunks(64) {
            data.read_visual(chunk, &mut visual)?;
            data.read_audio(chunk, &mut audio)?;
            data.read_labels(chunk, &mut labels)?;
        }
        let slot = sorted.iter().enumerate().map(|(i, &r)| (r, i)).collect();
        Ok(Self {
            slot,
            visual,
            audio,
            labels,
            shapes,
        })
    }

    /// Bytes of f32 feature memory `rows` rows of `data` would take.
    pub fn bytes_needed(data: &AveDir, rows: usize) -> usize {
        let per_row: usize =
            data.visual_shape().iter().product::<usize>() + T * data.audio_dim() + T * LABELS;
        4 * rows * per_row
    }

    fn gather(&self, rows: &[usize]) -> HostBatch {
        let (vl, al, ll) = (self.shapes.visual_len(), T * self.shapes.audio, T * LABELS);
        let mut b = HostBatch::with_capacity(rows, self.shapes);
        for r in rows {
            let s = self.slot[r];
            b.visual
                .extend_from_slice(&self.visual[s * vl..(s + 1) * vl]);
            b.audio.extend_from_slice(&self.audio[s * al..(s + 1) * al]);
            b.labels
                .extend_from_slice(&self.labels[s * ll..(s + 1) * ll]);
        }
        b
    }
}

/// One batch on the host, rows in batch order. `labels` is empty when the dataset has none.
pub struct HostBatch {
    pub rows: Vec<usize>,
    pub visual: Vec<f32>,
    pub audio: Vec<f32>,
    pub labels: Vec<f32>,
    pub shapes: Shapes,
}

impl HostBatch {
    fn with_capacity(rows: &[usize], shapes: Shapes) -> Self {
        let n = rows.len();
        Self {
            rows: rows.to_vec(),
            visual: Vec::with_capacity(n * shapes.visual_len()),
            audio: Vec::with_capacity(n * T * shapes.audio),
            labels: Vec::with_capacity(n * T * LABELS),
            shapes,
        }
    }

    /// Reads `rows` from the files, in batch order.
    fn read(data: &AveDir, rows: &[usize], shapes: Shapes) -> Result<Self> {
        let mut b = Self::with_capacity(rows, shapes);
        data.read_visual(rows, &mut b.visual)?;
        data.read_audio(rows, &mut b.audio)?;
        if data.has_labels() {
            data.read_labels(rows, &mut b.labels)?;
        }
        Ok(b)
    }

    /// `([B, 10, 7, 7, C], [B, 10, Ca], targets)` on `device` (`targets` is `None` without
    /// labels); `zero_audio` replaces audio by 0.
    pub fn into_tensors(
        mut self,
        zero_audio: bool,
        device: &Device,
    ) -> (Tensor<5>, Tensor<3>, Option<Targets>) {
        let b = self.rows.len();
        if zero_audio {
            self.audio.iter_mut().for_each(|x| *x = 0.0);
        }
        let [t, h, w, c] = self.shapes.visual;
        let targets = (!self.labels.is_empty()).then(|| Targets::from_onehot(&self.labels, b));
        let visual = Tensor::from_data(TensorData::new(self.visual, [b, t, h, w, c]), device);
        let audio = Tensor::from_data(
            TensorData::new(self.audio, [b, T, self.shapes.audio]),
            device,
        );
        (visual, audio, targets)
    }
}

/// Where batches come from.
#[derive(Clone)]
pub enum Features {
    Memory(Arc<FeatureStore>),
    /// The dataset directory; the loader thread opens its own handle.
    Disk(PathBuf),
}

/// Batches assembled ahead by a background thread: one, handed over when asked for.
pub struct Prefetch {
    rx: Receiver<Result<HostBatch>>,
    worker: Option<JoinHandle<()>>,
}

/// Batches queued beside the one the worker holds. 0: the worker assembles the next batch
/// while the model computes on the current one and hands it over on request, which hides all
/// of its time when assembly is the shorter (3.7 ms from memory, against a 1.4 s CPU step at
/// batch 64); every batch queued on top costs 64 MB and hides nothing more (issue 16: two
/// queued made 128 MB of a 400-video run's 1.67 GB peak).
const DEPTH: usize = 0;

impl Prefetch {
    pub fn start(features: Features, shapes: Shapes, batches: Vec<Vec<usize>>) -> Self {
        let (tx, rx) = sync_channel(DEPTH);
        let worker = std::thread::spawn(move || {
            let disk = match &features {
                Features::Disk(dir) => match AveDir::open(dir) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                        return;
                    }
                },
                Features::Memory(_) => None,
            };
            for rows in batches {
                let batch = match (&features, &disk) {
                    (Features::Memory(store), _) => Ok(store.gather(&rows)),
                    (_, Some(d)) => HostBatch::read(d, &rows, shapes),
                    _ => unreachable!(),
                };
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        Self {
            rx,
            worker: Some(worker),
        }
    }
}

impl Iterator for Prefetch {
    type Item = Result<HostBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Unblock and finish the worker: drain what it already queued.
        while self.rx.try_recv().is_ok() {}
        if let Some(w) = self.worker.take() {
            drop(std::mem::replace(&mut self.rx, sync_channel(1).1));
            let _ = w.join();
        }
    }
}
