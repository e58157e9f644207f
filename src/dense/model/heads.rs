//! The classification and regression heads (official `PtTransformerClsHead` and
//! `PtTransformerRegHead`, `multimodal_meta_archs.py`), shared across pyramid levels:
//! `num_layers − 1` masked convolutions (no bias when followed by LayerNorm) each followed by
//! LayerNorm (if configured) and ReLU, then the output convolution.

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};

use super::blocks::{ChannelLayerNorm, MaskedConv1d, Scale};
use crate::model::state::{HasState, Prefix, StateVisitor};

/// Widths of one head.
#[derive(Debug, Clone)]
pub struct HeadConfig {
    pub input_dim: usize,
    pub feat_dim: usize,
    pub num_classes: usize,
    pub num_layers: usize,
    pub kernel_size: usize,
    pub with_ln: bool,
}

/// The shared trunk: `head.{i}` convolutions and `norm.{i}` LayerNorms.
#[derive(Module, Debug)]
pub struct HeadTrunk {
    pub head: Vec<MaskedConv1d>,
    /// Empty without LayerNorm (the official `nn.Identity`).
    pub norm: Vec<ChannelLayerNorm>,
}

impl HeadTrunk {
    fn new(c: &HeadConfig, device: &Device) -> Self {
        let mut head = Vec::new();
        let mut norm = Vec::new();
        for idx in 0..c.num_layers.saturating_sub(1) {
            let d_in = if idx == 0 { c.input_dim } else { c.feat_dim };
            head.push(MaskedConv1d::new(
                d_in,
                c.feat_dim,
                c.kernel_size,
                1,
                1,
                !c.with_ln,
                device,
            ));
            if c.with_ln {
                norm.push(ChannelLayerNorm::new(c.feat_dim, device));
            }
        }
        Self { head, norm }
    }

    fn forward(&self, x: Tensor<3>, mask: Tensor<2>) -> Tensor<3> {
        let mut out = x;
        for (idx, conv) in self.head.iter().enumerate() {
            let (y, _) = conv.forward(out, mask.clone());
            out = relu(match self.norm.get(idx) {
                Some(n) => n.forward(y),
                None => y,
            });
        }
        out
    }

    fn visit_trunk<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        for (i, m) in self.head.iter_mut().enumerate() {
            m.visit_state(&at.child(&format!("head.{i}")), v);
        }
        for (i, m) in self.norm.iter_mut().enumerate() {
            m.visit_state(&at.child(&format!("norm.{i}")), v);
        }
    }
}

/// Classification head: per level `[B, D, T_l]` → logits `[B, C, T_l]`. The classifier's bias
/// starts at `−log((1 − p)/p)` for the prior probability p (official `cls_prior_prob`, 0.01),
/// and at `−log((1 − 1e-6)/1e-6)` for the classes listed as empty.
#[derive(Module, Debug)]
pub struct ClsHead {
    pub trunk: HeadTrunk,
    pub cls_head: MaskedConv1d,
}

impl ClsHead {
    pub fn new(c: &HeadConfig, prior_prob: f64, empty_cls: &[usize], device: &Device) -> Self {
        let mut cls_head =
            MaskedConv1d::new(c.feat_dim, c.num_classes, c.kernel_size, 1, 1, true, device);
        let prior = -((1.0 - prior_prob) / prior_prob).ln();
        let empty = -((1.0 - 1e-6f64) / 1e-6).ln();
        let bias: Vec<f32> = (0..c.num_classes)
            .map(|k| {
                if empty_cls.contains(&k) {
                    empty as f32
                } else {
                    prior as f32
                }
            })
            .collect();
        let n = bias.len();
        cls_head.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(bias, [n]),
            device,
        )));
        Self {
            trunk: HeadTrunk::new(c, device),
            cls_head,
        }
    }

    pub fn forward(&self, feats: &[Tensor<3>], masks: &[Tensor<2>]) -> Vec<Tensor<3>> {
        feats
            .iter()
            .zip(masks)
            .map(|(f, m)| {
                let x = self.trunk.forward(f.clone(), m.clone());
                self.cls_head.forward(x, m.clone()).0
            })
            .collect()
    }
}

impl HasState for ClsHead {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.trunk.visit_trunk(at, v);
        self.cls_head.visit_state(&at.child("cls_head"), v);
    }
}

/// Regression head: per level `[B, D, T_l]` → `relu(scale_l · offsets)`, offsets `[B, 2C, T_l]`
/// (class-aware: channel `2c + k` is class c's left (k = 0) / right (k = 1) distance in units
/// of the level's stride) or `[B, 2, T_l]`. One learnable `Scale` per level.
#[derive(Module, Debug)]
pub struct RegHead {
    pub trunk: HeadTrunk,
    pub scale: Vec<Scale>,
    pub offset_head: MaskedConv1d,
}

impl RegHead {
    pub fn new(c: &HeadConfig, fpn_levels: usize, class_aware: bool, device: &Device) -> Self {
        let out = if class_aware { 2 * c.num_classes } else { 2 };
        Self {
            trunk: HeadTrunk::new(c, device),
            scale: (0..fpn_levels).map(|_| Scale::new(device)).collect(),
            offset_head: MaskedConv1d::new(c.feat_dim, out, c.kernel_size, 1, 1, true, device),
        }
    }

    pub fn forward(&self, feats: &[Tensor<3>], masks: &[Tensor<2>]) -> Vec<Tensor<3>> {
        assert_eq!(feats.len(), self.scale.len(), "one Scale per pyramid level");
        feats
            .iter()
            .zip(masks)
            .zip(&self.scale)
            .map(|((f, m), s)| {
                let x = self.trunk.forward(f.clone(), m.clone());
                relu(s.forward(self.offset_head.forward(x, m.clone()).0))
            })
            .collect()
    }
}

impl HasState for RegHead {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.trunk.visit_trunk(at, v);
        for (i, s) in self.scale.iter_mut().enumerate() {
            s.visit_state(&at.child(&format!("scale.{i}")), v);
        }
        self.offset_head.visit_state(&at.child("offset_head"), v);
    }
}
