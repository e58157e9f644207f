//! Temporal encoder (`audio_visual_rnn_layer`, REFERENCE §2.3 step 4 and §5.3): one layer per
//! modality, batch-first. The published run uses a bidirectional LSTM; Table S1 compares it with
//! a unidirectional LSTM, the spiking network of [`super::snn`] and no temporal encoder; the
//! official code also has a plain linear layer. Every kind except `None` produces `[B, T, 256]`
//! audio and `[B, T, 512]` visual features, the widths the relation modules are built for.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::nn::{Lstm, linear};
use super::snn::SpikingEncoder;
use super::state::{HasState, Prefix, StateVisitor};

/// Which temporal encoder runs after AVCA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TemporalKind {
    /// Bidirectional LSTM: audio 128 → 2×128, visual 512 → 2×256 (the published model).
    #[default]
    BiLstm,
    /// Unidirectional LSTM: audio 128 → 256, visual 512 → 512 (Table S1 77.04).
    Lstm,
    /// Linear layers 128 → 256 and 512 → 512, no activation (`FcEncoder`; not in the paper).
    Fc,
    /// Spiking LIF layer, 15 steps, τ 2, threshold 0.5 (`SNNEncoder`, Table S1 77.11).
    Snn,
    /// No temporal encoder (Table S1 "w/o", 76.39): AVCA's outputs go on unchanged, so the
    /// audio relation modules are built for width 128 instead of 256.
    None,
}

impl TemporalKind {
    /// Output widths `(audio, visual)` for AVCA outputs of widths 128 and 512.
    pub fn output_widths(self) -> (usize, usize) {
        match self {
            TemporalKind::None => (128, 512),
            _ => (256, 512),
        }
    }
}

/// One modality's layer.
#[derive(Module, Debug)]
pub enum TemporalLayer {
    Lstm(Lstm),
    Fc(Linear),
    Snn(SpikingEncoder),
}

impl TemporalLayer {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            TemporalLayer::Lstm(l) => l.forward(x),
            TemporalLayer::Fc(l) => l.forward(x),
            TemporalLayer::Snn(s) => s.forward(x),
        }
    }
}

impl HasState for TemporalLayer {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        match self {
            TemporalLayer::Lstm(l) => l.visit_state(at, v),
            TemporalLayer::Fc(l) => l.visit_state(at, v),
            TemporalLayer::Snn(s) => s.visit_state(at, v),
        }
    }
}

#[derive(Module, Debug)]
pub struct TemporalEncoder {
    /// `None` for [`TemporalKind::None`] (identity).
    pub audio: Option<TemporalLayer>,
    pub visual: Option<TemporalLayer>,
}

impl TemporalEncoder {
    pub fn new(kind: TemporalKind, audio_in: usize, visual_in: usize, device: &Device) -> Self {
        let (ao, vo) = kind.output_widths();
        let pair = |a: TemporalLayer, v: TemporalLayer| Self {
            audio: Some(a),
            visual: Some(v),
        };
        match kind {
            TemporalKind::BiLstm => pair(
                TemporalLayer::Lstm(Lstm::new(audio_in, ao / 2, true, device)),
                TemporalLayer::Lstm(Lstm::new(visual_in, vo / 2, true, device)),
            ),
            TemporalKind::Lstm => pair(
                TemporalLayer::Lstm(Lstm::new(audio_in, ao, false, device)),
                TemporalLayer::Lstm(Lstm::new(visual_in, vo, false, device)),
            ),
            TemporalKind::Fc => pair(
                TemporalLayer::Fc(linear(audio_in, ao, device)),
                TemporalLayer::Fc(linear(visual_in, vo, device)),
            ),
            TemporalKind::Snn => pair(
                TemporalLayer::Snn(SpikingEncoder::new(audio_in, ao, device)),
                TemporalLayer::Snn(SpikingEncoder::new(visual_in, vo, device)),
            ),
            TemporalKind::None => Self {
                audio: None,
                visual: None,
            },
        }
    }

    /// `audio [B, T, 128]`, `visual [B, T, 512]` → `(audio [B, T, 256], visual [B, T, 512])`
    /// (unchanged for `None`).
    pub fn forward(&self, audio: Tensor<3>, visual: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let run = |layer: &Option<TemporalLayer>, x: Tensor<3>| match layer {
            Some(l) => l.forward(x),
            None => x,
        };
        (run(&self.audio, audio), run(&self.visual, visual))
    }
}

impl HasState for TemporalEncoder {
    /// Keys as the official code names them: `audio_rnn` / `visual_rnn` for the LSTM and linear
    /// kinds, `audio_snn` / `visual_snn` for the spiking one.
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        let snn = matches!(self.audio, Some(TemporalLayer::Snn(_)));
        let (an, vn) = if snn {
            ("audio_snn", "visual_snn")
        } else {
            ("audio_rnn", "visual_rnn")
        };
        if let Some(a) = self.audio.as_mut() {
            a.visit_state(&at.child(an), v);
        }
        if let Some(l) = self.visual.as_mut() {
            l.visit_state(&at.child(vn), v);
        }
    }
}
