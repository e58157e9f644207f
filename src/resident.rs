//! Keeping the training loop off the host: the dataset held on the compute device when it fits
//! ([`DeviceData`]), batches from either place ([`Batches`]), and the values the loop reports
//! gathered on the device and read back in one transfer ([`Readback`]).
//!
//! On a GPU each read of a device value waits for all queued work; a loop that reads a loss
//! after every step leaves the device idle while the host catches up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{Result, bail};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::batch::{Features, Prefetch, Shapes};
use crate::loss::Targets;

/// Rows are held in blocks of at most this many bytes: some backends cap the size of one
/// buffer (wgpu: `max_storage_buffer_binding_size`, 128 MiB by default). A training batch of
/// 64 videos is about as large, so a device that trains can hold a block.
const BLOCK_BYTES: usize = 64 << 20;

/// `features_on_device` left to `None` keeps the features on a GPU when they take at most this
/// much (the full AVE set, 4,143 videos of VGG19 maps, takes 3.9 GiB). The device's free
/// memory is not queried; set `features_on_device` to decide explicitly.
pub const AUTO_DEVICE_BYTES: usize = 6 << 30;

/// Features (and host-side labels) of a set of rows, on the compute device.
pub struct DeviceData {
    /// `(visual [n, 10, 7, 7, C], audio [n, 10, Ca])` per block of `block_rows` sorted rows.
    blocks: Vec<(Tensor<5>, Tensor<3>)>,
    block_rows: usize,
    slot: HashMap<usize, usize>,
    /// One-hot labels per slot, `label_len` values each; empty for an unlabelled set.
    labels: Vec<f32>,
    label_len: usize,
}

impl DeviceData {
    /// Bytes the features of `rows` rows take on the device.
    pub fn bytes_needed(shapes: Shapes, rows: usize) -> usize {
        4 * rows * (shapes.visual.iter().product::<usize>() + crate::T * shapes.audio)
    }

    /// Copies `rows` from `features` (in memory or streamed from the files) to `device`;
    /// `zero_audio` stores zeros for the audio, as the batches would carry.
    pub fn load(
        features: &Features,
        shapes: Shapes,
        rows: &[usize],
        zero_audio: bool,
        device: &Device,
    ) -> Result<Self> {
        let mut sorted = rows.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let block_rows = (BLOCK_BYTES / Self::bytes_needed(shapes, 1)).max(1);
        let chunks: Vec<Vec<usize>> = sorted.chunks(block_rows).map(<[usize]>::to_vec).collect();
        let mut blocks = Vec::with_capacity(chunks.len());
        let mut labels = Vec::new();
        for batch in Prefetch::start(features.clone(), shapes, chunks) {
            let batch = batch?;
            labels.extend_from_slice(&batch.labels);
            let (visual, audio, _) = batch.into_tensors(zero_audio, device);
            blocks.push((visual, audio));
        }
        if blocks.len() != sorted.len().div_ceil(block_rows) {
            bail!("the feature loader stopped early");
        }
        let label_len = labels.len() / sorted.len().max(1);
        let slot = sorted.iter().enumerate().map(|(i, &r)| (r, i)).collect();
        Ok(Self {
            blocks,
            block_rows,
            slot,
            labels,
            label_len,
        })
    }

    /// `rows` (each loaded) as one batch on `device` (the loading device, with or without
    /// autodiff), in the order given.
    pub fn batch(
        &self,
        rows: &[usize],
        device: &Device,
    ) -> (Tensor<5>, Tensor<3>, Option<Targets>) {
        // Rows of each block are taken with one `select`, blocks in order; a last `select`
        // puts them back in batch order.
        let mut by_block: BTreeMap<usize, (Vec<i64>, Vec<usize>)> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            let s = self.slot[r];
            let e = by_block.entry(s / self.block_rows).or_default();
            e.0.push((s % self.block_rows) as i64);
            e.1.push(i);
        }
        let base = self.blocks[0].0.device();
        let index = |v: Vec<i64>| {
            let n = v.len();
            Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &base)
        };
        let (mut visual, mut audio, mut order) = (Vec::new(), Vec::new(), Vec::new());
        for (block, (local, positions)) in by_block {
            let idx = index(local);
            visual.push(self.blocks[block].0.clone().select(0, idx.clone()));
            audio.push(self.blocks[block].1.clone().select(0, idx));
            order.extend(positions);
        }
        let (mut visual, mut audio) = (Tensor::cat(visual, 0), Tensor::cat(audio, 0));
        if order.iter().enumerate().any(|(j, &i)| i != j) {
            let mut inverse = vec![0i64; order.len()];
            for (j, &i) in order.iter().enumerate() {
                inverse[i] = j as i64;
            }
            let idx = index(inverse);
            visual = visual.select(0, idx.clone());
            audio = audio.select(0, idx);
        }
        if device.is_autodiff() {
            visual = visual.autodiff();
            audio = audio.autodiff();
        }
        let targets = (self.label_len > 0).then(|| {
            let mut l = Vec::with_capacity(rows.len() * self.label_len);
            for r in rows {
                let s = self.slot[r];
                l.extend_from_slice(&self.labels[s * self.label_len..(s + 1) * self.label_len]);
            }
            Targets::from_onehot(&l, rows.len())
        });
        (visual, audio, targets)
    }
}

/// One batch on the compute device.
pub struct Batch {
    pub rows: Vec<usize>,
    pub visual: Tensor<5>,
    pub audio: Tensor<3>,
    pub targets: Option<Targets>,
}

/// Where a run's batches come from.
#[derive(Clone)]
pub enum Batches {
    /// Assembled on the host by a background thread and copied over per batch.
    Host(Features),
    /// Already on the device (its `zero_audio` was applied when loading).
    Device(Arc<DeviceData>),
}

impl Batches {
    /// The batches of `rows` lists, in order, on `device`.
    pub fn iter(
        &self,
        shapes: Shapes,
        batches: Vec<Vec<usize>>,
        zero_audio: bool,
        device: &Device,
    ) -> Box<dyn Iterator<Item = Result<Batch>>> {
        let device = device.clone();
        match self {
            Batches::Host(features) => Box::new(
                Prefetch::start(features.clone(), shapes, batches).map(move |b| {
                    let b = b?;
                    let rows = b.rows.clone();
                    let (visual, audio, targets) = b.into_tensors(zero_audio, &device);
                    Ok(Batch {
                        rows,
                        visual,
                        audio,
                        targets,
                    })
                }),
            ),
            Batches::Device(data) => {
                let data = data.clone();
                Box::new(batches.into_iter().map(move |rows| {
                    let (visual, audio, targets) = data.batch(&rows, &device);
                    Ok(Batch {
                        rows,
                        visual,
                        audio,
                        targets,
                    })
                }))
            }
        }
    }
}

/// Device values queued for the host: each entry is a list of tensors; [`Readback::read`]
/// concatenates every queued value on the device and reads them in one transfer.
#[derive(Default)]
pub struct Readback {
    parts: Vec<Tensor<1>>,
    lens: Vec<usize>,
}

impl Readback {
    /// Queues one entry (tensors of any rank, flattened; autodiff tensors are detached).
    pub fn push(&mut self, tensors: Vec<Tensor<1>>) {
        let mut len = 0;
        for t in tensors {
            len += t.dims()[0];
            self.parts.push(t.inner());
        }
        self.lens.push(len);
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// The values of every queued entry, in order; empties the queue.
    pub fn read(&mut self) -> Vec<Vec<f32>> {
        if self.parts.is_empty() {
            return vec![Vec::new(); std::mem::take(&mut self.lens).len()];
        }
        let all = crate::to_vec(Tensor::cat(std::mem::take(&mut self.parts), 0));
        let mut rest = &all[..];
        std::mem::take(&mut self.lens)
            .into_iter()
            .map(|n| {
                let (entry, tail) = rest.split_at(n);
                rest = tail;
                entry.to_vec()
            })
            .collect()
    }
}

/// `t` as a vector (row-major).
pub fn flat<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n = t.shape().num_elements();
    t.reshape([n])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows spread over three blocks come back in the order asked for, labels with them.
    #[test]
    fn batches_gather_rows_across_blocks_in_order() {
        let device = Device::flex();
        // Dataset rows 10..16 in blocks of 2; row r has visual values r·100 + i, audio −r.
        let rows: Vec<usize> = (10..16).collect();
        let block = |rs: &[usize]| {
            let v: Vec<f32> = rs
                .iter()
                .flat_map(|&r| (0..10).map(move |i| (r * 100 + i) as f32))
                .collect();
            let a: Vec<f32> = rs.iter().flat_map(|&r| [-(r as f32); 10]).collect();
            (
                Tensor::from_data(TensorData::new(v, [rs.len(), 10, 1, 1, 1]), &device),
                Tensor::from_data(TensorData::new(a, [rs.len(), 10, 1]), &device),
            )
        };
        let mut labels = vec![0f32; 6 * 10 * 29];
        for (s, _) in rows.iter().enumerate() {
            for t in 0..10 {
                labels[(s * 10 + t) * 29 + s] = 1.0; // slot s: class s in every segment
            }
        }
        let data = DeviceData {
            blocks: rows.chunks(2).map(block).collect(),
            block_rows: 2,
            slot: rows.iter().enumerate().map(|(i, &r)| (r, i)).collect(),
            labels,
            label_len: 290,
        };
        let want = [15, 10, 13, 12, 11];
        let (v, a, t) = data.batch(&want, &device.clone().autodiff());
        assert!(v.is_autodiff() && a.is_autodiff());
        assert_eq!(v.dims(), [5, 10, 1, 1, 1]);
        let v = crate::to_vec(v);
        let a = crate::to_vec(a);
        for (i, &r) in want.iter().enumerate() {
            assert_eq!(v[i * 10], (r * 100) as f32, "row {r}");
            assert_eq!(v[i * 10 + 9], (r * 100 + 9) as f32, "row {r}");
            assert_eq!(a[i * 10], -(r as f32), "row {r}");
        }
        assert_eq!(t.unwrap().class, vec![5, 0, 3, 2, 1]);
        // One block, already in order: no reordering needed.
        let (v, _, _) = data.batch(&[12, 13], &device);
        assert_eq!(crate::to_vec(v)[10], 1300.0);
    }

    #[test]
    fn readback_returns_each_entry_in_order() {
        let device = Device::flex().autodiff();
        let mut r = Readback::default();
        let a = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device).require_grad();
        r.push(vec![flat(a.clone()), Tensor::from_floats([5.0], &device)]);
        r.push(vec![]);
        r.push(vec![flat(a.sum())]);
        assert_eq!(
            r.read(),
            vec![vec![1.0, 2.0, 3.0, 4.0, 5.0], vec![], vec![10.0]]
        );
        assert!(r.is_empty());
        assert!(r.read().is_empty());
    }
}
