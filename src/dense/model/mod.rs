//! The UnAV-100 baseline (official `PtTransformer`, registered as `LocPointTransformer` in
//! `libs/modeling/multimodal_meta_archs.py`), forward pass up to the per-level outputs.
//!
//! One batch, in the order of the official `forward`:
//! 1. [`preprocess`]: pad every video's visual `[C_v, n]` and audio `[C_a, n]` features with
//!    zeros to one length ([`padded_length`]) and build the validity mask `[B, T]`;
//!    (CACE-Net's [`avca`] on these features when `avca`;)
//! 2. [`backbone`]: per-modality embedding → position embedding → stem → cross-modal fusion →
//!    pyramid of `arch[2] + 1` levels (stride 2^l), visual and audio features `[B, E, T_l]`;
//! 3. concatenate visual ‖ audio per level → `[B, 2E, T_l]`;
//! 4. [`dependency`] block (if `use_dependency`);
//!    (CACE-Net's [`bece`] on the features the classification head reads when `bece`;)
//! 5. [`heads`]: class logits `[B, T_l, C]` and offsets `[B, T_l, C, 2]` (class-aware) per level.
//!
//! Training: [`labels`] assigns targets to the points of [`points`], [`losses`] computes the
//! focal and DIoU losses with their normaliser.
//!
//! There is no neck: the UnAV baseline feeds the backbone's pyramid straight to the heads.
//! On a plain device everything runs as the official evaluation mode (drop path is `scale · x`);
//! on an autodiff device drop path is active (training). Dropout is 0 in the UnAV config and
//! not built.

pub mod avca;
pub mod backbone;
pub mod bece;
pub mod blocks;
pub mod dependency;
pub mod heads;
pub mod labels;
pub mod losses;
pub mod points;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::model::state::{HasState, Prefix, StateVisitor};
use avca::DenseAvca;
use backbone::{BackboneConfig, ConvTransformerBackbone};
use bece::{BeceViews, DenseBece};
use dependency::DependencyBlock;
use heads::{ClsHead, HeadConfig, RegHead};
use points::PointGenerator;

/// The model's configuration, with the official values for UnAV-100 as defaults
/// (`configs/avel_unav100.yaml` over the defaults of `libs/core/config.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenseModelConfig {
    /// Visual feature width (I3D RGB ‖ flow): 2048.
    pub input_dim_v: usize,
    /// Audio feature width (VGGish): 128.
    pub input_dim_a: usize,
    /// Embedding width E: 512.
    pub embd_dim: usize,
    pub embd_kernel_size: usize,
    pub embd_with_ln: bool,
    pub n_head: usize,
    /// (#embedding convs, #stem transformers, #branch levels): (2, 3, 5).
    pub arch: [usize; 3],
    pub scale_factor: usize,
    /// Training length and position-embedding length: 224.
    pub max_seq_len: usize,
    /// Points are buffered for max_seq_len × this factor (official dataset default 1.0).
    pub max_buffer_len_factor: f64,
    pub use_abs_pe: bool,
    pub head_dim: usize,
    pub head_kernel_size: usize,
    pub head_num_layers: usize,
    pub head_with_ln: bool,
    pub num_classes: usize,
    pub class_aware: bool,
    pub use_dependency: bool,
    /// Per-class width of the dependency block (hard-coded 128 in the official meta arch).
    pub dependency_dim: usize,
    /// Regression range (in feature steps) per pyramid level.
    pub regression_range: Vec<(f32, f32)>,
    pub cls_prior_prob: f64,
    /// Classes without training data: their classifier bias starts near −13.8.
    pub head_empty_cls: Vec<usize>,
    /// Drop-path rate; > 0 also creates the AffineDropPath scales (official 0.1).
    pub droppath: f64,
    /// CACE-Net's AVCA on the snippet features before the backbone ([`avca`]); off in the
    /// UnAV baseline.
    pub avca: bool,
    /// Width of AVCA's channel-attention bottleneck.
    pub avca_dim: usize,
    /// AVCA's ψ (the AVE run's 0.3).
    pub avca_psi: f64,
    /// CACE-Net's BECE on the fused features feeding the classification head ([`bece`]).
    pub bece: bool,
    /// BECE's λ (the AVE run's 0.6).
    pub bece_lambda: f64,
}

impl Default for DenseModelConfig {
    fn default() -> Self {
        Self {
            input_dim_v: 2048,
            input_dim_a: 128,
            embd_dim: 512,
            embd_kernel_size: 3,
            embd_with_ln: true,
            n_head: 4,
            arch: [2, 3, 5],
            scale_factor: 2,
            max_seq_len: 224,
            max_buffer_len_factor: 1.0,
            use_abs_pe: true,
            head_dim: 512,
            head_kernel_size: 3,
            head_num_layers: 3,
            head_with_ln: true,
            num_classes: 100,
            class_aware: true,
            use_dependency: true,
            dependency_dim: 128,
            regression_range: vec![
                (0.0, 4.0),
                (4.0, 8.0),
                (8.0, 16.0),
                (16.0, 32.0),
                (32.0, 64.0),
                (64.0, 10000.0),
            ],
            cls_prior_prob: 0.01,
            head_empty_cls: Vec::new(),
            droppath: 0.1,
            avca: false,
            avca_dim: 512,
            avca_psi: 0.3,
            bece: false,
            bece_lambda: 0.6,
        }
    }
}

impl DenseModelConfig {
    /// Strides of the pyramid levels: scale_factor^l for l = 0..=arch[2].
    pub fn fpn_strides(&self) -> Vec<usize> {
        (0..=self.arch[2])
            .map(|l| self.scale_factor.pow(l as u32))
            .collect()
    }

    /// The largest stride: inference lengths are padded to a multiple of it.
    pub fn max_div_factor(&self) -> usize {
        *self.fpn_strides().last().unwrap()
    }

    /// Errors name the field that is out of range.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("input_dim_v", self.input_dim_v),
            ("input_dim_a", self.input_dim_a),
            ("embd_dim", self.embd_dim),
            ("n_head", self.n_head),
            ("scale_factor", self.scale_factor),
            ("max_seq_len", self.max_seq_len),
            ("head_dim", self.head_dim),
            ("num_classes", self.num_classes),
            ("dependency_dim", self.dependency_dim),
        ];
        for (name, v) in positive {
            if v == 0 {
                bail!("{name} must be positive");
            }
        }
        if self.avca && self.avca_dim < 2 {
            bail!("avca_dim must be at least 2 (got {})", self.avca_dim);
        }
        if self.embd_dim % self.n_head != 0 {
            bail!(
                "embd_dim {} is not divisible by n_head {}",
                self.embd_dim,
                self.n_head
            );
        }
        if self.embd_kernel_size % 2 == 0 || self.head_kernel_size % 2 == 0 {
            bail!("embd_kernel_size and head_kernel_size must be odd");
        }
        if self.scale_factor != 1 && self.scale_factor % 2 != 0 {
            bail!("scale_factor must be 1 or even (got {})", self.scale_factor);
        }
        if self.regression_range.len() != self.arch[2] + 1 {
            bail!(
                "regression_range has {} levels but arch[2] = {} gives {}",
                self.regression_range.len(),
                self.arch[2],
                self.arch[2] + 1
            );
        }
        if self.max_seq_len % self.max_div_factor() != 0 {
            bail!(
                "max_seq_len {} is not divisible by the largest stride {}",
                self.max_seq_len,
                self.max_div_factor()
            );
        }
        if let Some(&k) = self.head_empty_cls.iter().find(|&&k| k >= self.num_classes) {
            bail!("head_empty_cls lists class {k} of {}", self.num_classes);
        }
        Ok(())
    }

    pub fn point_generator(&self) -> Result<PointGenerator> {
        PointGenerator::new(
            self.max_seq_len,
            self.max_buffer_len_factor,
            self.scale_factor,
            self.regression_range.clone(),
        )
    }
}

/// The batch length of the official `preprocessing`: max_seq_len when the longest video fits
/// (training always, where a longer video is an error), else the longest length rounded up to
/// a multiple of the largest stride.
pub fn padded_length(longest: usize, max_seq_len: usize, max_div_factor: usize) -> usize {
    if longest <= max_seq_len {
        max_seq_len
    } else {
        longest.div_ceil(max_div_factor) * max_div_factor
    }
}

/// One video's features as the data loader gives them: visual `[C_v, n]`, audio `[C_a, n]`.
pub struct VideoFeatures {
    pub visual: Tensor<2>,
    pub audio: Tensor<2>,
}

/// A padded batch: visual `[B, C_v, T]`, audio `[B, C_a, T]`, mask `[B, T]` (1 on valid steps).
pub struct DenseBatch {
    pub visual: Tensor<3>,
    pub audio: Tensor<3>,
    pub mask: Tensor<2>,
    pub lengths: Vec<usize>,
}

/// The official `preprocessing`: zero-pad to [`padded_length`] of the longest video. In
/// training a video longer than max_seq_len is an error (the loader crops to it first).
pub fn preprocess(
    videos: &[VideoFeatures],
    config: &DenseModelConfig,
    training: bool,
) -> Result<DenseBatch> {
    if videos.is_empty() {
        bail!("empty batch");
    }
    let device = videos[0].visual.device();
    let mut lengths = Vec::new();
    for (i, v) in videos.iter().enumerate() {
        let [cv, n] = v.visual.dims();
        let [ca, na] = v.audio.dims();
        if cv != config.input_dim_v || ca != config.input_dim_a {
            bail!(
                "video {i}: feature widths visual {cv} / audio {ca}, the model expects {} / {}",
                config.input_dim_v,
                config.input_dim_a
            );
        }
        if n != na || n == 0 {
            bail!("video {i}: visual has {n} steps and audio {na}; they must be equal and > 0");
        }
        lengths.push(n);
    }
    let longest = *lengths.iter().max().unwrap();
    if training && longest > config.max_seq_len {
        bail!(
            "a training video has {longest} feature steps, more than max_seq_len {}",
            config.max_seq_len
        );
    }
    let t = padded_length(longest, config.max_seq_len, config.max_div_factor());
    let pad = |x: Tensor<2>| -> Tensor<2> {
        let [c, n] = x.dims();
        if n == t {
            x
        } else {
            Tensor::cat(vec![x, Tensor::zeros([c, t - n], &device)], 1)
        }
    };
    let visual = Tensor::stack(videos.iter().map(|v| pad(v.visual.clone())).collect(), 0);
    let audio = Tensor::stack(videos.iter().map(|v| pad(v.audio.clone())).collect(), 0);
    let mask: Vec<f32> = lengths
        .iter()
        .flat_map(|&n| (0..t).map(move |i| if i < n { 1.0 } else { 0.0 }))
        .collect();
    let mask = Tensor::from_data(TensorData::new(mask, [videos.len(), t]), &device);
    Ok(DenseBatch {
        visual,
        audio,
        mask,
        lengths,
    })
}

/// Per pyramid level l: class logits `[B, T_l, C]`, offsets `[B, T_l, C, 2]` (class-aware;
/// else `[B, T_l, 1, 2]`) in units of the level's stride, and the mask `[B, T_l]`.
pub struct DenseOutput {
    pub cls_logits: Vec<Tensor<3>>,
    pub offsets: Vec<Tensor<4>>,
    pub masks: Vec<Tensor<2>>,
    /// BECE's two views, in training once BECE is switched on.
    pub bece: Option<BeceViews>,
}

#[derive(Module, Debug)]
pub struct DenseModel {
    pub avca: Option<DenseAvca>,
    pub backbone: ConvTransformerBackbone,
    pub dependency_block: Option<DependencyBlock>,
    pub cls_head: ClsHead,
    pub reg_head: RegHead,
    pub bece: Option<DenseBece>,
    /// Whether BECE acts (the AVE model's `switch`): off in training before its start epoch.
    pub bece_on: bool,
    pub num_classes: usize,
    pub class_aware: bool,
}

impl DenseModel {
    /// A freshly initialised model (the official initialisation: PyTorch's default conv
    /// weights, zero biases, LayerNorm 1/0, AffineDropPath 1e-4, Scale 1, classifier bias from
    /// the prior probability).
    pub fn new(config: &DenseModelConfig, device: &Device) -> Result<Self> {
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid dense model config: {e}"))?;
        let e = config.embd_dim;
        let backbone = ConvTransformerBackbone::new(
            &BackboneConfig {
                n_in_v: config.input_dim_v,
                n_in_a: config.input_dim_a,
                n_embd: e,
                n_head: config.n_head,
                n_embd_ks: config.embd_kernel_size,
                max_len: config.max_seq_len,
                arch: config.arch,
                scale_factor: config.scale_factor,
                with_ln: config.embd_with_ln,
                path_pdrop: config.droppath,
                use_abs_pe: config.use_abs_pe,
            },
            device,
        );
        let dependency_block = config.use_dependency.then(|| {
            DependencyBlock::new(
                2 * e,
                config.dependency_dim,
                config.embd_kernel_size,
                config.num_classes,
                config.droppath,
                device,
            )
        });
        let head = HeadConfig {
            input_dim: 2 * e,
            feat_dim: config.head_dim,
            num_classes: config.num_classes,
            num_layers: config.head_num_layers,
            kernel_size: config.head_kernel_size,
            with_ln: config.head_with_ln,
        };
        let cls_head = ClsHead::new(&head, config.cls_prior_prob, &config.head_empty_cls, device);
        let reg_head = RegHead::new(&head, config.arch[2] + 1, config.class_aware, device);
        // CACE-Net's parts last, so the baseline's initialisation is the same with or without.
        let avca = config.avca.then(|| {
            DenseAvca::new(
                config.input_dim_v,
                config.input_dim_a,
                config.avca_dim,
                config.avca_psi,
                device,
            )
        });
        let bece = config
            .bece
            .then(|| DenseBece::new(2 * e, config.bece_lambda, device));
        Ok(Self {
            avca,
            backbone,
            dependency_block,
            cls_head,
            reg_head,
            bece,
            bece_on: config.bece,
            num_classes: config.num_classes,
            class_aware: config.class_aware,
        })
    }

    /// Sets the drop-path probability of every transformer block (the config's `droppath`
    /// at construction; 0 turns it off for deterministic training-mode forwards).
    pub fn set_drop_path_prob(&mut self, p: f64) {
        let b = &mut self.backbone;
        let blocks = b
            .self_att_v
            .iter_mut()
            .chain(b.self_att_a.iter_mut())
            .chain([&mut b.ori_cross_att_va, &mut b.ori_cross_att_av])
            .chain(b.cross_att_va.iter_mut())
            .chain(b.cross_att_av.iter_mut());
        for block in blocks {
            block.set_drop_path_prob(p);
        }
        if let Some(dep) = self.dependency_block.as_mut() {
            dep.cooccur_branch.set_drop_path_prob(p);
            dep.temporal_branch.set_drop_path_prob(p);
        }
    }

    /// The padded batch → per-level outputs (official `forward` before `losses`/`inference`).
    pub fn forward(&self, batch: &DenseBatch) -> DenseOutput {
        let (visual, audio) = match &self.avca {
            Some(avca) => avca.forward(
                batch.visual.clone(),
                batch.audio.clone(),
                batch.mask.clone(),
            ),
            None => (batch.visual.clone(), batch.audio.clone()),
        };
        let (feats_v, feats_a, masks) = self.backbone.forward(visual, audio, batch.mask.clone());
        // Visual ‖ audio per level: [B, 2E, T_l].
        let feats: Vec<Tensor<3>> = feats_v
            .into_iter()
            .zip(feats_a)
            .map(|(v, a)| Tensor::cat(vec![v, a], 1))
            .collect();
        let feats = match &self.dependency_block {
            Some(dep) => dep.forward(feats, &masks),
            None => feats,
        };
        let (cls_in, bece) = match (&self.bece, self.bece_on) {
            (Some(b), true) => b.forward(&feats, &masks, batch.mask.device().is_autodiff()),
            _ => (feats.clone(), None),
        };
        let cls = self.cls_head.forward(&cls_in, &masks); // [B, C, T_l]
        let off = self.reg_head.forward(&feats, &masks); // [B, 2C or 2, T_l]
        let classes = if self.class_aware {
            self.num_classes
        } else {
            1
        };
        DenseOutput {
            cls_logits: cls.into_iter().map(|x| x.swap_dims(1, 2)).collect(),
            offsets: off
                .into_iter()
                .map(|x| {
                    let [b, _, t] = x.dims();
                    x.swap_dims(1, 2).reshape([b, t, classes, 2])
                })
                .collect(),
            masks,
            bece,
        }
    }
}

impl HasState for DenseModel {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        if let Some(avca) = self.avca.as_mut() {
            avca.visit_state(&at.child("avca"), v);
        }
        self.backbone.visit_state(&at.child("backbone"), v);
        if let Some(dep) = self.dependency_block.as_mut() {
            dep.visit_state(&at.child("dependency_block"), v);
        }
        self.cls_head.visit_state(&at.child("cls_head"), v);
        self.reg_head.visit_state(&at.child("reg_head"), v);
        if let Some(bece) = self.bece.as_mut() {
            bece.visit_state(&at.child("bece"), v);
        }
    }
}
