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

use super::nn::{MultiheadAttention, dropout, fresh_copy, layer_norm, linear};
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

impl TransformerLayer {
    pub fn new(d: usize, heads: usize, ffn: usize, p: f64, decoder: bool, device: &Device) -> Self {
        Self {
            unused_self_attn: decoder.then(|| MultiheadAttention::new(d, heads, p, device)),
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

    /// `x [B, T, d]`; `memory` = `None` for self-attention, else the decoder's memory
    /// (already extended with the query).
    pub fn forward(
        &self,
        x: Tensor<3>,
        memory: Option<Tensor<3>>,
        name: &str,
        trace: &mut Trace,
    ) -> Tensor<3> {
        let attn_name = if memory.is_none() {
            format!("{name}.self_attn")
        } else {
            format!("{name}.multihead_attn")
        };
        let a = self.attn.forward(x.clone(), memory, &attn_name, trace);
        let x = self.norm1.forward(x + self.dropout1.forward(a));
        trace.record(&format!("{name}.norm1"), &x);
        let h = self.linear1.forward(x.clone());
        if self.unused_self_attn.is_none() {
            trace.record(&format!("{name}.linear1"), &h);
        }
        let h = self.linear2.forward(self.dropout.forward(relu(h)));
        let x = self.norm2.forward(x + self.dropout2.forward(h));
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

impl TemporalSelfRelation {
    pub fn new(d_in: usize, d: usize, heads: usize, p: f64, device: &Device) -> Self {
        let template = TransformerLayer::new(d, heads, 1024, p, false, device);
        Self {
            affine_matrix: linear(d_in, d, device),
            encoder: LayerStack::new(template, 2),
        }
    }

    /// `[B, T, in]` → `[B, T, d]`.
    pub fn forward(&self, x: Tensor<3>, name: &str, trace: &mut Trace) -> Tensor<3> {
        let mut x = self.affine_matrix.forward(x);
        trace.record(&format!("{name}.affine_matrix"), &x);
        for (i, layer) in self.encoder.layers.iter().enumerate() {
            x = layer.forward(x, None, &format!("{name}.encoder.layers.{i}"), trace);
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
    pub fn new(d_in: usize, d: usize, heads: usize, p: f64, device: &Device) -> Self {
        let template = TransformerLayer::new(d, heads, 512, p, true, device);
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
        let mut x = self.affine_matrix.forward(query);
        trace.record(&format!("{name}.affine_matrix"), &x);
        for (i, layer) in self.decoder.layers.iter().enumerate() {
            let extended = Tensor::cat(vec![memory.clone(), x.clone()], 1); // [B, 2T, d]
            x = layer.forward(
                x,
                Some(extended),
                &format!("{name}.decoder.layers.{i}"),
                trace,
            );
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

impl AudioVideoInteraction {
    pub fn new(d: usize, heads: usize, attn_p: f64, p: f64, device: &Device) -> Self {
        Self {
            video_multihead: MultiheadAttention::new(d, heads, attn_p, device),
            norm1: layer_norm(d, device),
            dropout: dropout(p),
        }
    }

    /// `x, y [B, T, d]` → `[B, T, d]`.
    pub fn forward(&self, x: Tensor<3>, y: Tensor<3>, name: &str, trace: &mut Trace) -> Tensor<3> {
        let g = x.clone() * y.clone();
        let memory = Tensor::cat(vec![y, x], 1);
        let a = self.video_multihead.forward(
            g.clone(),
            Some(memory),
            &format!("{name}.video_multihead"),
            trace,
        );
        let out = self.norm1.forward(g + self.dropout.forward(a));
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
