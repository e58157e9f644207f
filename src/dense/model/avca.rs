//! AVCA (audio-visual co-guidance attention, paper §3.2) carried to per-snippet features for
//! the dense model (issue 15; the paper's supplement does not say how). Placed on the visual
//! `[B, C_v, T]` and audio `[B, C_a, T]` snippet features before the embeddings of the
//! backbone, the natural place: the AVE model applies it to the encoders' features too.
//!
//! I3D and VGGish snippets are vectors, not 7×7 maps, so of the AVE module
//! ([`crate::model::coguide`]) what needs a spatial grid disappears (spatial attention over
//! one cell is the identity, and so is the self-calibration over cells). What remains, with
//! the AVE module's names:
//! 1. audio-guided channel attention: `z = W_b(relu(W_a a) ⊙ relu(W_v v))`,
//!    `v' = v ⊙ (σ(W_c relu(z)) + 1)` (the `+ 1` of the code);
//! 2. visual-guided audio: masked audio self-attention over time with residual and LayerNorm
//!    (`â = LN(a + softmax(q_a k_aᵀ) v_a)`), the visual query `W_q v'` attends over `â`
//!    (masked), and `a' = a + ψ · σ(ã) ⊙ a` (paper Eq. 6).
//!
//! Padded snippets never act as keys, and both outputs are zero there (as the inputs).

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::{Device, Tensor};

use crate::model::nn::{layer_norm, linear};
use crate::model::state::{HasState, Prefix, StateVisitor};

#[derive(Module, Debug)]
pub struct DenseAvca {
    pub affine_video_1: Linear,
    pub affine_audio_1: Linear,
    pub affine_bottleneck: Linear,
    pub affine_v_c_att: Linear,
    pub audio_query: Linear,
    pub audio_key: Linear,
    pub audio_value: Linear,
    pub a_norm: LayerNorm,
    pub v_query: Linear,
    pub vaudio_key: Linear,
    pub vaudio_value: Linear,
    /// ψ: weight of the visual-guided calibration of audio (the AVE run's 0.3).
    pub psi: f64,
}

impl DenseAvca {
    /// `hidden`: width of the channel-attention bottleneck.
    pub fn new(c_v: usize, c_a: usize, hidden: usize, psi: f64, device: &Device) -> Self {
        Self {
            affine_video_1: linear(c_v, hidden, device),
            affine_audio_1: linear(c_a, hidden, device),
            affine_bottleneck: linear(hidden, hidden / 2, device),
            affine_v_c_att: linear(hidden / 2, c_v, device),
            audio_query: linear(c_a, c_a, device),
            audio_key: linear(c_a, c_a, device),
            audio_value: linear(c_a, c_a, device),
            a_norm: layer_norm(c_a, device),
            v_query: linear(c_v, c_a, device),
            vaudio_key: linear(c_a, c_a, device),
            vaudio_value: linear(c_a, c_a, device),
            psi,
        }
    }

    /// `visual [B, C_v, T]`, `audio [B, C_a, T]`, `mask [B, T]` → the same shapes.
    pub fn forward(
        &self,
        visual: Tensor<3>,
        audio: Tensor<3>,
        mask: Tensor<2>,
    ) -> (Tensor<3>, Tensor<3>) {
        let [b, _, t] = visual.dims();
        let m = mask.clone().reshape([b, t, 1]);
        let v = visual.swap_dims(1, 2); // [B, T, C_v]
        let a = audio.swap_dims(1, 2); // [B, T, C_a]

        // 1. Audio-guided channel attention.
        let z = relu(self.affine_audio_1.forward(a.clone()))
            * relu(self.affine_video_1.forward(v.clone()));
        let ch = self
            .affine_v_c_att
            .forward(relu(self.affine_bottleneck.forward(z)));
        let v_out = v * (sigmoid(ch) + 1.0); // [B, T, C_v]

        // 2. Visual-guided audio attention over the valid snippets.
        let key_bias = mask
            .neg()
            .add_scalar(1.0)
            .mul_scalar(-1e30)
            .reshape([b, 1, t]);
        let attend = |q: Tensor<3>, k: Tensor<3>, val: Tensor<3>| {
            let d = q.dims()[2] as f64;
            let s = q.matmul(k.swap_dims(1, 2)).div_scalar(d.sqrt()) + key_bias.clone();
            softmax(s, 2).matmul(val) // [B, T, C_a]
        };
        let sa = attend(
            self.audio_query.forward(a.clone()),
            self.audio_key.forward(a.clone()),
            self.audio_value.forward(a.clone()),
        );
        let a_hat = self.a_norm.forward(a.clone() + sa);
        let a_tilde = attend(
            self.v_query.forward(v_out.clone()),
            self.vaudio_key.forward(a_hat.clone()),
            self.vaudio_value.forward(a_hat),
        );
        let a_out = a.clone() + sigmoid(a_tilde).mul_scalar(self.psi) * a;
        (
            (v_out * m.clone()).swap_dims(1, 2),
            (a_out * m).swap_dims(1, 2),
        )
    }
}

impl HasState for DenseAvca {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        let layers: [(&str, &mut Linear); 10] = [
            ("affine_video_1", &mut self.affine_video_1),
            ("affine_audio_1", &mut self.affine_audio_1),
            ("affine_bottleneck", &mut self.affine_bottleneck),
            ("affine_v_c_att", &mut self.affine_v_c_att),
            ("audio_query", &mut self.audio_query),
            ("audio_key", &mut self.audio_key),
            ("audio_value", &mut self.audio_value),
            ("v_query", &mut self.v_query),
            ("vaudio_key", &mut self.vaudio_key),
            ("vaudio_value", &mut self.vaudio_value),
        ];
        for (name, l) in layers {
            l.visit_state(&at.child(name), v);
        }
        self.a_norm.visit_state(&at.child("a_norm"), v);
    }
}
