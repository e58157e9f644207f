//! PANNs Cnn14 (audioset_tagging_cnn `pytorch/models.py`), eval mode: one second of 32 kHz
//! audio → 101×64 log-mel → 2048-d `embedding`, the "efficient" audio encoder of CACE-Net
//! (REFERENCE §6.2: each second of the clip runs as its own clip).
//!
//! Keys as the `model` state dict of `Cnn14_mAP=0.431.pth`: `bn0.*` (BatchNorm over the 64 mel
//! bins), `conv_block{1..6}.{conv1,conv2}.weight` (3×3, no bias) with `{bn1,bn2}.*`, `fc1.*`.
//! `fc_audioset.*` (the tagging head) is not read. The front end is computed here (see
//! [`super::logmel`]); the checkpoint's frozen copies of it — `logmel_extractor.melW` and
//! `spectrogram_extractor.stft.conv_{real,imag}.weight` — are checked against ours when present,
//! so a checkpoint made for another sample rate or mel setup fails at load time.

use std::path::Path;

use anyhow::{Result, bail};
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, conv2d, linear};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions};
use burn::tensor::{Device, Tensor, TensorData};

use super::AudioEncoder;
use super::logmel::{PannsConfig, PannsFrontEnd};
use super::weights::Weights;

/// One-second windows per forward pass: bounds the activation memory for long clips.
const CHUNK: usize = 10;
/// BatchNorm2d's default epsilon.
const BN_EPS: f64 = 1e-5;

/// Channel widths; [`Cnn14Config::full`] is the real network, smaller ones serve tests. The
/// front end (and so `bn0`'s 64 mel bins) is the same for all.
#[derive(Debug, Clone, PartialEq)]
pub struct Cnn14Config {
    /// Output channels of `conv_block1..6`; `fc1` is `channels[5] → channels[5]`.
    pub channels: [usize; 6],
}

impl Cnn14Config {
    pub fn full() -> Self {
        Self {
            channels: [64, 128, 256, 512, 1024, 2048],
        }
    }
}

/// conv → BN → ReLU, with the eval-mode BN folded into the convolution: `conv(x, W)·s + t`
/// equals `conv(x, W·s) + t` up to f32 rounding, and saves a pass over the activations.
struct ConvBn {
    weight: Tensor<4>,
    bias: Tensor<1>,
}

impl ConvBn {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pad1 = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        relu(conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            pad1,
        ))
    }
}

pub struct Cnn14 {
    config: Cnn14Config,
    /// `bn0` as a per-mel-bin affine map, `[1, 1, 1, 64]` each.
    bn0_scale: Tensor<4>,
    bn0_shift: Tensor<4>,
    /// `(conv1+bn1, conv2+bn2)` of each ConvBlock.
    blocks: Vec<(ConvBn, ConvBn)>,
    /// `fc1`: `[in, out]`, `[out]`.
    fc1: (Tensor<2>, Tensor<1>),
    front_end: PannsFrontEnd,
    device: Device,
}

fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// An eval-mode BatchNorm `prefix.{weight,bias,running_mean,running_var}` as `(scale, shift)`
/// with `y = x·scale + shift`, computed in f64.
fn batch_norm(w: &mut Weights, prefix: &str, c: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let gamma = w.take(&format!("{prefix}.weight"), &[c])?;
    let beta = w.take(&format!("{prefix}.bias"), &[c])?;
    let mean = w.take(&format!("{prefix}.running_mean"), &[c])?;
    let var = w.take(&format!("{prefix}.running_var"), &[c])?;
    let scale: Vec<f64> = (0..c)
        .map(|i| gamma[i] as f64 / (var[i] as f64 + BN_EPS).sqrt())
        .collect();
    let shift = (0..c)
        .map(|i| beta[i] as f64 - mean[i] as f64 * scale[i])
        .collect();
    Ok((scale, shift))
}

fn conv_bn(
    w: &mut Weights,
    conv: &str,
    bn: &str,
    c_in: usize,
    c_out: usize,
    device: &Device,
) -> Result<ConvBn> {
    let shape = [c_out, c_in, 3, 3];
    let weight = w.take(&format!("{conv}.weight"), &shape)?;
    let (scale, shift) = batch_norm(w, bn, c_out)?;
    let per_out = c_in * 9;
    let weight = weight
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 * scale[i / per_out]) as f32)
        .collect();
    Ok(ConvBn {
        weight: tensor(weight, shape, device),
        bias: tensor(shift.iter().map(|&v| v as f32).collect(), [c_out], device),
    })
}

/// Compares a checkpoint's frozen front-end tensor with ours: a mismatch means the checkpoint
/// was made with other front-end settings, and its network would see different inputs.
fn check_front_end(
    w: &mut Weights,
    key: &str,
    shape: &[usize],
    ours: &[f32],
    tolerance: f32,
) -> Result<()> {
    if !w.contains(key) {
        return Ok(());
    }
    let theirs = w.take(key, shape)?;
    let diff = theirs
        .iter()
        .zip(ours)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    if diff.is_nan() || diff > tolerance {
        bail!(
            "encoder weights {}: key `{key}` differs from the Cnn14 front end computed here \
             (32 kHz, n_fft 1024, hop 320, 64 mels 50–14000 Hz) by up to {diff:e}: the checkpoint \
             was made for other front-end settings",
            w.path().display()
        );
    }
    Ok(())
}

/// Checks the checkpoint's frozen copies of the front end (mel filterbank, STFT kernels), when
/// it has them, against ours.
fn check_front_end_copies(w: &mut Weights, front_end: &PannsFrontEnd) -> Result<()> {
    let PannsConfig {
        n_fft, mel_bins, ..
    } = *front_end.config();
    // The filterbank is librosa's float32, so equal up to an ulp of its largest values
    // (~0.03); the kernels are f32 roundings of values in [-1, 1].
    let bins = n_fft / 2 + 1;
    let mel_w = front_end.mel_filterbank().to_vec();
    check_front_end(w, "logmel_extractor.melW", &[bins, mel_bins], &mel_w, 1e-7)?;
    let (real, imag) = front_end.stft_kernels();
    let kernel = [bins, 1, n_fft];
    let stft = "spectrogram_extractor.stft";
    check_front_end(w, &format!("{stft}.conv_real.weight"), &kernel, &real, 1e-6)?;
    check_front_end(w, &format!("{stft}.conv_imag.weight"), &kernel, &imag, 1e-6)
}

/// `conv_block1..6`: `(conv1+bn1, conv2+bn2)` each, with the widths `channels`.
fn conv_blocks(
    w: &mut Weights,
    channels: &[usize; 6],
    device: &Device,
) -> Result<Vec<(ConvBn, ConvBn)>> {
    let mut blocks = Vec::new();
    let mut c_in = 1;
    for (i, &c_out) in channels.iter().enumerate() {
        let p = format!("conv_block{}", i + 1);
        let conv1 = conv_bn(
            w,
            &format!("{p}.conv1"),
            &format!("{p}.bn1"),
            c_in,
            c_out,
            device,
        )?;
        let conv2 = conv_bn(
            w,
            &format!("{p}.conv2"),
            &format!("{p}.bn2"),
            c_out,
            c_out,
            device,
        )?;
        blocks.push((conv1, conv2));
        c_in = c_out;
    }
    Ok(blocks)
}

/// The full-size network from a PANNs checkpoint (e.g. `Cnn14_mAP=0.431.pth`, whose `model`
/// entry holds the state dict).
pub fn load(path: &Path, device: &Device) -> Result<Cnn14> {
    Cnn14::load(path, Cnn14Config::full(), device)
}

impl Cnn14 {
    /// Reads `path` with the widths of `config`; a missing key or a wrong shape is an error
    /// naming the file and the key.
    pub fn load(path: &Path, config: Cnn14Config, device: &Device) -> Result<Self> {
        let front_end = PannsFrontEnd::new(PannsConfig::default());
        let mel_bins = front_end.config().mel_bins;
        let mut w = Weights::open(path)?;
        check_front_end_copies(&mut w, &front_end)?;

        let (scale, shift) = batch_norm(&mut w, "bn0", mel_bins)?;
        let to_4d = |v: Vec<f64>| {
            tensor(
                v.into_iter().map(|x| x as f32).collect(),
                [1, 1, 1, mel_bins],
                device,
            )
        };
        let (bn0_scale, bn0_shift) = (to_4d(scale), to_4d(shift));
        let blocks = conv_blocks(&mut w, &config.channels, device)?;
        let c = config.channels[5];
        let fc1_w = w.take("fc1.weight", &[c, c])?;
        let fc1_b = w.take("fc1.bias", &[c])?;
        // PyTorch stores [out, in]; burn's `linear` takes [in, out].
        let fc1 = (
            tensor(fc1_w, [c, c], device).transpose(),
            tensor(fc1_b, [c], device),
        );
        Ok(Self {
            config,
            bn0_scale,
            bn0_shift,
            blocks,
            fc1,
            front_end,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &Cnn14Config {
        &self.config
    }

    pub fn front_end(&self) -> &PannsFrontEnd {
        &self.front_end
    }

    /// Log-mel `[B, 1, T, 64]` → `embedding` `[B, C]` (Cnn14.forward after the front end, eval).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        // PyTorch moves the mel axis into the channel slot so that bn0 normalises each mel bin;
        // a broadcast over the last axis does the same.
        let mut x = x * self.bn0_scale.clone() + self.bn0_shift.clone();
        let last = self.blocks.len() - 1;
        for (i, (conv1, conv2)) in self.blocks.iter().enumerate() {
            x = conv2.forward(conv1.forward(x));
            // 2×2 average pools after blocks 1–5; block 6's 1×1 pool is the identity.
            if i < last {
                x = avg_pool2d(x, AvgPoolOptions::new([2, 2]));
            }
        }
        // [B, C, T', F'] → mean over frequency → max + mean over time.
        let [b, c, t, _] = x.dims();
        let x = x.mean_dim(3).reshape([b, c, t]);
        let x = x.clone().max_dim(2) + x.mean_dim(2);
        let (weight, bias) = &self.fc1;
        relu(linear(
            x.reshape([b, c]),
            weight.clone(),
            Some(bias.clone()),
        ))
    }
}

impl AudioEncoder for Cnn14 {
    fn name(&self) -> &'static str {
        "cnn14"
    }

    fn sample_rate(&self) -> u32 {
        self.front_end.config().sample_rate
    }

    fn dim(&self) -> usize {
        self.config.channels[5]
    }

    /// Cuts the clip into `seconds` one-second windows and runs each as its own clip (its own
    /// reflect padding), as CACE's `inference.py` does with its `[10, 32000]` batch.
    fn encode(&self, samples: &[f32], seconds: usize) -> Result<Vec<f32>> {
        let rate = self.sample_rate() as usize;
        if seconds == 0 || samples.len() != seconds * rate {
            bail!(
                "cnn14: expected {} samples ({seconds} s of mono audio at {rate} Hz), got {}",
                seconds * rate,
                samples.len()
            );
        }
        let mut out = Vec::with_capacity(seconds * self.dim());
        for start in (0..seconds).step_by(CHUNK) {
            let b = CHUNK.min(seconds - start);
            let mut data = Vec::new();
            let (mut frames, mut bins) = (0, 0);
            for s in start..start + b {
                let lm = self.front_end.log_mel(&samples[s * rate..(s + 1) * rate])?;
                (frames, bins) = (lm.frames, lm.bins);
                data.extend(lm.data);
            }
            let x = tensor(data, [b, 1, frames, bins], &self.device);
            out.extend(crate::to_vec(self.forward(x)));
        }
        Ok(out)
    }
}
