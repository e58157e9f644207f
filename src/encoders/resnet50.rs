//! ResNet-50 `layer4` maps (`[7, 7, 2048]` per second, or pooled `[2048]`), the "efficient"
//! visual encoder of REFERENCE §6.1, from a torchvision `resnet50` state dict or the CACE
//! fine-tuned checkpoint (§6.3). Inference only, BatchNorm in eval mode.
//!
//! Architecture as torchvision (v1.5: the stride sits on each Bottleneck's 3×3 `conv2`): `conv1`
//! 7×7/2 → `bn1` → ReLU → max-pool 3×3/2 → `layer1..layer4` of Bottlenecks (`conv1` 1×1, `conv2`
//! 3×3, `conv3` 1×1, each with its BN; `downsample.0` 1×1 conv + `downsample.1` BN on the first
//! block of a layer). `avgpool` and `fc` are not used (`fc.*` is ignored, as is
//! `num_batches_tracked`). Each BN (eps 1e-5, running statistics) is folded into the convolution
//! before it at load time: `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`, computed in f64.
//!
//! Two key layouts are read: torchvision's (`conv1.weight`, `layer1.0.bn2.running_var`, …) and
//! that of `Sequential(*list(resnet50.children())[:-2])`, which the CACE fine-tuning saves as
//! `{"I_state_dict": …}` (`0.*` = conv1, `1.*` = bn1, `4.*`–`7.*` = layer1–layer4). Either may
//! carry DistributedDataParallel's `module.` prefix.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};

use super::image::{Conv, INPUT_SIZE, Preprocess, mean_over_frames};
use super::weights::Weights;
use super::{FrameEncoder, RgbFrame};

/// Output channels of a Bottleneck per unit of `planes`.
pub const EXPANSION: usize = 4;
/// BatchNorm epsilon (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;

/// Widths and depths; the key names depend only on `blocks`, so tests use slim widths with the
/// real layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResNet50Config {
    /// Channels of the stem (`conv1`).
    pub stem: usize,
    /// Bottleneck widths of `layer1..layer4`; a layer outputs `planes · 4` channels.
    pub planes: [usize; 4],
    /// Bottlenecks per layer.
    pub blocks: [usize; 4],
    /// Frames run through the network at once (bounds memory).
    pub max_batch: usize,
}

impl Default for ResNet50Config {
    fn default() -> Self {
        Self {
            stem: 64,
            planes: [64, 128, 256, 512],
            blocks: [3, 4, 6, 3],
            max_batch: 16,
        }
    }
}

struct Bottleneck {
    conv1: Conv,
    conv2: Conv,
    conv3: Conv,
    downsample: Option<Conv>,
}

impl Bottleneck {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = relu(self.conv1.forward(x.clone()));
        let out = relu(self.conv2.forward(out));
        let out = self.conv3.forward(out);
        let identity = match &self.downsample {
            Some(ds) => ds.forward(x),
            None => x,
        };
        relu(out + identity)
    }
}

/// ResNet-50 up to `layer4`, with weights loaded and BatchNorm folded.
pub struct ResNet50 {
    conv1: Conv,
    layers: Vec<Vec<Bottleneck>>,
    pooled: bool,
    config: ResNet50Config,
    device: Device,
}

/// Loads torchvision `resnet50` weights or a CACE `I_state_dict` checkpoint. `pooled`: the
/// encoder outputs the mean over the 49 cells (`[2048]`) instead of the map (`[7, 7, 2048]`).
pub fn load(path: &Path, device: &Device, pooled: bool) -> Result<ResNet50> {
    load_with(ResNet50Config::default(), path, device, pooled)
}

/// Loads weights for the given widths (same keys as torchvision's `resnet50`).
pub fn load_with(
    config: ResNet50Config,
    path: &Path,
    device: &Device,
    pooled: bool,
) -> Result<ResNet50> {
    let w = Weights::open(path).context("loading ResNet50 weights")?;
    let keys = KeyMap::detect(&w);
    let mut ld = Loader { w, keys, device };

    let conv1 = ld.conv_bn("conv1", "bn1", [config.stem, 3, 7, 7], 2, 3)?;
    let mut layers = Vec::new();
    let mut c_in = config.stem;
    for (l, (&planes, &n_blocks)) in config.planes.iter().zip(&config.blocks).enumerate() {
        let c_out = planes * EXPANSION;
        let mut blocks = Vec::new();
        for b in 0..n_blocks {
            let p = format!("layer{}.{b}", l + 1);
            // v1.5: the first block of layer2..4 strides in its 3×3 conv (and its projection).
            let s = if b == 0 && l > 0 { 2 } else { 1 };
            let (c1, b1) = (format!("{p}.conv1"), format!("{p}.bn1"));
            let (c2, b2) = (format!("{p}.conv2"), format!("{p}.bn2"));
            let (c3, b3) = (format!("{p}.conv3"), format!("{p}.bn3"));
            let conv1 = ld.conv_bn(&c1, &b1, [planes, c_in, 1, 1], 1, 0)?;
            let conv2 = ld.conv_bn(&c2, &b2, [planes, planes, 3, 3], s, 1)?;
            let conv3 = ld.conv_bn(&c3, &b3, [c_out, planes, 1, 1], 1, 0)?;
            // torchvision `_make_layer`: a projection wherever the shape changes.
            let downsample = if s != 1 || c_in != c_out {
                let (cp, bp) = (format!("{p}.downsample.0"), format!("{p}.downsample.1"));
                Some(ld.conv_bn(&cp, &bp, [c_out, c_in, 1, 1], s, 0)?)
            } else {
                None
            };
            blocks.push(Bottleneck {
                conv1,
                conv2,
                conv3,
                downsample,
            });
            c_in = c_out;
        }
        layers.push(blocks);
    }
    Ok(ResNet50 {
        conv1,
        layers,
        pooled,
        config,
        device: device.clone(),
    })
}

/// Reads convolutions with their BatchNorm from a file in either layout.
struct Loader<'a> {
    w: Weights,
    keys: KeyMap,
    device: &'a Device,
}

impl Loader<'_> {
    /// The bias-free convolution `conv` followed by eval-mode BatchNorm `bn` (torchvision
    /// names), as one convolution with bias.
    fn conv_bn(
        &mut self,
        conv: &str,
        bn: &str,
        shape: [usize; 4],
        stride: usize,
        padding: usize,
    ) -> Result<Conv> {
        let weight = self.take(&format!("{conv}.weight"), &shape)?;
        let c = [shape[0]];
        let gamma = self.take(&format!("{bn}.weight"), &c)?;
        let beta = self.take(&format!("{bn}.bias"), &c)?;
        let mean = self.take(&format!("{bn}.running_mean"), &c)?;
        let var = self.take(&format!("{bn}.running_var"), &c)?;

        let per_out = weight.len() / shape[0];
        let mut folded_w = Vec::with_capacity(weight.len());
        let mut folded_b = Vec::with_capacity(shape[0]);
        for o in 0..shape[0] {
            let scale = gamma[o] as f64 / (var[o] as f64 + BN_EPS).sqrt();
            let row = &weight[o * per_out..(o + 1) * per_out];
            folded_w.extend(row.iter().map(|&v| (v as f64 * scale) as f32));
            folded_b.push((beta[o] as f64 - mean[o] as f64 * scale) as f32);
        }
        Ok(Conv::new(
            folded_w,
            folded_b,
            shape,
            stride,
            padding,
            self.device,
        ))
    }

    fn take(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.w.take(&self.keys.key(key), shape)
    }
}

/// Maps torchvision key names to the file's layout.
struct KeyMap {
    /// `""` or DistributedDataParallel's `"module."`.
    prefix: &'static str,
    /// Keys of `Sequential(resnet50 children[:-2])`: the top-level module is an index.
    sequential: bool,
}

impl KeyMap {
    /// Looks at how the file names the stem; defaults to torchvision's layout (so a wrong file
    /// fails naming `conv1.weight`).
    fn detect(w: &Weights) -> Self {
        for prefix in ["", "module."] {
            if w.contains(&format!("{prefix}conv1.weight")) {
                return Self {
                    prefix,
                    sequential: false,
                };
            }
            if w.contains(&format!("{prefix}0.weight")) {
                return Self {
                    prefix,
                    sequential: true,
                };
            }
        }
        Self {
            prefix: "",
            sequential: false,
        }
    }

    /// The file's name for the torchvision key or key prefix `key` (e.g. `layer1.0.conv1`).
    fn key(&self, key: &str) -> String {
        let (top, rest) = match key.split_once('.') {
            Some((top, rest)) => (top, Some(rest)),
            None => (key, None),
        };
        let top = match (self.sequential, top) {
            // resnet50.children(): conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc.
            (true, "conv1") => "0",
            (true, "bn1") => "1",
            (true, "layer1") => "4",
            (true, "layer2") => "5",
            (true, "layer3") => "6",
            (true, "layer4") => "7",
            (_, top) => top,
        };
        match rest {
            Some(rest) => format!("{}{top}.{rest}", self.prefix),
            None => format!("{}{top}", self.prefix),
        }
    }
}

impl ResNet50 {
    /// `[N, 3, 224, 224]` normalised frames → `layer4` `[N, C, 7, 7]` (C = 2048 for ResNet-50).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = relu(self.conv1.forward(x));
        let mut x = max_pool2d(
            x,
            MaxPoolOptions::new([3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1]),
        );
        for layer in &self.layers {
            for block in layer {
                x = block.forward(x);
            }
        }
        x
    }

    /// Channels of the output map.
    pub fn channels(&self) -> usize {
        self.config.planes[3] * EXPANSION
    }

    /// Whether [`FrameEncoder::encode_second`] pools over the 7×7 cells.
    pub fn pooled(&self) -> bool {
        self.pooled
    }

    pub fn config(&self) -> &ResNet50Config {
        &self.config
    }
}

/// Side of the `layer4` map for a 224×224 input (stride 32).
const MAP: usize = INPUT_SIZE / 32;

impl FrameEncoder for ResNet50 {
    fn name(&self) -> &'static str {
        "resnet50"
    }

    fn output_shape(&self) -> Vec<usize> {
        if self.pooled {
            vec![self.channels()]
        } else {
            vec![MAP, MAP, self.channels()]
        }
    }

    /// Mean over the frames of their `layer4` maps, channels last (`[7, 7, 2048]`), or further
    /// averaged over the 49 cells (`[2048]`).
    fn encode_second(&self, frames: &[RgbFrame]) -> Result<Vec<f32>> {
        let mean = mean_over_frames(
            frames,
            Preprocess::ResNet50,
            self.config.max_batch,
            &self.device,
            |x| self.forward(x),
        )
        .context("resnet50")?; // [C, 7, 7]
        Ok(if self.pooled {
            let [c, h, w] = mean.dims();
            crate::to_vec(mean.reshape([c, h * w]).mean_dim(1))
        } else {
            crate::to_vec(mean.permute([1, 2, 0]))
        })
    }
}
