//! From a user's video to the features CACE-Net reads: decoding, the image and audio front ends,
//! and the four encoders (VGG19 `pool5` maps and VGGish embeddings — the standard AVE features —
//! and ResNet50 maps with PANNs Cnn14 embeddings — the paper's "efficient encoders").
//!
//! The flow for one clip: the decoder yields RGB frames sampled 16 per second and mono audio at the
//! audio encoder's rate → a [`FrameEncoder`] turns each second's frames into one feature (mean of
//! the per-frame outputs, as AVE-ECCV18 and REFERENCE §6.1 do) → an [`AudioEncoder`] turns the
//! clip's samples into one embedding per second. Weights come from the `.pth` files users already
//! have, read with [`crate::checkpoint::pth`]; [`weights::Weights`] gives each encoder its tensors
//! by key with shape checks, so a wrong file fails naming the file and the first bad key.

pub mod backbone;
pub mod cnn14;
pub mod conv1x1_flex;
pub mod conv2d_flex;
pub mod conv2d_shifted;
pub mod decode;
pub mod fft;
pub mod image;
pub mod logmel;
pub mod registry;
pub mod residual_flex;
pub mod resnet50;
pub mod vgg19;
pub mod vgg19bn;
pub mod vggish;
pub mod weights;

use anyhow::Result;

/// One decoded RGB frame, 8 bits per channel, row-major `[height, width, 3]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbFrame {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// An image network turning frames into one feature per second.
pub trait FrameEncoder {
    /// Short name used in outputs and errors, e.g. `"vgg19"`.
    fn name(&self) -> &'static str;
    /// Shape of one second's feature, e.g. `[7, 7, 512]` or `[2048]`.
    fn output_shape(&self) -> Vec<usize>;
    /// Preprocesses each frame (resize, crop, normalise as the weights expect), runs the network
    /// and returns the mean over the frames, flattened row-major in [`Self::output_shape`] order.
    fn encode_second(&self, frames: &[RgbFrame]) -> Result<Vec<f32>>;
}

/// An audio network turning a clip into one embedding per second.
pub trait AudioEncoder {
    /// Short name used in outputs and errors, e.g. `"vggish"`.
    fn name(&self) -> &'static str;
    /// Sample rate the encoder expects (16 000 for VGGish, 32 000 for Cnn14).
    fn sample_rate(&self) -> u32;
    /// Embedding width (128 for VGGish, 2048 for Cnn14).
    fn dim(&self) -> usize;
    /// `samples`: mono audio at [`Self::sample_rate`], exactly `seconds · rate` long.
    /// Returns `[seconds, dim]` row-major.
    fn encode(&self, samples: &[f32], seconds: usize) -> Result<Vec<f32>>;
}
