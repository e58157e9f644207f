//! Temporal self-relation and cross-modal relation attention (CMRAN / CMBS style), the gates'
//! inputs, and the audio-video interaction blocks (REFERENCE §2.2, steps 6–9 and 13 of §2.3).
//!
//! All tensors are batch-first `[B, T, 256]`; the official code is sequence-first.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};

use super::dropout::Dropout;
use burn::tensor::Device;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use super::layer_norm_flex::norm;
use super::nn::{MultiheadAttention, dropout, flat, fresh_copy, layer_norm, linear};
use super::state::{HasState, Prefix, StateVisitor};
use super::trace::Trace;

/// Post-norm transformer layer: `x = LN1(x + Drop(MHA(x, x, x)))`,
/// `x = LN2(x + Drop(Lin2(Drop(ReLU(Lin1(x))))))`.
///
/// Used as an encoder layer (self-attention) and as a decoder layer, where the official code
/// attends from the query over `[memory ; query]` with `multihead_attn` and never calls the
/// decoder's own `self_attn` (kept as an unused parameter).
#[derive(Module, Debug)]
pub struct TransformerLayer {
    pub attn: MultiheadAttention,
    /// Decoder layers only: `self_attn`, built by the official code but never called.
    pub unused_self_attn: Option<MultiheadAttention>,
    pub linear1: Linear,
    pub linear2: Linear,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
    pub dropout: Dropout,
    pub dropout1: Dropout,
    pub dropout2: Dropout,
}

/// Sizes of a [`TransformerLayer`].
#[derive(Debug, Clone, Copy)]
pub struct TransformerLayerConfig {
    pub d_model: usize,
    pub heads: usize,
    /// Hidden width of the feed-forward block.
    pub ffn: usize,
    /// Dropout of attention weights, residual branches and the feed-forward block.
    pub dropout: f64,
    /// A decoder layer (cross-attention over a memory) carries the unused `self_attn`.
    pub decoder: bool,
}

impl TransformerLayerConfig {
    pub fn init(&self, device: &Device) -> TransformerLayer {
        let (d, heads, ffn, p) = (self.d_model, self.heads, self.ffn, self.dropout);
        TransformerLayer {
            unused_self_attn: self
                .decoder
                .then(|| MultiheadAttention::new(d, heads, p, device)),
            attn: MultiheadAttention::new(d, heads, p, device),
            linear1: linear(d, ffn, device),
            linear2: linear(ffn, d, device),
            norm1: layer_norm(d, device),
            norm2: layer_norm(d, device),
            dropout: dropout(p),
            dropout1: dropout(p),
            dropout2: dropout(p),
        }
    }
}

impl TransformerLayer {
    /// `x [B, T, d]`; `memory` = `None` for self-attention, else the decoder's memory
    /// (already extended with the query).
    pub fn forward(
        &self,
        x: Tensor<3>,
        memory: Option<Tensor<3>>,
        name: &str,
        trace: &mut Trace,
    ) -> Tensor<3> {
        let kind = if memory.is_none() {
            ".self_attn"
        } else {
            ".multihead_attn"
        };
        let attn_name = trace.name(|| format!("{name}{kind}"));
        let a = self.attn.forward(x.clone(), memory, &attn_name, trace);
        let x = norm(&self.norm1, x + self.dropout1.forward(a));
        trace.record((name, ".norm1"), &x);
        let h = flat(&self.linear1, x.clone());
        if self.unused_self_attn.is_none() {
            trace.record((name, ".linear1"), &h);
        }
        let h = flat(&self.linear2, self.dropout.forward(relu(h)));
        let x = norm(&self.norm2, x + self.dropout2.forward(h));
        trace.record(name, &x);
        x
    }
}

impl HasState for TransformerLayer {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        match self.unused_self_attn.as_mut() {
            None => self.attn.visit_state(&at.child("self_attn"), v),
            Some(self_attn) => {
                self_attn.visit_state(&at.unused("self_attn"), v);
                self.attn.visit_state(&at.child("multihead_attn"), v);
            }
        }
        self.linear1.visit_state(&at.child("linear1"), v);
        self.linear2.visit_state(&at.child("linear2"), v);
        self.norm1.visit_state(&at.child("norm1"), v);
        self.norm2.visit_state(&at.child("norm2"), v);
    }
}

/// A stack of layers deep-copied from one template, as `nn.TransformerEncoder/Decoder` build it.
/// The template (`encoder_layer` / `decoder_layer`) stays in the state dict but never runs.
#[derive(Module, Debug)]
pub struct LayerStack {
    pub template: TransformerLayer,
    pub layers: Vec<TransformerLayer>,
}

impl LayerStack {
    fn new(template: TransformerLayer, n: usize) -> Self {
        let layers = (0..n).map(|_| fresh_copy(&template)).collect();
        Self { template, layers }
    }

    fn visit_layers(
        &mut self,
        at: &Prefix,
        template_name: &str,
        stack_name: &str,
        v: &mut impl StateVisitor,
    ) {
        self.template.visit_state(&at.unused(template_name), v);
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.visit_state(&at.child(&format!("{stack_name}.layers.{i}")), v);
        }
    }
}

/// `InternalTemporalRelationModule`: `Lin(in → d)` (no activation), then 2 encoder layers (FFN 1024).
#[derive(Module, Debug)]
pub struct TemporalSelfRelation {
    pub affine_matrix: Linear,
    pub encoder: LayerStack,
}

/// Sizes of the relation modules ([`TemporalSelfRelation`], [`CrossModalRelation`]).
#[derive(Debug, Clone, Copy)]
pub struct RelationConfig {
    /// Width of the input features (after the temporal encoder).
    pub d_in: usize,
    pub d_model: usize,
    pub heads: usize,
    pub dropout: f64,
}

impl RelationConfig {
    fn layer(&self, ffn: usize, decoder: bool) -> TransformerLayerConfig {
        TransformerLayerConfig {
            d_model: self.d_model,
            heads: self.heads,
            ffn,
            dropout: self.dropout,
            decoder,
        }
    }

    /// `InternalTemporalRelationModule`: two encoder layers, FFN 1024.
    pub fn init_self(&self, device: &Device) -> TemporalSelfRelation {
        TemporalSelfRelation::new(self.d_in, self.layer(1024, false), device)
    }

    /// `CrossModalRelationAttModule`: one decoder layer, FFN 512.
    pub fn init_cross(&self, device: &Device) -> CrossModalRelation {
        CrossModalRelation::new(self.d_in, self.layer(512, true), device)
    }
}

impl TemporalSelfRelation {
    fn new(d_in: usize, layer: TransformerLayerConfig, device: &Device) -> Self {
        let (d, template) = (layer.d_model, layer.init(device));
        Self {
            affine_matrix: linear(d_in, d, device),
            encoder: LayerStack::new(template, 2),
        }
    }

    /// `[B, T, in]` → `[B, T, d]`.
    pub fn forward(&self, x: Tensor<3>, name: &str, trace: &mut Trace) -> Tensor<3> {
        let mut x = flat(&self.affine_matrix, x);
        trace.record((name, ".affine_matrix"), &x);
        for (i, layer) in self.encoder.layers.iter().enumerate() {
            let layer_name = trace.name(|| format!("{name}.encoder.layers.{i}"));
            x = layer.forward(x, None, &layer_name, trace);
        }
        trace.record(name, &x);
        x
    }
}

impl HasState for TemporalSelfRelation {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.encoder.visit_layers(at, "encoder_layer", "encoder", v);
        self.affine_matrix
            .visit_state(&at.child("affine_matrix"), v);
    }
}

/// `CrossModalRelationAttModule`: `Lin(in → d)` on the query, then one decoder layer (FFN 512)
/// attending over `[memory ; query]`.
#[derive(Module, Debug)]
pub struct CrossModalRelation {
    pub affine_matrix: Linear,
    pub decoder: LayerStack,
}

impl CrossModalRelation {
    fn new(d_in: usize, layer: TransformerLayerConfig, device: &Device) -> Self {
        let (d, template) = (layer.d_model, layer.init(device));
        Self {
            affine_matrix: linear(d_in, d, device),
            decoder: LayerStack::new(template, 1),
        }
    }

    /// `query [B, T, in]`, `memory [B, T, d]` → `[B, T, d]`.
    pub fn forward(
        &self,
        query: Tensor<3>,
        memory: Tensor<3>,
        name: &str,
        trace: &mut Trace,
    ) -> Tensor<3> {
        let mut x = flat(&self.affine_matrix, query);
        trace.record((name, ".affine_matrix"), &x);
        for (i, layer) in self.decoder.layers.iter().enumerate() {
            let extended = Tensor::cat(vec![memory.clone(), x.clone()], 1); // [B, 2T, d]
            let layer_name = trace.name(|| format!("{name}.decoder.layers.{i}"));
            x = layer.forward(x, Some(extended), &layer_name, trace);
        }
        trace.record(name, &x);
        x
    }
}

impl HasState for CrossModalRelation {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.decoder.visit_layers(at, "decoder_layer", "decoder", v);
        self.affine_matrix
            .visit_state(&at.child("affine_matrix"), v);
    }
}

/// `AudioVideoInter`: `g = x ⊙ y`, `out = LN(g + Drop0.1(MHA(g, [y ; x])))` with attention
/// dropout 0.2.
#[derive(Module, Debug)]
pub struct AudioVideoInteraction {
    pub video_multihead: MultiheadAttention,
    pub norm1: LayerNorm,
    pub dropout: Dropout,
}

/// Sizes of an [`AudioVideoInteraction`] block.
#[derive(Debug, Clone, Copy)]
pub struct InteractionConfig {
    pub d_model: usize,
    pub heads: usize,
    /// Dropout of the attention weights (0.2 in the official code).
    pub attn_dropout: f64,
    /// Dropout of the residual branch (0.1).
    pub dropout: f64,
}

impl InteractionConfig {
    pub fn init(&self, device: &Device) -> AudioVideoInteraction {
        let d = self.d_model;
        AudioVideoInteraction {
            video_multihead: MultiheadAttention::new(d, self.heads, self.attn_dropout, device),
            norm1: layer_norm(d, device),
            dropout: dropout(self.dropout),
        }
    }
}

impl AudioVideoInteraction {
    /// `x, y [B, T, d]` → `[B, T, d]`.
    pub fn forward(&self, x: Tensor<3>, y: Tensor<3>, name: &str, trace: &mut Trace) -> Tensor<3> {
        let g = x.clone() * y.clone();
        let memory = Tensor::cat(vec![y, x], 1);
        let attn_name = trace.name(|| format!("{name}.video_multihead"));
        let a = self
            .video_multihead
            .forward(g.clone(), Some(memory), &attn_name, trace);
        let out = norm(&self.norm1, g + self.dropout.forward(a));
        trace.record(name, &out);
        out
    }
}

impl HasState for AudioVideoInteraction {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.video_multihead
            .visit_state(&at.child("video_multihead"), v);
        self.norm1.visit_state(&at.child("norm1"), v);
    }
}
