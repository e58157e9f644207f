//! VGG19-BN `features` maps (`[7, 7, 512]` per second) from torchvision's `vgg19_bn` state dict
//! or a fine-tuned one (`cace finetune --encoder vgg19-bn`): the visual features of Table S5's
//! VGG19 rows, whose fine-tuning (the published `clip/model.py`) uses this network.
//!
//! The network is the trainable one of [`super::backbone`], run on a device without autodiff
//! (BatchNorm on its running statistics). Frames get the same resize and crop as the
//! fine-tuning's (torchvision's ResNet-50 transforms, [`Preprocess::ResNet50`]), so features of
//! the pretrained and the fine-tuned encoder differ only by the weights.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::Device;

use super::backbone::{Backbone, BackboneConfig, BackboneKind, load_backbone};
use super::image::{Preprocess, mean_over_frames};
use super::{FrameEncoder, RgbFrame};

/// Frames run through the network at once (bounds memory).
const MAX_BATCH: usize = 16;

pub struct Vgg19Bn {
    net: Backbone,
    device: Device,
}

/// Loads `vgg19_bn.pth` (torchvision keys, or the official `Sequential` ones).
pub fn load(path: &Path, device: &Device) -> Result<Vgg19Bn> {
    let mut net = BackboneConfig::real(BackboneKind::Vgg19Bn).init(device);
    load_backbone(&mut net, BackboneKind::Vgg19Bn, path, device)?;
    Ok(Vgg19Bn {
        net,
        device: device.clone(),
    })
}

impl FrameEncoder for Vgg19Bn {
    fn name(&self) -> &'static str {
        "vgg19_bn"
    }

    fn output_shape(&self) -> Vec<usize> {
        vec![7, 7, 512]
    }

    /// Mean over the frames of their 7×7 maps, channels last.
    fn encode_second(&self, frames: &[RgbFrame]) -> Result<Vec<f32>> {
        let mean = mean_over_frames(frames, Preprocess::ResNet50, MAX_BATCH, &self.device, |x| {
            self.net.forward(x)
        })
        .context("vgg19_bn")?; // [512, 7, 7]
        Ok(crate::to_vec(mean.permute([1, 2, 0])))
    }
}
