//! VGGish (the torchvggish port of Google's TF model): 96×64 log-mel examples → 128-d
//! embeddings, the audio features AVE-ECCV18 ships and CACE-Net reads.
//!
//! Keys as torchvggish's `VGG` state dict: `features.{0,3,6,8,11,13}.{weight,bias}` (3×3 convs,
//! padding 1, each followed by ReLU; 2×2 max-pools after `features.0`, `.3`, `.8`, `.13`) and
//! `embeddings.{0,2,4}.{weight,bias}` (Linear 512·6·4→4096→4096→128, each followed by ReLU).
//! The output is the last ReLU's, with no PCA/quantisation postprocessing: AVE's audio features
//! are these non-negative values (REFERENCE §1.1).

use std::path::Path;

use anyhow::{Result, bail};
use burn::tensor::activation::relu;
use burn::tensor::module::{conv2d, linear, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData};

use super::AudioEncoder;
use super::logmel::{VggishFrontEnd, vggish};
use super::weights::Weights;

/// Examples per forward pass: bounds the activation memory for long clips.
const CHUNK: usize = 10;

/// Layer widths; [`VggishConfig::full`] is the real network, smaller ones serve tests.
#[derive(Debug, Clone, PartialEq)]
pub struct VggishConfig {
    /// Output channels of the six convolutions (`features.0, 3, 6, 8, 11, 13`).
    pub convs: [usize; 6],
    /// Width of `embeddings.0` and `embeddings.2`.
    pub hidden: usize,
    /// Embedding width (`embeddings.4`).
    pub dim: usize,
}

impl VggishConfig {
    pub fn full() -> Self {
        Self {
            convs: [64, 128, 256, 256, 512, 512],
            hidden: 4096,
            dim: 128,
        }
    }
}

/// The state-dict index of each convolution in `features` and whether a max-pool follows it.
const CONV_LAYERS: [(usize, bool); 6] = [
    (0, true),
    (3, true),
    (6, false),
    (8, true),
    (11, false),
    (13, true),
];

/// After four 2×2 pools a 96×64 example is 6×4.
const FINAL_H: usize = vggish::EXAMPLE_FRAMES / 16;
const FINAL_W: usize = vggish::MEL_BINS / 16;

pub struct Vggish {
    config: VggishConfig,
    /// `(weight [out, in, 3, 3], bias [out], pool after)`.
    convs: Vec<(Tensor<4>, Tensor<1>, bool)>,
    /// `(weight [in, out], bias [out])` for `embeddings.0, 2, 4`.
    fcs: Vec<(Tensor<2>, Tensor<1>)>,
    front_end: VggishFrontEnd,
    device: Device,
}

fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// The full-size network from a torchvggish state dict (e.g. `vggish-10086976.pth`).
pub fn load(path: &Path, device: &Device) -> Result<Vggish> {
    Vggish::load(path, VggishConfig::full(), device)
}

impl Vggish {
    /// Reads `path` with the widths of `config`; a missing key or a wrong shape is an error
    /// naming the file and the key.
    pub fn load(path: &Path, config: VggishConfig, device: &Device) -> Result<Self> {
        let mut w = Weights::open(path)?;
        let mut convs = Vec::new();
        let mut c_in = 1;
        for (&(index, pool), &c_out) in CONV_LAYERS.iter().zip(&config.convs) {
            let shape = [c_out, c_in, 3, 3];
            let weight = w.take(&format!("features.{index}.weight"), &shape)?;
            let bias = w.take(&format!("features.{index}.bias"), &[c_out])?;
            convs.push((
                tensor(weight, shape, device),
                tensor(bias, [c_out], device),
                pool,
            ));
            c_in = c_out;
        }
        let flat = c_in * FINAL_H * FINAL_W;
        let sizes = [
            (0, flat, config.hidden),
            (2, config.hidden, config.hidden),
            (4, config.hidden, config.dim),
        ];
        let mut fcs = Vec::new();
        for (index, d_in, d_out) in sizes {
            let weight = w.take(&format!("embeddings.{index}.weight"), &[d_out, d_in])?;
            let bias = w.take(&format!("embeddings.{index}.bias"), &[d_out])?;
            // PyTorch stores [out, in]; burn's `linear` takes [in, out].
            fcs.push((
                tensor(weight, [d_out, d_in], device).transpose(),
                tensor(bias, [d_out], device),
            ));
        }
        Ok(Self {
            config,
            convs,
            fcs,
            front_end: VggishFrontEnd::new(),
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &VggishConfig {
        &self.config
    }

    pub fn front_end(&self) -> &VggishFrontEnd {
        &self.front_end
    }

    /// Log-mel examples `[n, 1, 96, 64]` → embeddings `[n, dim]` (torchvggish `VGG.forward`
    /// without postprocessing).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = x;
        for (weight, bias, pool) in &self.convs {
            let conv = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            x = relu(conv2d(x, weight.clone(), Some(bias.clone()), conv));
            if *pool {
                x = max_pool2d(x, MaxPoolOptions::new([2, 2]));
            }
        }
        // [n, C, 6, 4]. torchvggish transposes to NHWC before flattening so that the 512·6·4
        // vector is in the TF model's order, which the embedding weights expect.
        let [n, c, h, w] = x.dims();
        let mut x = x.permute([0, 2, 3, 1]).reshape([n, h * w * c]);
        for (weight, bias) in &self.fcs {
            x = relu(linear(x, weight.clone(), Some(bias.clone())));
        }
        x
    }
}

impl AudioEncoder for Vggish {
    fn name(&self) -> &'static str {
        "vggish"
    }

    fn sample_rate(&self) -> u32 {
        vggish::SAMPLE_RATE
    }

    fn dim(&self) -> usize {
        self.config.dim
    }

    /// Runs the front end over the whole clip (as torchvggish does) and embeds the first
    /// `seconds` examples. Examples are 0.96 s long and do not overlap, so `s` seconds give at
    /// least `s` of them (exactly `s` up to 24 s, hence 10 for AVE's 10-s clips); from 25 s on
    /// there are extra trailing examples, which are dropped, and example `i` starts at `0.96·i` s.
    fn encode(&self, samples: &[f32], seconds: usize) -> Result<Vec<f32>> {
        let rate = vggish::SAMPLE_RATE as usize;
        if seconds == 0 || samples.len() != seconds * rate {
            bail!(
                "vggish: expected {} samples ({seconds} s of mono audio at {rate} Hz), got {}",
                seconds * rate,
                samples.len()
            );
        }
        let (n, examples) = self.front_end.examples(samples);
        if n < seconds {
            bail!("vggish: {seconds} s of audio gave only {n} log-mel examples");
        }
        let per_example = vggish::EXAMPLE_FRAMES * vggish::MEL_BINS;
        let mut out = Vec::with_capacity(seconds * self.config.dim);
        for start in (0..seconds).step_by(CHUNK) {
            let b = CHUNK.min(seconds - start);
            let data = examples[start * per_example..(start + b) * per_example].to_vec();
            let x = tensor(
                data,
                [b, 1, vggish::EXAMPLE_FRAMES, vggish::MEL_BINS],
                &self.device,
            );
            out.extend(crate::to_vec(self.forward(x)));
        }
        Ok(out)
    }
}
