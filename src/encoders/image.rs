//! The image front end shared by the two image encoders: frames → normalised `[3, 224, 224]`
//! inputs, and the few pieces both networks use (a convolution with its bias, the per-second mean).
//!
//! Two preprocessings, one per weight set ([`Preprocess`]):
//! * **VGG19** — the whole frame resized to 224×224 (AVE-ECCV18 resized whole frames, no crop),
//!   /255, ImageNet mean/std. We load *torchvision* VGG19 weights, so torchvision's normalisation
//!   applies. The distributed AVE features came from Keras VGG19 (caffe-style BGR mean
//!   subtraction, no /255, no std) with Keras' own resize, so features computed here are **not**
//!   numerically the distributed `visual_feature.h5`; a model trained on those should be
//!   retrained (or at least re-evaluated) on features from this encoder.
//! * **ResNet50** — torchvision `ResNet50_Weights.IMAGENET1K_V2.transforms()` (REFERENCE §6.1):
//!   shorter side resized to 232, centre crop 224, /255, same mean/std.
//!
//! The resize is antialiased bilinear, matching exactly (up to f32 rounding)
//! `torch.nn.functional.interpolate(x, size, mode="bilinear", antialias=True,
//! align_corners=False)` with `x` the uint8 frame converted to float in [0, 255] — torchvision's
//! tensor path for a *float* image (`F.resize(frame.float(), …)`). The pipelines the weights were
//! used with end in 8 bits instead: torchvision's uint8-tensor path rounds the resized image back
//! to uint8 (≤ 0.5/255 from ours, 0.009 after /std), and PIL, which the official extractor fed,
//! resamples in fixed point (measured ≤ 1/255 from ours, 0.0175 after /std); here the resized
//! values stay float. Differences of that size do not move a feature meaningfully.

use std::ops::Range;

use anyhow::{Result, bail, ensure};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use super::{conv1x1_flex, conv2d_flex};
use crate::device::is_flex;
use crate::model::batch_norm_flex::channel_affine;
use burn::tensor::{Device, Tensor, TensorData};

use super::RgbFrame;

/// Side of the square network input.
pub const INPUT_SIZE: usize = 224;
/// ImageNet channel means (RGB), as torchvision normalises.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Shorter side before the centre crop in torchvision's ResNet50 IMAGENET1K_V2 transforms.
pub const RESNET_RESIZE: usize = 232;

/// Which preprocessing a weight set expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preprocess {
    /// Whole frame resized to 224×224, no crop.
    Vgg19,
    /// Shorter side resized to 232, centre crop 224×224.
    ResNet50,
}

/// Where a frame's pixels go: resized to `resize` (`[height, width]`), then the `INPUT_SIZE`²
/// window at `crop_top`, `crop_left` is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub resize: [usize; 2],
    pub crop_top: usize,
    pub crop_left: usize,
}

impl Preprocess {
    /// The resize and crop for a `height`×`width` frame.
    pub fn geometry(self, height: usize, width: usize) -> Geometry {
        match self {
            Self::Vgg19 => Geometry {
                resize: [INPUT_SIZE, INPUT_SIZE],
                crop_top: 0,
                crop_left: 0,
            },
            Self::ResNet50 => {
                // torchvision `_compute_resized_output_size`: the long side is
                // `int(232 * long / short)` (truncated), computed in double precision.
                let (short, long) = (height.min(width), height.max(width));
                let new_long = (RESNET_RESIZE as f64 * long as f64 / short as f64) as usize;
                let resize = if width <= height {
                    [new_long, RESNET_RESIZE]
                } else {
                    [RESNET_RESIZE, new_long]
                };
                // torchvision `center_crop`: `int(round((size - 224) / 2.0))`; Python rounds
                // halves to even.
                let offset =
                    |size: usize| ((size - INPUT_SIZE) as f64 / 2.0).round_ties_even() as usize;
                Geometry {
                    resize,
                    crop_top: offset(resize[0]),
                    crop_left: offset(resize[1]),
                }
            }
        }
    }

    /// One frame as the network input, `[3, 224, 224]` row-major (channels first).
    pub fn frame(self, frame: &RgbFrame) -> Result<Vec<f32>> {
        check_frame(frame)?;
        let g = self.geometry(frame.height, frame.width);
        let rows = g.crop_top..g.crop_top + INPUT_SIZE;
        let cols = g.crop_left..g.crop_left + INPUT_SIZE;
        let hwc = resize_window(frame, g.resize, rows, cols);
        Ok(normalise(&hwc))
    }

    /// The resized and cropped frame as 8-bit pixels, `[224, 224, 3]`, rounded as PIL's 8-bit
    /// resize leaves them (torchvision transforms on a PIL image); [`normalise`] finishes it.
    pub fn crop_u8(self, frame: &RgbFrame) -> Result<Vec<u8>> {
        check_frame(frame)?;
        let g = self.geometry(frame.height, frame.width);
        let rows = g.crop_top..g.crop_top + INPUT_SIZE;
        let cols = g.crop_left..g.crop_left + INPUT_SIZE;
        let hwc = resize_window(frame, g.resize, rows, cols);
        Ok(hwc
            .iter()
            .map(|&v| v.round().clamp(0.0, 255.0) as u8)
            .collect())
    }

    /// Frames as one batch `[N, 3, 224, 224]`.
    pub fn batch(self, frames: &[RgbFrame], device: &Device) -> Result<Tensor<4>> {
        let mut data = Vec::with_capacity(frames.len() * 3 * INPUT_SIZE * INPUT_SIZE);
        for (i, f) in frames.iter().enumerate() {
            let x = self.frame(f).map_err(|e| e.context(format!("frame {i}")))?;
            data.extend_from_slice(&x);
        }
        let shape = [frames.len(), 3, INPUT_SIZE, INPUT_SIZE];
        Ok(Tensor::from_data(TensorData::new(data, shape), device))
    }
}

fn check_frame(frame: &RgbFrame) -> Result<()> {
    ensure!(
        frame.width > 0 && frame.height > 0,
        "empty frame ({}x{})",
        frame.width,
        frame.height
    );
    if frame.data.len() != frame.width * frame.height * 3 {
        bail!(
            "frame of {}x{} RGB needs {} bytes, has {}",
            frame.width,
            frame.height,
            frame.width * frame.height * 3,
            frame.data.len()
        );
    }
    Ok(())
}

/// Antialiased bilinear resize of `frame` to `size` (`[height, width]`), computing only the
/// output `rows` × `cols` window; returns it as `[rows, cols, 3]` floats in [0, 255].
///
/// Separable like ATen: the width pass first, then the height pass, each skipped when that side
/// keeps its size (it would be the identity). Every output pixel is independent, so computing
/// only the cropped window gives the same values as resizing everything and cropping.
fn resize_window(
    frame: &RgbFrame,
    size: [usize; 2],
    rows: Range<usize>,
    cols: Range<usize>,
) -> Vec<f32> {
    let (h, w) = (frame.height, frame.width);
    let (n_rows, n_cols) = (rows.len(), cols.len());
    assert!(
        rows.end <= size[0] && cols.end <= size[1],
        "window outside the resized image"
    );

    // Width pass: every input row, output columns `cols` → [h, n_cols, 3].
    let mut tmp = Vec::with_capacity(h * n_cols * 3);
    if size[1] == w {
        for y in 0..h {
            let row = &frame.data[(y * w + cols.start) * 3..(y * w + cols.end) * 3];
            tmp.extend(row.iter().map(|&v| v as f32));
        }
    } else {
        let taps = aa_taps(w, size[1], cols);
        for y in 0..h {
            let row = &frame.data[y * w * 3..(y + 1) * w * 3];
            for t in &taps {
                for c in 0..3 {
                    tmp.push(t.apply(|j| row[j * 3 + c] as f32));
                }
            }
        }
    }

    // Height pass: output rows `rows` → [n_rows, n_cols, 3].
    let stride = n_cols * 3;
    if size[0] == h {
        return tmp[rows.start * stride..rows.end * stride].to_vec();
    }
    let mut out = Vec::with_capacity(n_rows * stride);
    for t in aa_taps(h, size[0], rows) {
        for i in 0..stride {
            out.push(t.apply(|j| tmp[j * stride + i]));
        }
    }
    out
}

/// The input span and normalised weights of one output sample.
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

impl Taps {
    /// Σ_j w_j · x(start + j), accumulated in f32 in index order like ATen's loop.
    fn apply(&self, x: impl Fn(usize) -> f32) -> f32 {
        let mut acc = x(self.start) * self.weights[0];
        for (j, &w) in self.weights.iter().enumerate().skip(1) {
            acc += x(self.start + j) * w;
        }
        acc
    }
}

/// Antialiased bilinear taps along one axis (`in_size` → `out_size`) for the output indices in
/// `range`: ATen's `_compute_weights_aa` for float tensors (`align_corners=False`, no explicit
/// scale), with its mix of f32 and f64 arithmetic kept so the spans agree to the sample.
/// Downscaling widens the triangle filter to the scale (that is the antialiasing).
fn aa_taps(in_size: usize, out_size: usize, range: Range<usize>) -> Vec<Taps> {
    let scale = in_size as f32 / out_size as f32;
    // Bilinear: interp_size 2, so support 1, or `scale` when downscaling.
    let (support, invscale) = if scale >= 1.0 {
        (scale, 1.0 / scale)
    } else {
        (1.0f32, 1.0f32)
    };
    let max_taps = support.ceil() as usize * 2 + 1;
    let triangle = |x: f32| {
        let x = x.abs();
        if x < 1.0 { 1.0 - x } else { 0.0 }
    };
    range
        .map(|i| {
            let center = (scale as f64 * (i as f64 + 0.5)) as f32;
            let lo = ((center - support) as f64 + 0.5) as i64;
            let hi = ((center + support) as f64 + 0.5) as i64;
            let start = lo.max(0) as usize;
            let end = (hi.min(in_size as i64) as usize).clamp(start, start + max_taps);
            let mut weights: Vec<f32> = (start..end)
                .map(|j| {
                    let x = ((j as f32 - center) as f64 + 0.5) * invscale as f64;
                    triangle(x as f32)
                })
                .collect();
            let total: f32 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            Taps { start, weights }
        })
        .collect()
}

/// `[224, 224, 3]` values in [0, 255] → `[3, 224, 224]` with `(v / 255 - mean) / std`, the same
/// f32 operations as `x / 255` followed by torchvision's `F.normalize`.
/// `[224, 224, 3]` pixels in [0, 255] (8-bit or float) → the normalised network input
/// `[3, 224, 224]`.
pub fn normalise<P: Copy + Into<f32>>(hwc: &[P]) -> Vec<f32> {
    let plane = INPUT_SIZE * INPUT_SIZE;
    let mut chw = vec![0.0f32; 3 * plane];
    for (p, px) in hwc.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * plane + p] = (px[c].into() / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    chw
}

/// A 2-D convolution with its bias (BatchNorm, where there was one, folded in).
pub(crate) struct Conv {
    /// `[out, in, k, k]`.
    pub weight: Tensor<4>,
    /// `[out]`.
    pub bias: Tensor<1>,
    pub options: ConvOptions<2>,
}

impl Conv {
    /// Square kernel, same `stride` and `padding` on both axes.
    pub fn new(
        weight: Vec<f32>,
        bias: Vec<f32>,
        shape: [usize; 4],
        stride: usize,
        padding: usize,
        device: &Device,
    ) -> Self {
        Self {
            weight: Tensor::from_data(TensorData::new(weight, shape), device),
            bias: Tensor::from_data(TensorData::new(bias, [shape[0]]), device),
            options: ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
        }
    }

    /// `[N, in, H, W]` → `[N, out, H', W']`. On the CPU (inference) our kernels, the bias
    /// added in one parallel pass: k×k kernels `conv2d_flex.rs` (VGG19's 3×3s as shifted
    /// products), unpadded 1×1 ones (ResNet-50's) one product per image (`conv1x1_flex.rs`,
    /// of every stride-th pixel when strided); other devices burn's `conv2d`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [o, _, k, _] = self.weight.dims();
        let device = x.device();
        let [stride, _] = self.options.stride;
        let [(padding, _), _] = self.options.padding;
        if is_flex(&device) && !device.is_autodiff() && (k > 1 || padding == 0) {
            let y = if k > 1 {
                conv2d_flex::conv2d(x, self.weight.clone(), stride, padding)
            } else {
                conv1x1_flex::conv2d(x, self.weight.clone(), stride)
            };
            let ones = Tensor::ones([o], &y.device());
            return channel_affine(y, ones, self.bias.clone(), false);
        }
        conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            self.options.clone(),
        )
    }
}

/// The mean over `frames` of `forward`'s per-frame outputs, `[C, H, W]`. Frames are run in
/// batches of at most `max_batch` to bound memory.
pub(crate) fn mean_over_frames(
    frames: &[RgbFrame],
    preprocess: Preprocess,
    max_batch: usize,
    device: &Device,
    forward: impl Fn(Tensor<4>) -> Tensor<4>,
) -> Result<Tensor<3>> {
    ensure!(!frames.is_empty(), "no frames to encode");
    let mut sum: Option<Tensor<3>> = None;
    for chunk in frames.chunks(max_batch.max(1)) {
        let y = forward(preprocess.batch(chunk, device)?); // [n, C, H, W]
        let part = y.sum_dim(0).squeeze_dim::<3>(0);
        sum = Some(match sum {
            Some(s) => s + part,
            None => part,
        });
    }
    Ok(sum.expect("at least one chunk") / frames.len() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The 1×1 path (one product per image, strided by slicing) gives burn's `conv2d` bit for
    /// bit, bias included, at stride 1 (a bottleneck's ends) and 2 (a downsampling shortcut,
    /// odd size: the last row and column sampled).
    #[test]
    fn one_by_one_kernels_equal_burns_conv2d() {
        let device = Device::flex();
        device.seed(5);
        for stride in [1, 2] {
            let weight =
                Tensor::<4>::random([32, 16, 1, 1], Distribution::Normal(0.0, 1.0), &device);
            let bias = Tensor::<1>::random([32], Distribution::Normal(0.0, 1.0), &device);
            let x = Tensor::<4>::random([3, 16, 15, 15], Distribution::Normal(0.0, 1.0), &device);
            let options = ConvOptions::new([stride, stride], [0, 0], [1, 1], 1);
            let reference = conv2d(
                x.clone(),
                weight.clone(),
                Some(bias.clone()),
                options.clone(),
            );
            let conv = Conv {
                weight,
                bias,
                options,
            };
            let ours = conv.forward(x);
            assert_eq!(ours.dims(), reference.dims(), "stride {stride}");
            assert_eq!(
                crate::to_vec(ours),
                crate::to_vec(reference),
                "stride {stride}"
            );
        }
    }
}
