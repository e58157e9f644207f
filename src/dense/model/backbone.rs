//! The multimodal backbone (official `ConvTransformerBackbone`, `multimodal_backbones.py`):
//! per-modality embedding convolutions, the absolute position embedding, per-modality stem
//! transformers, cross-modal fusion at full resolution, and the pyramid ("branch") of
//! cross-modal transformer blocks that halve the time axis at each level.

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};

use super::blocks::{ChannelLayerNorm, MaskedConv1d, TransformerBlock};
use crate::model::state::{HasState, Prefix, StateVisitor};

/// The widths and depths the backbone is built from (taken from `DenseModelConfig`).
#[derive(Debug, Clone)]
pub struct BackboneConfig {
    pub n_in_v: usize,
    pub n_in_a: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_embd_ks: usize,
    pub max_len: usize,
    /// (#embedding convs, #stem transformers, #branch levels); the official stem builds
    /// `arch[1] − 1` self-attention blocks per modality, the last stem step being the
    /// full-resolution cross-modal pair.
    pub arch: [usize; 3],
    pub scale_factor: usize,
    pub with_ln: bool,
    pub path_pdrop: f64,
    pub use_abs_pe: bool,
}

#[derive(Module, Debug)]
pub struct ConvTransformerBackbone {
    pub embd_v: Vec<MaskedConv1d>,
    pub embd_a: Vec<MaskedConv1d>,
    /// Empty without `with_ln` (the official `nn.Identity`).
    pub embd_norm_v: Vec<ChannelLayerNorm>,
    pub embd_norm_a: Vec<ChannelLayerNorm>,
    pub self_att_v: Vec<TransformerBlock>,
    pub self_att_a: Vec<TransformerBlock>,
    /// Visual keys/values and skip, audio queries.
    pub ori_cross_att_va: TransformerBlock,
    /// Audio keys/values and skip, visual queries.
    pub ori_cross_att_av: TransformerBlock,
    pub cross_att_va: Vec<TransformerBlock>,
    pub cross_att_av: Vec<TransformerBlock>,
    pub n_embd: usize,
    pub max_len: usize,
    pub use_abs_pe: bool,
}

impl ConvTransformerBackbone {
    pub fn new(c: &BackboneConfig, device: &Device) -> Self {
        let e = c.n_embd;
        let mut embd_v = Vec::new();
        let mut embd_a = Vec::new();
        let mut embd_norm_v = Vec::new();
        let mut embd_norm_a = Vec::new();
        for idx in 0..c.arch[0] {
            let (in_v, in_a) = if idx == 0 {
                (c.n_in_v, c.n_in_a)
            } else {
                (e, e)
            };
            let bias = !c.with_ln;
            embd_v.push(MaskedConv1d::new(in_v, e, c.n_embd_ks, 1, 1, bias, device));
            embd_a.push(MaskedConv1d::new(in_a, e, c.n_embd_ks, 1, 1, bias, device));
            if c.with_ln {
                embd_norm_v.push(ChannelLayerNorm::new(e, device));
                embd_norm_a.push(ChannelLayerNorm::new(e, device));
            }
        }
        let block = |stride| TransformerBlock::new(e, c.n_head, stride, None, c.path_pdrop, device);
        let stem = c.arch[1].saturating_sub(1);
        Self {
            embd_v,
            embd_a,
            embd_norm_v,
            embd_norm_a,
            self_att_v: (0..stem).map(|_| block(1)).collect(),
            self_att_a: (0..stem).map(|_| block(1)).collect(),
            ori_cross_att_va: block(1),
            ori_cross_att_av: block(1),
            cross_att_va: (0..c.arch[2]).map(|_| block(c.scale_factor)).collect(),
            cross_att_av: (0..c.arch[2]).map(|_| block(c.scale_factor)).collect(),
            n_embd: e,
            max_len: c.max_len,
            use_abs_pe: c.use_abs_pe,
        }
    }

    /// `x_v [B, C_v, T]`, `x_a [B, C_a, T]`, `mask [B, T]` → per pyramid level l (stride 2^l):
    /// visual `[B, E, T_l]`, audio `[B, E, T_l]`, mask `[B, T_l]`.
    pub fn forward(
        &self,
        x_v: Tensor<3>,
        x_a: Tensor<3>,
        mask: Tensor<2>,
    ) -> (Vec<Tensor<3>>, Vec<Tensor<3>>, Vec<Tensor<2>>) {
        let t = x_v.dims()[2];
        let (mut x_v, mut x_a) = (x_v, x_a);
        let (mut mask_v, mut mask_a) = (mask.clone(), mask);
        // Embedding: masked conv → LayerNorm (if any) → ReLU, per modality.
        for idx in 0..self.embd_v.len() {
            let (y, m) = self.embd_v[idx].forward(x_v, mask_v);
            x_v = relu(match self.embd_norm_v.get(idx) {
                Some(n) => n.forward(y),
                None => y,
            });
            mask_v = m;
            let (y, m) = self.embd_a[idx].forward(x_a, mask_a);
            x_a = relu(match self.embd_norm_a.get(idx) {
                Some(n) => n.forward(y),
                None => y,
            });
            mask_a = m;
        }
        // Absolute position embedding on valid steps: the table for max_len, linearly
        // interpolated to T when T > max_len (the official evaluation path; in training T is
        // max_len, where both paths give the table itself).
        if self.use_abs_pe {
            let pe = position_embedding(self.n_embd, self.max_len, t, &x_v.device()); // [1, E, T]
            x_v = x_v + pe.clone() * mask_v.clone().unsqueeze_dim::<3>(1);
            x_a = x_a + pe * mask_a.clone().unsqueeze_dim::<3>(1);
        }
        // Stem: self-attention per modality.
        for (bv, ba) in self.self_att_v.iter().zip(&self.self_att_a) {
            let (y, m) = bv.forward(x_v.clone(), x_v, mask_v);
            (x_v, mask_v) = (y, m);
            let (y, m) = ba.forward(x_a.clone(), x_a, mask_a);
            (x_a, mask_a) = (y, m);
        }
        // Full-resolution cross-modal fusion (level 0).
        let (x_va, mask_0) = self
            .ori_cross_att_va
            .forward(x_v.clone(), x_a.clone(), mask_v);
        let (x_av, _) = self.ori_cross_att_av.forward(x_a, x_v, mask_a.clone());
        let mut feats_v = vec![x_va];
        let mut feats_a = vec![x_av];
        // The official code returns the visual masks; both modalities share one mask.
        let mut masks = vec![mask_0];
        let mut mask_a = mask_a;
        // Branch: each level attends across modalities at the previous level and halves T.
        for idx in 0..self.cross_att_va.len() {
            let (v, m) = self.cross_att_va[idx].forward(
                feats_v[idx].clone(),
                feats_a[idx].clone(),
                masks[idx].clone(),
            );
            let (a, ma) =
                self.cross_att_av[idx].forward(feats_a[idx].clone(), feats_v[idx].clone(), mask_a);
            feats_v.push(v);
            masks.push(m);
            feats_a.push(a);
            mask_a = ma;
        }
        (feats_v, feats_a, masks)
    }
}

impl HasState for ConvTransformerBackbone {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        let list = |name: &str, i: usize| at.child(&format!("{name}.{i}"));
        for (i, m) in self.embd_v.iter_mut().enumerate() {
            m.visit_state(&list("embd_V", i), v);
        }
        for (i, m) in self.embd_a.iter_mut().enumerate() {
            m.visit_state(&list("embd_A", i), v);
        }
        for (i, m) in self.embd_norm_v.iter_mut().enumerate() {
            m.visit_state(&list("embd_norm_V", i), v);
        }
        for (i, m) in self.embd_norm_a.iter_mut().enumerate() {
            m.visit_state(&list("embd_norm_A", i), v);
        }
        for (i, m) in self.self_att_v.iter_mut().enumerate() {
            m.visit_state(&list("self_att_V", i), v);
        }
        for (i, m) in self.self_att_a.iter_mut().enumerate() {
            m.visit_state(&list("self_att_A", i), v);
        }
        self.ori_cross_att_va
            .visit_state(&at.child("ori_cross_att_Va"), v);
        self.ori_cross_att_av
            .visit_state(&at.child("ori_cross_att_Av"), v);
        for (i, m) in self.cross_att_va.iter_mut().enumerate() {
            m.visit_state(&list("cross_att_Va", i), v);
        }
        for (i, m) in self.cross_att_av.iter_mut().enumerate() {
            m.visit_state(&list("cross_att_Av", i), v);
        }
    }
}

/// The sinusoid table of `max_len` positions (official `get_sinusoid_encoding`: angle
/// `pos / 10000^(2⌊j/2⌋/d)` in f64, sin on even channels, cos on odd, then f32) divided by √d,
/// as `[1, d, max_len]` values; resized to `t` positions when `t > max_len` by linear
/// interpolation with `align_corners=False` (PyTorch `F.interpolate`), else its first `t`.
pub fn position_embedding_values(d: usize, max_len: usize, t: usize) -> Vec<f32> {
    let norm = (d as f64).sqrt() as f32;
    let mut table = vec![0f32; d * max_len]; // [d, max_len]
    for pos in 0..max_len {
        for j in 0..d {
            let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / d as f64);
            let v = if j % 2 == 0 { angle.sin() } else { angle.cos() };
            table[j * max_len + pos] = v as f32 / norm;
        }
    }
    let mut out = vec![0f32; d * t];
    if t <= max_len {
        for j in 0..d {
            out[j * t..(j + 1) * t].copy_from_slice(&table[j * max_len..j * max_len + t]);
        }
    } else {
        // upsample_linear1d: src = scale·(i + ½) − ½ clamped at 0, scale = in/out in f32.
        let scale = max_len as f32 / t as f32;
        for i in 0..t {
            let src = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
            let i0 = src as usize;
            let i1 = if i0 < max_len - 1 { i0 + 1 } else { i0 };
            let l1 = src - i0 as f32;
            let l0 = 1.0 - l1;
            for j in 0..d {
                let row = &table[j * max_len..(j + 1) * max_len];
                out[j * t + i] = l0 * row[i0] + l1 * row[i1];
            }
        }
    }
    out
}

/// [`position_embedding_values`] as a `[1, d, t]` tensor.
pub fn position_embedding(d: usize, max_len: usize, t: usize, device: &Device) -> Tensor<3> {
    Tensor::from_data(
        TensorData::new(position_embedding_values(d, max_len, t), [1, d, t]),
        device,
    )
}
