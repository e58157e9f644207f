//! The point generator (official `PointGenerator`, `libs/datasets/loc_generators.py`): for
//! each pyramid level l (stride s = scale_factor^l) the points `t = 0, s, 2s, …` on the feature
//! grid, each with its level's regression range and stride: rows `[t, lo, hi, s]`.
//!
//! Points are buffered for `max_seq_len · max_buffer_len_factor` steps; a video needs
//! `len_l = L / s` rows per level, where L is max_seq_len in training and, in evaluation, its
//! own length padded to max_seq_len or up to a multiple of the largest stride (the padding of
//! [`super::padded_length`]). A length beyond the buffer is an error (the official code asserts).

use anyhow::{Result, bail};
use burn::tensor::{Device, Tensor, TensorData};

#[derive(Debug, Clone)]
pub struct PointGenerator {
    pub max_seq_len: usize,
    /// `max_seq_len · max_buffer_len_factor`.
    pub buffer_len: usize,
    pub scale_factor: usize,
    pub regression_range: Vec<(f32, f32)>,
    pub max_div_factor: usize,
}

impl PointGenerator {
    pub fn new(
        max_seq_len: usize,
        max_buffer_len_factor: f64,
        scale_factor: usize,
        regression_range: Vec<(f32, f32)>,
    ) -> Result<Self> {
        let levels = regression_range.len();
        let max_div_factor = scale_factor.pow(levels.saturating_sub(1) as u32);
        let buffer_len = (max_seq_len as f64 * max_buffer_len_factor).round() as usize;
        if buffer_len % max_div_factor != 0 {
            bail!(
                "point buffer length {buffer_len} (max_seq_len × max_buffer_len_factor) is not \
                 divisible by the largest stride {max_div_factor}"
            );
        }
        Ok(Self {
            max_seq_len,
            buffer_len,
            scale_factor,
            regression_range,
            max_div_factor,
        })
    }

    /// Per level `[T_l, 4]` rows `[t, lo, hi, stride]` for a video of `video_len` feature
    /// steps (ignored in training, where the length is max_seq_len).
    pub fn points(
        &self,
        video_len: usize,
        training: bool,
        device: &Device,
    ) -> Result<Vec<Tensor<2>>> {
        let len = if training {
            self.max_seq_len
        } else {
            super::padded_length(video_len, self.max_seq_len, self.max_div_factor)
        };
        let mut out = Vec::new();
        for (l, &(lo, hi)) in self.regression_range.iter().enumerate() {
            let stride = self.scale_factor.pow(l as u32);
            let n = len / stride;
            if n > self.buffer_len.div_ceil(stride) {
                bail!(
                    "a video of {video_len} feature steps needs {n} points at pyramid level {l}, \
                     beyond the point buffer of {} steps (max_seq_len × max_buffer_len_factor)",
                    self.buffer_len
                );
            }
            let mut rows = Vec::with_capacity(n * 4);
            for i in 0..n {
                rows.extend_from_slice(&[(i * stride) as f32, lo, hi, stride as f32]);
            }
            out.push(Tensor::from_data(TensorData::new(rows, [n, 4]), device));
        }
        Ok(out)
    }
}
