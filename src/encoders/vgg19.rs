//! VGG19 `pool5` maps, the visual features of AVE-ECCV18 (`[7, 7, 512]` per second), from a
//! torchvision `vgg19` state dict. Inference only.
//!
//! torchvision's `features` is a flat `Sequential`: per block some conv3×3 (padding 1) + ReLU
//! pairs, then a 2×2 max-pool; conv `k` of the network sits at index `2k + (pools before it)`, so
//! the keys are `features.{0,2,5,7,10,12,14,16,19,21,23,25,28,30,32,34}.{weight,bias}`.
//! `classifier.*` (and anything else) in the file is ignored. The output is taken after the last
//! max-pool (`pool5`), before torchvision's adaptive average pool (the identity at 224×224 input).
//!
//! Note: the distributed AVE features came from Keras VGG19 weights with caffe preprocessing; see
//! [`super::image`] for why these features differ numerically.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};

use super::image::{Conv, INPUT_SIZE, Preprocess, mean_over_frames};
use super::weights::Weights;
use super::{FrameEncoder, RgbFrame};

/// Convolutions per block in VGG19 (configuration "E").
pub const CONVS_PER_BLOCK: [usize; 5] = [2, 2, 4, 4, 4];

/// Channel widths of the five blocks; the key names do not depend on them, so tests use a slim
/// variant with the real layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vgg19Config {
    pub widths: [usize; 5],
    /// Frames run through the network at once; bounds memory. Measured on the CPU backend: a
    /// process loading the 548 MB torchvision file (classifier included) and encoding seconds of
    /// 16 frames peaked at 1.3 GB resident.
    pub max_batch: usize,
}

impl Default for Vgg19Config {
    fn default() -> Self {
        Self {
            widths: [64, 128, 256, 512, 512],
            max_batch: 16,
        }
    }
}

/// VGG19 up to `pool5`, with weights loaded.
pub struct Vgg19 {
    /// Convolutions per block, in order.
    blocks: Vec<Vec<Conv>>,
    config: Vgg19Config,
    device: Device,
}

/// Loads torchvision `vgg19` weights (a `.pth` state dict) with the real channel widths.
pub fn load(path: &Path, device: &Device) -> Result<Vgg19> {
    load_with(Vgg19Config::default(), path, device)
}

/// Loads weights for the given widths (same keys as torchvision's `vgg19`).
pub fn load_with(config: Vgg19Config, path: &Path, device: &Device) -> Result<Vgg19> {
    let mut w = Weights::open(path).context("loading VGG19 weights")?;
    let mut blocks = Vec::new();
    let (mut index, mut c_in) = (0, 3);
    for (&n_convs, &width) in CONVS_PER_BLOCK.iter().zip(&config.widths) {
        let mut convs = Vec::new();
        for _ in 0..n_convs {
            let shape = [width, c_in, 3, 3];
            let weight = w.take(&format!("features.{index}.weight"), &shape)?;
            let bias = w.take(&format!("features.{index}.bias"), &[width])?;
            convs.push(Conv::new(weight, bias, shape, 1, 1, device));
            index += 2; // conv, ReLU
            c_in = width;
        }
        blocks.push(convs);
        index += 1; // max-pool
    }
    Ok(Vgg19 {
        blocks,
        config,
        device: device.clone(),
    })
}

impl Vgg19 {
    /// `[N, 3, 224, 224]` normalised frames → `pool5` `[N, C, 7, 7]` (C = 512 for VGG19).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = x;
        for convs in &self.blocks {
            for conv in convs {
                x = relu(conv.forward(x));
            }
            x = max_pool2d(x, MaxPoolOptions::new([2, 2]));
        }
        x
    }

    /// Channels of the output map.
    pub fn channels(&self) -> usize {
        self.config.widths[4]
    }

    pub fn config(&self) -> &Vgg19Config {
        &self.config
    }
}

/// Side of the `pool5` map for a 224×224 input (five halvings).
const MAP: usize = INPUT_SIZE / 32;

impl FrameEncoder for Vgg19 {
    fn name(&self) -> &'static str {
        "vgg19"
    }

    fn output_shape(&self) -> Vec<usize> {
        vec![MAP, MAP, self.channels()]
    }

    /// Mean over the frames of their `pool5` maps, channels last (`[7, 7, 512]`, AVE's layout).
    fn encode_second(&self, frames: &[RgbFrame]) -> Result<Vec<f32>> {
        let mean = mean_over_frames(
            frames,
            Preprocess::Vgg19,
            self.config.max_batch,
            &self.device,
            |x| self.forward(x),
        )
        .context("vgg19")?; // [C, 7, 7]
        Ok(crate::to_vec(mean.permute([1, 2, 0])))
    }
}
