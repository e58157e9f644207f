//! The image encoders as trainable burn modules, for the fine-tuning (REFERENCE §6.3) and the
//! VGG19-BN features of Table S5:
//! torchvision's VGG19-BN (`features` + the 7×7 adaptive average pool) and ResNet-50 up to
//! `layer4`, with BatchNorm in PyTorch's training mode ([`BatchNorm`]). The inference encoders
//! in `encoders/` fold BatchNorm into the convolutions; these keep it, so that it can train.
//!
//! Parameters are visited under torchvision's keys (`features.3.weight`, `layer1.0.bn2.bias`);
//! [`sequential_key`] gives the names the official code saves (`Sequential(children[:-1])` for
//! VGG19-BN, `[:-2]` for ResNet-50: `0.3.weight`, `4.0.bn2.bias`).

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::module::{adaptive_avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use super::resnet50::{EXPANSION, ResNet50Config};
use super::vgg19::{CONVS_PER_BLOCK, Vgg19Config};
use super::{conv1x1_flex, conv2d_flex, residual_flex};
use crate::checkpoint::{StateDict, StoredTensor, load_state_dict, pth};
use crate::device::is_flex;
use crate::model::batch_norm::BatchNorm;
use crate::model::state::ParamList;
use crate::model::state::{HasState, Layout, Prefix, StateVisitor};
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Which image encoder is fine-tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackboneKind {
    /// torchvision `resnet50` up to `layer4` (2048 channels): the 82.36 % run.
    Resnet50,
    /// torchvision `vgg19_bn` `features` + 7×7 pool (512 channels): the published code, Table S5.
    #[value(name = "vgg19-bn")]
    Vgg19Bn,
}

impl BackboneKind {
    /// File name of the fine-tuned encoder in the layout `cace extract --weights` reads.
    pub fn weights_file(self) -> &'static str {
        match self {
            Self::Resnet50 => "resnet50.pth",
            Self::Vgg19Bn => "vgg19_bn.pth",
        }
    }
}

/// A convolution as `nn.Conv2d` (PyTorch weight layout `[out, in, k, k]`).
#[derive(Module, Debug)]
pub struct Conv {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    stride: usize,
    padding: usize,
}

impl Conv {
    /// Kaiming-uniform like PyTorch's default (bound √(1/fan_in)); pretrained weights replace it.
    fn new(shape: [usize; 4], bias: bool, stride: usize, padding: usize, device: &Device) -> Self {
        let bound = 1.0 / ((shape[1] * shape[2] * shape[3]) as f64).sqrt();
        let uniform = Distribution::Uniform(-bound, bound);
        Self {
            weight: Param::from_tensor(Tensor::random(shape, uniform, device)),
            bias: bias.then(|| Param::from_tensor(Tensor::random([shape[0]], uniform, device))),
            stride,
            padding,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [o, _, kh, kw] = self.weight.dims();
        if kh == 1 && kw == 1 && self.padding == 0 {
            // A 1×1 convolution is one matrix multiply [O, C] × [C, H·W] per image (of every
            // stride-th pixel when strided: the downsampling shortcuts); burn-flex's conv2d
            // backward runs it on narrow GEMM tiles (the stride-2 shortcut of layer2: weight
            // gradient 837 ms against 47 ms as a product, 20 images, BENCHMARKS.md).
            let y = conv1x1_flex::conv2d(x, self.weight.val(), self.stride);
            return match &self.bias {
                Some(bias) => y + bias.val().reshape([1, o, 1, 1]),
                None => y,
            };
        }
        let (s, p) = (self.stride, self.padding);
        if is_flex(&x.device()) {
            // On the CPU: our kernels (conv2d_flex.rs), forward and backward.
            let y = conv2d_flex::conv2d(x, self.weight.val(), s, p);
            return match &self.bias {
                Some(bias) => y + bias.val().reshape([1, o, 1, 1]),
                None => y,
            };
        }
        let options = ConvOptions::new([s, s], [p, p], [1, 1], 1);
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            options,
        )
    }
}

impl HasState for Conv {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        v.visit(&at.key("weight"), at.used, &mut self.weight, Layout::Same);
        if let Some(b) = self.bias.as_mut() {
            v.visit(&at.key("bias"), at.used, b, Layout::Same);
        }
    }
}

/// One entry of VGG's `features`: conv3×3 (bias) → BN → ReLU, or a 2×2 max-pool.
#[derive(Module, Debug)]
pub struct VggStage {
    /// `None`: the max-pool closing a block.
    conv_bn: Option<(Conv, BatchNorm)>,
}

/// torchvision `vgg19_bn`: `features` and `avgpool` (7×7).
#[derive(Module, Debug)]
pub struct Vgg19Bn {
    stages: Vec<VggStage>,
}

impl Vgg19Bn {
    pub fn new(config: &Vgg19Config, device: &Device) -> Self {
        let mut stages = Vec::new();
        let mut c_in = 3;
        for (&width, &n) in config.widths.iter().zip(&CONVS_PER_BLOCK) {
            for _ in 0..n {
                let conv = Conv::new([width, c_in, 3, 3], true, 1, 1, device);
                let bn = BatchNorm::new(width, device);
                stages.push(VggStage {
                    conv_bn: Some((conv, bn)),
                });
                c_in = width;
            }
            stages.push(VggStage { conv_bn: None });
        }
        Self { stages }
    }

    /// `[N, 3, H, W]` → `[N, C, 7, 7]`.
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for stage in &self.stages {
            x = match &stage.conv_bn {
                Some((conv, bn)) => bn.forward_relu(conv.forward(x)),
                None => max_pool2d(x, MaxPoolOptions::new([2, 2]).with_stride([2, 2])),
            };
        }
        adaptive_avg_pool2d(x, [7, 7])
    }
}

impl HasState for Vgg19Bn {
    /// `features.{i}` (conv) and `features.{i+1}` (BN); ReLU and max-pool have no state but
    /// take an index, as in the `Sequential`.
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        let features = at.child("features");
        let mut i = 0;
        for stage in &mut self.stages {
            match stage.conv_bn.as_mut() {
                Some((conv, bn)) => {
                    conv.visit_state(&features.child(&i.to_string()), v);
                    bn.visit_state(&features.child(&(i + 1).to_string()), v);
                    i += 3;
                }
                None => i += 1,
            }
        }
    }
}

/// A ResNet Bottleneck (v1.5: the stride sits on the 3×3 `conv2`).
#[derive(Module, Debug)]
pub struct Bottleneck {
    conv1: Conv,
    bn1: BatchNorm,
    conv2: Conv,
    bn2: BatchNorm,
    conv3: Conv,
    bn3: BatchNorm,
    downsample: Option<(Conv, BatchNorm)>,
}

impl Bottleneck {
    fn new(c_in: usize, planes: usize, stride: usize, device: &Device) -> Self {
        let c_out = planes * EXPANSION;
        Self {
            conv1: Conv::new([planes, c_in, 1, 1], false, 1, 0, device),
            bn1: BatchNorm::new(planes, device),
            conv2: Conv::new([planes, planes, 3, 3], false, stride, 1, device),
            bn2: BatchNorm::new(planes, device),
            conv3: Conv::new([c_out, planes, 1, 1], false, 1, 0, device),
            bn3: BatchNorm::new(c_out, device),
            // torchvision `_make_layer`: a projection wherever the shape changes.
            downsample: (stride != 1 || c_in != c_out).then(|| {
                let conv = Conv::new([c_out, c_in, 1, 1], false, stride, 0, device);
                (conv, BatchNorm::new(c_out, device))
            }),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = self.bn1.forward_relu(self.conv1.forward(x.clone()));
        let out = self.bn2.forward_relu(self.conv2.forward(out));
        let out = self.bn3.forward(self.conv3.forward(out));
        let identity = match &self.downsample {
            Some((conv, bn)) => bn.forward(conv.forward(x)),
            None => x,
        };
        if is_flex(&out.device()) {
            return residual_flex::add_relu(out, identity);
        }
        relu(out + identity)
    }
}

impl HasState for Bottleneck {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.conv1.visit_state(&at.child("conv1"), v);
        self.bn1.visit_state(&at.child("bn1"), v);
        self.conv2.visit_state(&at.child("conv2"), v);
        self.bn2.visit_state(&at.child("bn2"), v);
        self.conv3.visit_state(&at.child("conv3"), v);
        self.bn3.visit_state(&at.child("bn3"), v);
        if let Some((conv, bn)) = self.downsample.as_mut() {
            conv.visit_state(&at.child("downsample.0"), v);
            bn.visit_state(&at.child("downsample.1"), v);
        }
    }
}

/// torchvision `resnet50` without `avgpool` and `fc`.
#[derive(Module, Debug)]
pub struct ResNet50 {
    conv1: Conv,
    bn1: BatchNorm,
    layers: Vec<Vec<Bottleneck>>,
}

impl ResNet50 {
    pub fn new(config: &ResNet50Config, device: &Device) -> Self {
        let mut layers = Vec::new();
        let mut c_in = config.stem;
        for (l, (&planes, &n)) in config.planes.iter().zip(&config.blocks).enumerate() {
            let blocks = (0..n)
                .map(|b| {
                    let stride = if b == 0 && l > 0 { 2 } else { 1 };
                    let block = Bottleneck::new(c_in, planes, stride, device);
                    c_in = planes * EXPANSION;
                    block
                })
                .collect();
            layers.push(blocks);
        }
        Self {
            conv1: Conv::new([config.stem, 3, 7, 7], false, 2, 3, device),
            bn1: BatchNorm::new(config.stem, device),
            layers,
        }
    }

    /// `[N, 3, H, W]` → `layer4` `[N, C, H/32, W/32]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.bn1.forward_relu(self.conv1.forward(x));
        let pool = MaxPoolOptions::new([3, 3])
            .with_stride([2, 2])
            .with_padding([1, 1]);
        let mut x = max_pool2d(x, pool);
        for block in self.layers.iter().flatten() {
            x = block.forward(x);
        }
        x
    }
}

impl HasState for ResNet50 {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.conv1.visit_state(&at.child("conv1"), v);
        self.bn1.visit_state(&at.child("bn1"), v);
        for (l, layer) in self.layers.iter_mut().enumerate() {
            for (b, block) in layer.iter_mut().enumerate() {
                block.visit_state(&at.child(&format!("layer{}.{b}", l + 1)), v);
            }
        }
    }
}

/// The encoder being fine-tuned.
#[derive(Module, Debug)]
pub enum Backbone {
    Resnet50(ResNet50),
    Vgg19Bn(Vgg19Bn),
}

/// Widths of either backbone (the real ones by default; tests use slim ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackboneConfig {
    Resnet50(ResNet50Config),
    Vgg19Bn(Vgg19Config),
}

impl BackboneConfig {
    pub fn real(kind: BackboneKind) -> Self {
        match kind {
            BackboneKind::Resnet50 => Self::Resnet50(ResNet50Config::default()),
            BackboneKind::Vgg19Bn => Self::Vgg19Bn(Vgg19Config::default()),
        }
    }

    pub fn kind(&self) -> BackboneKind {
        match self {
            Self::Resnet50(_) => BackboneKind::Resnet50,
            Self::Vgg19Bn(_) => BackboneKind::Vgg19Bn,
        }
    }

    /// Channels of the output map (2048 ResNet-50, 512 VGG19-BN).
    pub fn channels(&self) -> usize {
        match self {
            Self::Resnet50(c) => c.planes[3] * EXPANSION,
            Self::Vgg19Bn(c) => c.widths[4],
        }
    }

    pub fn init(&self, device: &Device) -> Backbone {
        match self {
            Self::Resnet50(c) => Backbone::Resnet50(ResNet50::new(c, device)),
            Self::Vgg19Bn(c) => Backbone::Vgg19Bn(Vgg19Bn::new(c, device)),
        }
    }
}

impl Backbone {
    /// `[N, 3, H, W]` normalised frames → `[N, C, h, w]` maps.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::Resnet50(m) => m.forward(x),
            Self::Vgg19Bn(m) => m.forward(x),
        }
    }
}

impl HasState for Backbone {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        match self {
            Self::Resnet50(m) => m.visit_state(at, v),
            Self::Vgg19Bn(m) => m.visit_state(at, v),
        }
    }
}

/// The key the official code saves for the torchvision key `key`: `features.N` → `0.N`
/// (VGG19-BN); `conv1` → `0`, `bn1` → `1`, `layerK` → `K+3` (ResNet-50's children).
pub fn sequential_key(kind: BackboneKind, key: &str) -> String {
    let (top, rest) = key.split_once('.').unwrap_or((key, ""));
    let top = match (kind, top) {
        (BackboneKind::Vgg19Bn, "features") => "0".to_string(),
        (BackboneKind::Resnet50, "conv1") => "0".to_string(),
        (BackboneKind::Resnet50, "bn1") => "1".to_string(),
        (BackboneKind::Resnet50, t) if t.starts_with("layer") => match t[5..].parse::<usize>() {
            Ok(k) => (k + 3).to_string(),
            Err(_) => t.to_string(),
        },
        (_, t) => t.to_string(),
    };
    if rest.is_empty() {
        top
    } else {
        format!("{top}.{rest}")
    }
}

/// The torchvision key for a key in the official `Sequential` layout (inverse of
/// [`sequential_key`]); `None` for a key of neither layout.
pub fn torchvision_key(kind: BackboneKind, key: &str) -> Option<String> {
    let (top, rest) = key.split_once('.')?;
    let top = match (kind, top.parse::<usize>().ok()?) {
        (BackboneKind::Vgg19Bn, 0) => "features".to_string(),
        (BackboneKind::Resnet50, 0) => "conv1".to_string(),
        (BackboneKind::Resnet50, 1) => "bn1".to_string(),
        (BackboneKind::Resnet50, k @ 4..=7) => format!("layer{}", k - 3),
        _ => return None,
    };
    Some(format!("{top}.{rest}"))
}

/// Reads encoder weights into `backbone`. Accepts torchvision's keys (`conv1.weight`,
/// `features.0.weight`) or the official `Sequential` ones (`0.weight`), optionally under
/// `module.` and/or `encoder_I.`, plain or wrapped (`I_state_dict`, `state_dict`, `model`).
/// Keys of other heads (`fc.*`, `classifier.*`) are ignored; every tensor the encoder needs must
/// be there with its shape. Returns BatchNorm's `num_batches_tracked` (0 if absent).
pub fn load_backbone(
    backbone: &mut Backbone,
    kind: BackboneKind,
    path: &Path,
    device: &Device,
) -> Result<u64> {
    if !path.is_file() {
        bail!("encoder weights {}: file not found", path.display());
    }
    let wanted: std::collections::HashSet<String> = ParamList::of(backbone)
        .entries
        .into_iter()
        .map(|e| e.0)
        .collect();
    let mut tracked = 0;
    let mut sd = StateDict::default();
    for (key, t) in pth::read_state_dict(path)? {
        let key = torchvision_name(kind, &key, &wanted);
        if key.ends_with(".num_batches_tracked") {
            tracked = t.data.first().copied().unwrap_or(0.0) as u64;
        } else if wanted.contains(&key) {
            let (shape, data) = (t.shape, t.data);
            sd.entries.push((key, StoredTensor { shape, data }));
        }
    }
    load_state_dict(backbone, sd, device, path).with_context(|| {
        format!(
            "loading {kind:?} weights (torchvision `{}` layout)",
            kind.weights_file()
        )
    })?;
    Ok(tracked)
}

/// `key` under torchvision's name: prefixes dropped, a `Sequential` index mapped.
fn torchvision_name(
    kind: BackboneKind,
    key: &str,
    wanted: &std::collections::HashSet<String>,
) -> String {
    let mut k = key;
    for prefix in ["module.", "encoder_I."] {
        k = k.strip_prefix(prefix).unwrap_or(k);
    }
    let running_var = format!("{}.running_var", k.trim_end_matches(".num_batches_tracked"));
    if wanted.contains(k) || wanted.contains(&running_var) {
        return k.to_string();
    }
    torchvision_key(kind, k).unwrap_or_else(|| k.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::ParamList;

    #[test]
    fn keys_are_torchvisions_and_map_both_ways() {
        let _rng = crate::rng_lock();
        let device = Device::flex();
        let mut vgg = BackboneConfig::real(BackboneKind::Vgg19Bn).init(&device);
        let keys: Vec<String> = ParamList::of(&mut vgg)
            .entries
            .into_iter()
            .map(|e| e.0)
            .collect();
        // conv 0, BN 1, ReLU 2, conv 3, BN 4, ReLU 5, pool 6, conv 7 ...; the last conv is 49.
        assert_eq!(
            &keys[..6],
            [
                "features.0.weight",
                "features.0.bias",
                "features.1.weight",
                "features.1.bias",
                "features.1.running_mean",
                "features.1.running_var"
            ]
        );
        assert!(keys.contains(&"features.7.weight".to_string()));
        assert_eq!(keys.last().unwrap(), "features.50.running_var");
        assert_eq!(keys.len(), 16 * 6);
        let mut resnet = BackboneConfig::real(BackboneKind::Resnet50).init(&device);
        let list = ParamList::of(&mut resnet);
        // torchvision resnet50: 25,557,032 parameters, of which fc holds 2,049,000; running
        // statistics are 2 × 26,560 more (53 BatchNorms).
        assert_eq!(list.total(), 25_557_032 - 2_049_000 + 2 * 26_560);
        for (kind, tv, seq) in [
            (
                BackboneKind::Vgg19Bn,
                "features.50.running_var",
                "0.50.running_var",
            ),
            (BackboneKind::Resnet50, "conv1.weight", "0.weight"),
            (BackboneKind::Resnet50, "bn1.bias", "1.bias"),
            (
                BackboneKind::Resnet50,
                "layer4.2.downsample.1.weight",
                "7.2.downsample.1.weight",
            ),
        ] {
            assert_eq!(sequential_key(kind, tv), seq);
            assert_eq!(torchvision_key(kind, seq).as_deref(), Some(tv));
        }
        assert_eq!(torchvision_key(BackboneKind::Resnet50, "8.weight"), None);
    }
}
