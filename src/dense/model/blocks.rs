//! The building blocks of the UnAV baseline (official `libs/modeling/blocks.py`, itself from
//! ActionFormer): the masked 1-D convolution, LayerNorm over channels, the masked multi-head
//! convolutional attention (`MaskedMHCA`), the pre-LN transformer block around it, `Scale` and
//! `AffineDropPath`.
//!
//! Layout as the official code: features `[B, C, T]`. A validity mask is a float tensor
//! `[B, T]` of 0/1 (the official `[B, 1, T]` bool). Convolution weights keep PyTorch's
//! `[out, in/groups, k]` layout and LayerNorm parameters their `[1, C, 1]` shape, so every
//! tensor loads by key and shape from an official state dict without reshaping.
//!
//! The UnAV blocks use *global* masked attention (every query sees every valid key of its
//! video); ActionFormer's windowed `LocalMaskedMHCA` is not part of UnAV and is not built.

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::max_pool1d;
use burn::tensor::ops::MaxPoolOptions;

use crate::conv::conv1d;
use burn::tensor::{Device, Distribution, Tensor};

use crate::model::state::{HasState, Layout, Prefix, StateVisitor};

/// Keeps every `stride`-th position of a `[B, T]` mask, as the official nearest-neighbour
/// `F.interpolate(mask, size=T // stride)` does for an integer ratio (source index `i·stride`).
pub fn downsample_mask(mask: Tensor<2>, stride: usize) -> Tensor<2> {
    if stride == 1 {
        return mask;
    }
    let [b, t] = mask.dims();
    mask.reshape([b, t / stride, stride])
        .narrow(2, 0, 1)
        .reshape([b, t / stride])
}

/// A weight `[out, in/groups, k]` drawn as PyTorch's default `kaiming_uniform_(a=√5)`:
/// uniform in ±1/√fan_in with fan_in = in/groups · k.
fn conv_weight(out: usize, in_per_group: usize, k: usize, device: &Device) -> Param<Tensor<3>> {
    let bound = 1.0 / ((in_per_group * k) as f64).sqrt();
    Param::from_tensor(Tensor::random(
        [out, in_per_group, k],
        Distribution::Uniform(-bound, bound),
        device,
    ))
}

/// Official `MaskedConv1D`: a `Conv1d` with "same" padding (odd kernel, padding k/2) whose
/// output is multiplied by the (strided) input mask. State keys: `conv.weight`, `conv.bias`.
#[derive(Module, Debug)]
pub struct MaskedConv1d {
    /// `[out, in/groups, k]`.
    pub weight: Param<Tensor<3>>,
    /// `[out]`; the official code zeroes it at construction.
    pub bias: Option<Param<Tensor<1>>>,
    pub stride: usize,
    pub groups: usize,
}

impl MaskedConv1d {
    pub fn new(
        d_in: usize,
        d_out: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        bias: bool,
        device: &Device,
    ) -> Self {
        assert!(kernel % 2 == 1, "MaskedConv1D needs an odd kernel");
        Self {
            weight: conv_weight(d_out, d_in / groups, kernel, device),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
            stride,
            groups,
        }
    }

    /// `x [B, C_in, T]`, `mask [B, T]` → `([B, C_out, T/stride], mask [B, T/stride])`.
    pub fn forward(&self, x: Tensor<3>, mask: Tensor<2>) -> (Tensor<3>, Tensor<2>) {
        let t = x.dims()[2];
        assert!(
            t % self.stride == 0,
            "sequence length {t} is not divisible by the stride {}",
            self.stride
        );
        let k = self.weight.dims()[2];
        let out = conv1d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            self.stride,
            k / 2,
            self.groups,
        );
        let out_mask = downsample_mask(mask, self.stride); // [B, T']
        (out * out_mask.clone().unsqueeze_dim::<3>(1), out_mask)
    }
}

impl HasState for MaskedConv1d {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        let conv = at.child("conv");
        v.visit(&conv.key("weight"), at.used, &mut self.weight, Layout::Same);
        if let Some(b) = self.bias.as_mut() {
            v.visit(&conv.key("bias"), at.used, b, Layout::Same);
        }
    }
}

/// A 1×1 `nn.Conv1d` with bias (the attention projections and the MLP): `weight`
/// `[out, in, 1]`, `bias` `[out]`; no masking.
#[derive(Module, Debug)]
pub struct PointwiseConv {
    pub weight: Param<Tensor<3>>,
    pub bias: Param<Tensor<1>>,
}

impl PointwiseConv {
    /// Weight as PyTorch's default; bias zero (the official backbone and dependency block
    /// zero every `Conv1d` bias in their `__init_weights__`).
    pub fn new(d_in: usize, d_out: usize, device: &Device) -> Self {
        Self {
            weight: conv_weight(d_out, d_in, 1, device),
            bias: Param::from_tensor(Tensor::zeros([d_out], device)),
        }
    }

    /// `[B, C_in, T]` → `[B, C_out, T]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        conv1d(x, self.weight.val(), Some(self.bias.val()), 1, 0, 1)
    }
}

impl HasState for PointwiseConv {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        v.visit(&at.key("weight"), at.used, &mut self.weight, Layout::Same);
        v.visit(&at.key("bias"), at.used, &mut self.bias, Layout::Same);
    }
}

/// Official `LayerNorm` for `[B, C, T]`: normalises over the channels at each time step
/// (biased variance, eps 1e-5), then `· weight + bias` with `[1, C, 1]` parameters.
#[derive(Module, Debug)]
pub struct ChannelLayerNorm {
    pub weight: Param<Tensor<3>>,
    pub bias: Param<Tensor<3>>,
    pub eps: f64,
}

impl ChannelLayerNorm {
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([1, channels, 1], device)),
            bias: Param::from_tensor(Tensor::zeros([1, channels, 1], device)),
            eps: 1e-5,
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let mu = x.clone().mean_dim(1); // [B, 1, T]
        let res = x - mu;
        let sigma = res.clone().powi_scalar(2).mean_dim(1); // [B, 1, T]
        let out = res / sigma.add_scalar(self.eps).sqrt();
        out * self.weight.val() + self.bias.val()
    }
}

impl HasState for ChannelLayerNorm {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        v.visit(&at.key("weight"), at.used, &mut self.weight, Layout::Same);
        v.visit(&at.key("bias"), at.used, &mut self.bias, Layout::Same);
    }
}

/// Official `Scale`: one learnable scalar (PyTorch shape `[]`, here `[1]`), initially 1.
#[derive(Module, Debug)]
pub struct Scale {
    pub scale: Param<Tensor<1>>,
}

impl Scale {
    pub fn new(device: &Device) -> Self {
        Self {
            scale: Param::from_tensor(Tensor::ones([1], device)),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let s = self.scale.val().reshape([1; D]);
        x * s
    }
}

impl HasState for Scale {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        v.visit(&at.key("scale"), at.used, &mut self.scale, Layout::Scalar);
    }
}

/// Official `AffineDropPath`: a per-channel scale `[1, C, 1]` (initially 1e-4) followed by drop
/// path (stochastic depth): in training each sample's branch is zeroed with probability p and
/// the rest divided by 1 − p; in evaluation it is `scale · x`. As the project's `Dropout`,
/// training means an autodiff device.
#[derive(Module, Debug)]
pub struct AffineDropPath {
    pub scale: Param<Tensor<3>>,
    pub drop_prob: f64,
}

impl AffineDropPath {
    pub fn new(channels: usize, drop_prob: f64, device: &Device) -> Self {
        Self {
            scale: Param::from_tensor(Tensor::full([1, channels, 1], 1e-4, device)),
            drop_prob,
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x * self.scale.val();
        let device = x.device();
        if !device.is_autodiff() || self.drop_prob == 0.0 {
            return x;
        }
        // Official drop_path: mask = floor(keep + U[0, 1)) per sample, x / keep · mask.
        let keep = 1.0 - self.drop_prob;
        let b = x.dims()[0];
        let mask = Tensor::<3>::random([b, 1, 1], Distribution::Uniform(0.0, 1.0), &device)
            .add_scalar(keep)
            .floor();
        x.div_scalar(keep) * mask
    }
}

impl HasState for AffineDropPath {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        v.visit(&at.key("scale"), at.used, &mut self.scale, Layout::Same);
    }
}

/// Official `MaskedMHCA`: multi-head attention whose query, key and value first pass a
/// depthwise masked convolution (kernel 3, or stride + 1 when downsampling; stride = the
/// key/value stride for all three, as the official code) and a channel LayerNorm, then a 1×1
/// projection. Keys come from `x1`, queries from `x2` (cross-modal when they differ).
#[derive(Module, Debug)]
pub struct MaskedMhca {
    pub query_conv: MaskedConv1d,
    pub query_norm: ChannelLayerNorm,
    pub key_conv: MaskedConv1d,
    pub key_norm: ChannelLayerNorm,
    pub value_conv: MaskedConv1d,
    pub value_norm: ChannelLayerNorm,
    pub key: PointwiseConv,
    pub query: PointwiseConv,
    pub value: PointwiseConv,
    pub proj: PointwiseConv,
    pub n_head: usize,
}

impl MaskedMhca {
    pub fn new(n_embd: usize, n_head: usize, stride: usize, device: &Device) -> Self {
        assert!(n_embd % n_head == 0, "n_embd must be divisible by n_head");
        assert!(stride == 1 || stride % 2 == 0, "stride must be 1 or even");
        let kernel = if stride > 1 { stride + 1 } else { 3 };
        let dw = || MaskedConv1d::new(n_embd, n_embd, kernel, stride, n_embd, false, device);
        Self {
            query_conv: dw(),
            query_norm: ChannelLayerNorm::new(n_embd, device),
            key_conv: dw(),
            key_norm: ChannelLayerNorm::new(n_embd, device),
            value_conv: dw(),
            value_norm: ChannelLayerNorm::new(n_embd, device),
            key: PointwiseConv::new(n_embd, n_embd, device),
            query: PointwiseConv::new(n_embd, n_embd, device),
            value: PointwiseConv::new(n_embd, n_embd, device),
            proj: PointwiseConv::new(n_embd, n_embd, device),
            n_head,
        }
    }

    /// `x1` (keys/values) and `x2` (queries) `[B, C, T]`, `mask [B, T]` →
    /// `([B, C, T'], mask [B, T'])` with T' = T / stride.
    pub fn forward(&self, x1: Tensor<3>, x2: Tensor<3>, mask: Tensor<2>) -> (Tensor<3>, Tensor<2>) {
        let [b, c, _] = x1.dims();
        let h = self.n_head;
        let dh = c / h;
        let (q, qx_mask) = self.query_conv.forward(x2, mask.clone());
        let q = self.query.forward(self.query_norm.forward(q)); // [B, C, T']
        let (k, kv_mask) = self.key_conv.forward(x1.clone(), mask.clone());
        let k = self.key.forward(self.key_norm.forward(k)); // [B, C, T'']
        let (v, _) = self.value_conv.forward(x1, mask);
        let v = self.value.forward(self.value_norm.forward(v));
        let (tq, tk) = (q.dims()[2], k.dims()[2]);
        // (B, H·dh, T) → (B, H, T, dh)
        let heads = |x: Tensor<3>, t: usize| x.reshape([b, h, dh, t]).swap_dims(2, 3);
        let q = heads(q, tq).mul_scalar(1.0 / (dh as f64).sqrt());
        let (k, v) = (heads(k, tk), heads(v, tk));
        let key_valid = kv_mask.reshape([b, 1, 1, tk]);
        // Invalid keys get -1e30 (the official -inf): their weight is exactly 0. A query whose
        // keys are all invalid (only the co-occurrence branch of the dependency block, where
        // the official code multiplies the softmax by the mask instead) ends with an
        // all-zero output either way, because the values are masked too.
        let bias = key_valid.clone().neg().add_scalar(1.0).mul_scalar(-1e30);
        let att = softmax(q.matmul(k.swap_dims(2, 3)) + bias, 3); // [B, H, T', T'']
        let v = v * key_valid.reshape([b, 1, tk, 1]);
        let out = att.matmul(v); // [B, H, T', dh]
        let out = out.swap_dims(2, 3).reshape([b, c, tq]);
        let out = self.proj.forward(out) * qx_mask.clone().unsqueeze_dim::<3>(1);
        (out, qx_mask)
    }
}

impl HasState for MaskedMhca {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.query_conv.visit_state(&at.child("query_conv"), v);
        self.query_norm.visit_state(&at.child("query_norm"), v);
        self.key_conv.visit_state(&at.child("key_conv"), v);
        self.key_norm.visit_state(&at.child("key_norm"), v);
        self.value_conv.visit_state(&at.child("value_conv"), v);
        self.value_norm.visit_state(&at.child("value_norm"), v);
        self.key.visit_state(&at.child("key"), v);
        self.query.visit_state(&at.child("query"), v);
        self.value.visit_state(&at.child("value"), v);
        self.proj.visit_state(&at.child("proj"), v);
    }
}

/// Official `TransformerBlock` (pre-LN): attention of `ln12(x2)` queries over `ln11(x1)`
/// keys/values, a skip from `x1` (max-pooled, kernel s+1, stride s, when downsampling), then a
/// GELU MLP (`mlp.0`, `mlp.3`; hidden 4·C unless given); both residual branches pass an
/// `AffineDropPath` when drop path is configured (> 0), else nothing.
#[derive(Module, Debug)]
pub struct TransformerBlock {
    pub ln11: ChannelLayerNorm,
    pub ln12: ChannelLayerNorm,
    pub ln2: ChannelLayerNorm,
    pub attn: MaskedMhca,
    pub mlp_fc1: PointwiseConv,
    pub mlp_fc2: PointwiseConv,
    pub drop_path_attn: Option<AffineDropPath>,
    pub drop_path_mlp: Option<AffineDropPath>,
    pub stride: usize,
}

impl TransformerBlock {
    pub fn new(
        n_embd: usize,
        n_head: usize,
        stride: usize,
        n_hidden: Option<usize>,
        path_pdrop: f64,
        device: &Device,
    ) -> Self {
        let hidden = n_hidden.unwrap_or(4 * n_embd);
        let drop = || (path_pdrop > 0.0).then(|| AffineDropPath::new(n_embd, path_pdrop, device));
        Self {
            ln11: ChannelLayerNorm::new(n_embd, device),
            ln12: ChannelLayerNorm::new(n_embd, device),
            ln2: ChannelLayerNorm::new(n_embd, device),
            attn: MaskedMhca::new(n_embd, n_head, stride, device),
            mlp_fc1: PointwiseConv::new(n_embd, hidden, device),
            mlp_fc2: PointwiseConv::new(hidden, n_embd, device),
            drop_path_attn: drop(),
            drop_path_mlp: drop(),
            stride,
        }
    }

    /// `x1` (keys/values and skip), `x2` (queries) `[B, C, T]`, `mask [B, T]` →
    /// `([B, C, T/stride], mask [B, T/stride])`.
    pub fn forward(&self, x1: Tensor<3>, x2: Tensor<3>, mask: Tensor<2>) -> (Tensor<3>, Tensor<2>) {
        let (out, out_mask) =
            self.attn
                .forward(self.ln11.forward(x1.clone()), self.ln12.forward(x2), mask);
        let m = out_mask.clone().unsqueeze_dim::<3>(1); // [B, 1, T']
        let skip = if self.stride > 1 {
            let s = self.stride;
            // nn.MaxPool1d(s + 1, stride s, padding (s + 1) / 2): padding never wins the max.
            let options = MaxPoolOptions::new([s + 1])
                .with_stride([s])
                .with_padding([(s + 1) / 2]);
            max_pool1d(x1, options)
        } else {
            x1
        };
        let out = skip * m.clone() + apply_drop_path(&self.drop_path_attn, out);
        let mlp = self
            .mlp_fc2
            .forward(gelu(self.mlp_fc1.forward(self.ln2.forward(out.clone()))));
        let out = out + apply_drop_path(&self.drop_path_mlp, mlp * m);
        (out, out_mask)
    }
}

impl TransformerBlock {
    /// Sets the drop-path probability of both residual branches (0 = evaluation behaviour
    /// even on an autodiff device).
    pub fn set_drop_path_prob(&mut self, p: f64) {
        for dp in [&mut self.drop_path_attn, &mut self.drop_path_mlp]
            .into_iter()
            .flatten()
        {
            dp.drop_prob = p;
        }
    }
}

fn apply_drop_path(dp: &Option<AffineDropPath>, x: Tensor<3>) -> Tensor<3> {
    match dp {
        Some(dp) => dp.forward(x),
        None => x,
    }
}

impl HasState for TransformerBlock {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.ln11.visit_state(&at.child("ln11"), v);
        self.ln12.visit_state(&at.child("ln12"), v);
        self.ln2.visit_state(&at.child("ln2"), v);
        self.attn.visit_state(&at.child("attn"), v);
        self.mlp_fc1.visit_state(&at.child("mlp.0"), v);
        self.mlp_fc2.visit_state(&at.child("mlp.3"), v);
        if let Some(dp) = self.drop_path_attn.as_mut() {
            dp.visit_state(&at.child("drop_path_attn"), v);
        }
        if let Some(dp) = self.drop_path_mlp.as_mut() {
            dp.visit_state(&at.child("drop_path_mlp"), v);
        }
    }
}
