//! Temporal encoder (`audio_visual_rnn_layer`, REFERENCE §2.3 step 4): one recurrent layer per
//! modality, batch-first, producing `[B, T, 256]` audio and `[B, T, 512]` visual features.
//! The published run uses a bidirectional LSTM; the other encoders of Table S1 are variants of
//! [`TemporalKind`].

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::nn::Lstm;
use super::state::{HasState, Prefix, StateVisitor};

/// Which temporal encoder runs after AVCA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TemporalKind {
    /// Bidirectional LSTM: audio 128 → 2×128, visual 512 → 2×256 (the published model).
    #[default]
    BiLstm,
}

#[derive(Module, Debug)]
pub struct TemporalEncoder {
    pub audio_rnn: Lstm,
    pub visual_rnn: Lstm,
}

impl TemporalEncoder {
    pub fn new(kind: TemporalKind, audio_in: usize, visual_in: usize, device: &Device) -> Self {
        match kind {
            TemporalKind::BiLstm => Self {
                audio_rnn: Lstm::new(audio_in, 128, true, device),
                visual_rnn: Lstm::new(visual_in, 256, true, device),
            },
        }
    }

    /// `audio [B, T, 128]`, `visual [B, T, 512]` → `(audio [B, T, 256], visual [B, T, 512])`.
    pub fn forward(&self, audio: Tensor<3>, visual: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        (
            self.audio_rnn.forward(audio),
            self.visual_rnn.forward(visual),
        )
    }
}

impl HasState for TemporalEncoder {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.audio_rnn.visit_state(&at.child("audio_rnn"), v);
        self.visual_rnn.visit_state(&at.child("visual_rnn"), v);
    }
}
