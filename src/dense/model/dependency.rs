//! The dependency block (official `Dependency_Block`, `dependency_block.py`): per pyramid
//! level, the fused features are expanded into one `H`-wide (official: 128) feature per class,
//! then two single-head transformer blocks (MLP hidden = H) model the temporal dependency
//! (attention along time, per class) and the co-occurrence dependency (attention across
//! classes, per time step); their sum is squeezed back to the input width.
//!
//! Two details follow the official code exactly, although they look unintended:
//! - the temporal branch's mask is `mask.repeat(C, 1, 1)` while its rows are ordered
//!   (video, class): row `b·C + c` is masked with video `(b·C + c) mod B`'s mask, not video b's;
//! - the co-occurrence branch masks whole rows (one time step of one video). The official code
//!   reaches this through a shape check in `MaskedConv1D`/`MaskedMHCA` that misfires (and
//!   raises) when the number of classes equals B·T_l at some level; ours always masks rows.

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::blocks::{MaskedConv1d, TransformerBlock};
use crate::model::state::{HasState, Prefix, StateVisitor};

#[derive(Module, Debug)]
pub struct DependencyBlock {
    /// `in → H·C`, no bias.
    pub feature_expand: MaskedConv1d,
    pub cooccur_branch: TransformerBlock,
    pub temporal_branch: TransformerBlock,
    /// `H·C → in`, no bias.
    pub feature_squeeze: MaskedConv1d,
    pub num_classes: usize,
}

impl DependencyBlock {
    pub fn new(
        in_channel: usize,
        n_embd: usize,
        kernel: usize,
        num_classes: usize,
        path_pdrop: f64,
        device: &Device,
    ) -> Self {
        let wide = n_embd * num_classes;
        let branch = || TransformerBlock::new(n_embd, 1, 1, Some(n_embd), path_pdrop, device);
        Self {
            feature_expand: MaskedConv1d::new(in_channel, wide, kernel, 1, 1, false, device),
            cooccur_branch: branch(),
            temporal_branch: branch(),
            feature_squeeze: MaskedConv1d::new(wide, in_channel, kernel, 1, 1, false, device),
            num_classes,
        }
    }

    /// One level: `features [B, D, T]`, `mask [B, T]` → `[B, D, T]`.
    pub fn forward_level(&self, features: Tensor<3>, mask: Tensor<2>) -> Tensor<3> {
        let [b, _, t] = features.dims();
        let c = self.num_classes;
        let (exp, mask) = self.feature_expand.forward(features, mask);
        let h = exp.dims()[1] / c;
        let exp = relu(exp).reshape([b, c, h, t]); // [B, C, H, T]

        // Temporal dependency: rows (b, c), attention along T.
        let temp_feat = exp.clone().reshape([b * c, h, t]);
        let temp_mask = mask.clone().repeat_dim(0, c); // [C·B, T], row i = mask[i mod B]
        let (temp_out, _) = self
            .temporal_branch
            .forward(temp_feat.clone(), temp_feat, temp_mask);
        let temp_out = temp_out.reshape([b, c, h, t]);

        // Co-occurrence dependency: rows (b, t), attention across the C classes.
        let coo_feat = exp.swap_dims(1, 3).reshape([b * t, h, c]); // [B·T, H, C]
        let coo_mask = mask.clone().reshape([b * t, 1]).repeat_dim(1, c); // [B·T, C]
        let (coo_out, _) = self
            .cooccur_branch
            .forward(coo_feat.clone(), coo_feat, coo_mask);
        let coo_out = coo_out.reshape([b, t, h, c]).swap_dims(1, 3); // [B, C, H, T]

        let out = (temp_out + coo_out).reshape([b, c * h, t]);
        self.feature_squeeze.forward(out, mask).0
    }

    /// Every level; the masks pass through unchanged.
    pub fn forward(&self, feats: Vec<Tensor<3>>, masks: &[Tensor<2>]) -> Vec<Tensor<3>> {
        feats
            .into_iter()
            .zip(masks)
            .map(|(f, m)| self.forward_level(f, m.clone()))
            .collect()
    }
}

impl HasState for DependencyBlock {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.feature_expand
            .visit_state(&at.child("feature_expand"), v);
        self.cooccur_branch
            .visit_state(&at.child("cooccur_branch"), v);
        self.temporal_branch
            .visit_state(&at.child("temporal_branch"), v);
        self.feature_squeeze
            .visit_state(&at.child("feature_squeeze"), v);
    }
}
