//! AVCA, audio-visual co-guidance attention (`Co_Guided_Attention`, REFERENCE §2.3 step 3):
//! audio guides the visual map through channel and spatial attention, calibrated by a visual
//! self-attention vector (β); the visual map guides audio through cross-attention over time (ψ).
//!
//! Where the code differs from the paper it is followed here, and marked "code:".

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};

use super::bmm_flex::bmm;
use super::cell_attention_flex;
use super::dropout::Dropout;
use super::gate_flex::gate;
use super::gate_reduced_flex::{gate_logit, gate_mean};
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::{Device, Tensor};

use crate::config::Guide;

use super::layer_norm_flex::norm;
use super::nn::{dropout, flat, fused_linear, layer_norm, linear};
use super::state::{HasState, Prefix, StateVisitor};
use super::trace::Trace;

const NAME: &str = "spatial_channel_att";

#[derive(Module, Debug)]
pub struct CoGuidedAttention {
    // Audio-guided channel attention (CMRAN style).
    pub affine_video_1: Linear,
    pub affine_audio_1: Linear,
    pub affine_bottleneck: Linear,
    pub affine_v_c_att: Linear,
    // Audio-guided spatial attention.
    pub affine_video_2: Linear,
    pub affine_audio_2: Linear,
    pub affine_v_s_att: Linear,
    // Spatial self-attention #1 (feeds the self-calibration vector).
    pub video_query: Linear,
    pub video_key: Linear,
    pub video_value: Linear,
    pub v_norm: LayerNorm,
    // Spatial self-attention #2 (feeds the visual query that guides audio).
    pub video_query2: Linear,
    pub video_key2: Linear,
    pub video_value2: Linear,
    /// code: built but never used; branch #2 is normalised with `v_norm` (REFERENCE §5.1.1).
    pub v_norm2: LayerNorm,
    // Self-calibration vector (paper Eq. 1).
    pub affine_video_ave: Linear,
    pub affine_video_3: Linear,
    /// code: built but never used.
    pub ave_bottleneck: Linear,
    pub ave_v_att: Linear,
    // Visual-guided audio attention (paper Eq. 3–6).
    pub v_query: Linear,
    pub vaudio_key: Linear,
    pub vaudio_value: Linear,
    pub audio_query: Linear,
    pub audio_key: Linear,
    pub audio_value: Linear,
    pub a_norm: LayerNorm,
    pub dropout: Dropout,
    /// ψ: weight of the visual-guided calibration of audio (0 = "Audio-Guide").
    pub psi: f64,
    /// β: weight of the self-calibration of the audio-guided visual vector.
    pub beta: f64,
    /// Which guidance runs (Co-/Audio-Guide: everything; Visual-Guide: vision guides audio
    /// only; None: no attention at all).
    #[module(skip)]
    pub guide: Guide,
}

/// Widths fixed by the official class: visual 512, audio 128, hidden 256, spatial q/k 512/4.
const V: usize = 512;
const A: usize = 128;
const HID: usize = 256;
const QK: usize = V / 4;

impl CoGuidedAttention {
    pub fn new(guide: Guide, psi: f64, beta: f64, p: f64, device: &Device) -> Self {
        Self {
            affine_video_1: linear(V, V, device),
            affine_audio_1: linear(A, V, device),
            affine_bottleneck: linear(V, HID, device),
            affine_v_c_att: linear(HID, V, device),
            affine_video_2: linear(V, HID, device),
            affine_audio_2: linear(A, HID, device),
            affine_v_s_att: linear(HID, 1, device),
            video_query: linear(V, QK, device),
            video_key: linear(V, QK, device),
            video_value: linear(V, V, device),
            v_norm: layer_norm(V, device),
            video_query2: linear(V, QK, device),
            video_key2: linear(V, QK, device),
            video_value2: linear(V, V, device),
            v_norm2: layer_norm(V, device),
            affine_video_ave: linear(V, HID, device),
            affine_video_3: linear(V, HID, device),
            ave_bottleneck: linear(V, HID, device),
            ave_v_att: linear(HID, 1, device),
            v_query: linear(V, A, device),
            vaudio_key: linear(A, A, device),
            vaudio_value: linear(A, A, device),
            audio_query: linear(A, A, device),
            audio_key: linear(A, A, device),
            audio_value: linear(A, A, device),
            a_norm: layer_norm(A, device),
            dropout: dropout(p),
            psi,
            beta,
            guide,
        }
    }

    /// Spatial self-attention over the 49 cells, no 1/√d scaling:
    /// `LN_v_norm(X + Drop(softmax(q kᵀ) v))`, all `[BT, 49, ·]`. Evaluating on the CPU
    /// (dropout is the identity there), one pass per item: `cell_attention_flex.rs`.
    fn spatial_self_attention(
        &self,
        x: &Tensor<3>,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
    ) -> Tensor<3> {
        if cell_attention_flex::applies(x, &self.v_norm) {
            return cell_attention_flex::attend(q, k, v, x, &self.v_norm);
        }
        let scores = softmax(bmm(q, k.swap_dims(1, 2)), 2); // [BT, 49, 49]
        norm(
            &self.v_norm,
            x.clone() + self.dropout.forward(bmm(scores, v)),
        )
    }

    /// [`Self::spatial_self_attention`]'s mean over the cells, `[BT, C]` (in one pass, without
    /// the `[BT, 49, C]` output, when evaluating on the CPU).
    fn spatial_self_attention_mean(
        &self,
        x: &Tensor<3>,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
    ) -> Tensor<2> {
        if cell_attention_flex::applies(x, &self.v_norm) {
            return cell_attention_flex::attend_mean(q, k, v, x, &self.v_norm);
        }
        let [bt, _, c] = x.dims();
        self.spatial_self_attention(x, q, k, v)
            .mean_dim(1)
            .reshape([bt, c])
    }

    /// `visual [B, T, 7, 7, 512]` (after `v_fc`), `audio [B, T, 128]` →
    /// `(v_out [B, T, 512], a_out [B, T, 128], the spatial attention maps)`; the maps only for
    /// the guides that compute them (Co-Guide, Audio-Guide).
    pub fn forward(
        &self,
        visual: Tensor<5>,
        audio: Tensor<3>,
        trace: &mut Trace,
    ) -> (Tensor<3>, Tensor<3>, Option<SpatialMaps>) {
        match self.guide {
            Guide::CoGuide | Guide::AudioGuide => self.forward_co_guide(visual, audio, trace),
            Guide::VisualGuide => {
                let (v, a) = self.forward_visual_guide(visual, audio);
                (v, a, None)
            }
            Guide::None => {
                let [b, t, h, w, c] = visual.dims();
                let mean = visual
                    .reshape([b, t, h * w, c])
                    .mean_dim(2)
                    .reshape([b, t, c]);
                (mean, audio, None)
            }
        }
    }

    /// `Only_Visual_Guided_Attention` (REFERENCE §5.2): visual = mean of the cells of V0;
    /// audio = A + ψ·σ(ã)⊙A with the query from branch #1 (`video_*`, `v_norm`).
    fn forward_visual_guide(&self, visual: Tensor<5>, audio: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let [b, t, h, w, c] = visual.dims();
        let x = visual.reshape([b * t, h * w, c]);
        let v_out = x.clone().mean_dim(1).reshape([b, t, c]);
        let mut p = fused_linear(
            x.clone(),
            &[&self.video_query, &self.video_key, &self.video_value],
        )
        .into_iter();
        let mut next = || p.next().expect("three projections");
        let (q, k, v) = (next(), next(), next());
        let g1_mean = self.spatial_self_attention_mean(&x, q, k, v);
        let a_out = self.visual_guided_audio(g1_mean, audio, b, t, c, &mut Trace::off());
        (v_out, a_out)
    }

    /// Steps 3.7–3.9: audio temporal self-attention, then the visual query `g_mean =
    /// mean_cells(g)` `[BT, C]` attends over it, and `a_out = A + ψ·σ(ã)⊙A`.
    fn visual_guided_audio(
        &self,
        g_mean: Tensor<2>,
        audio: Tensor<3>,
        b: usize,
        t: usize,
        c: usize,
        trace: &mut Trace,
    ) -> Tensor<3> {
        // 3.7 Audio temporal self-attention; code: adds dropout, residual and LayerNorm.
        let aq = self.audio_query.forward(audio.clone());
        let ak = self.audio_key.forward(audio.clone());
        let av = self.audio_value.forward(audio.clone());
        trace.record((NAME, ".audio_query"), &aq);
        trace.record((NAME, ".audio_key"), &ak);
        trace.record((NAME, ".audio_value"), &av);
        let sa = softmax(aq.matmul(ak.swap_dims(1, 2)), 2); // [B, T, T]
        let ag = norm(
            &self.a_norm,
            audio.clone() + self.dropout.forward(sa.matmul(av)),
        );
        trace.record((NAME, ".a_norm"), &ag);

        // 3.8 Visual-guided audio attention.
        let qv2 = self.v_query.forward(g_mean.reshape([b, t, c]));
        let kv = self.vaudio_key.forward(ag.clone());
        let vv = self.vaudio_value.forward(ag);
        trace.record((NAME, ".v_query"), &qv2);
        trace.record((NAME, ".vaudio_key"), &kv);
        trace.record((NAME, ".vaudio_value"), &vv);
        let a_tilde = softmax(qv2.matmul(kv.swap_dims(1, 2)), 2).matmul(vv);

        // 3.9 a_out = A + ψ·σ(ã)⊙A (paper Eq. 6), on the raw A.
        audio.clone() + sigmoid(a_tilde).mul_scalar(self.psi) * audio
    }

    /// Step 3.3 on `g1 [BT, 49, 512]`: the self-calibration vector `c_self [BT, 512]`, its
    /// attention over the cells `[BT, 1, 49]`, and `affine_video_1(G1)` for step 3.4
    /// (both projections of G1 in one multiply).
    fn self_calibration(
        &self,
        g1: &Tensor<3>,
        trace: &mut Trace,
    ) -> (Tensor<2>, Tensor<3>, Tensor<3>) {
        let [bt, _, c] = g1.dims();
        let m = self
            .affine_video_ave
            .forward(g1.clone().mean_dim(1).reshape([bt, c]));
        trace.record((NAME, ".affine_video_ave"), &m);
        let mut g =
            fused_linear(g1.clone(), &[&self.affine_video_3, &self.affine_video_1]).into_iter();
        let (g1_v3, g1_v1) = (
            g.next().expect("two projections"),
            g.next().expect("two projections"),
        );
        // ave_v_att(relu(G1·W3) ⊙ relu(m)), the product [BT, 49, 256]: [BT, 49, 1]
        let logits = gate_logit(g1_v3, m, true, &self.ave_v_att);
        trace.record((NAME, ".ave_v_att"), &logits);
        let w_self = softmax(logits.tanh(), 1).swap_dims(1, 2); // [BT, 1, 49]
        trace.record((NAME, ":self_attention"), &w_self);
        let c_self = bmm(w_self.clone(), g1.clone()).reshape([bt, c]);
        (c_self, w_self, g1_v1)
    }

    /// Co-Guide (and Audio-Guide, ψ = 0): the published AVCA, REFERENCE §2.3 step 3.
    fn forward_co_guide(
        &self,
        visual: Tensor<5>,
        audio: Tensor<3>,
        trace: &mut Trace,
    ) -> (Tensor<3>, Tensor<3>, Option<SpatialMaps>) {
        let [b, t, h, w, c] = visual.dims();
        let bt = b * t;
        let cells = h * w;
        let x = visual.reshape([bt, cells, c]); // raw visual X
        let a_flat = audio.clone().reshape([bt, A]); // A_f

        // 3.1 / 3.2: two spatial self-attention branches; code: both use `v_norm`.
        // The six projections of X (q, k, v of both branches) read the same tensor: one multiply.
        let xs = [
            &self.video_query,
            &self.video_key,
            &self.video_value,
            &self.video_query2,
            &self.video_key2,
            &self.video_value2,
        ];
        let mut p = fused_linear(x.clone(), &xs).into_iter();
        let mut next = || p.next().expect("six projections");
        let (q1, k1, v1, q2, k2, v2) = (next(), next(), next(), next(), next(), next());
        if trace.is_on() {
            trace.record(
                (NAME, ".video_query"),
                &q1.clone().reshape([b, t, cells, QK]),
            );
            trace.record((NAME, ".video_key"), &k1.clone().reshape([b, t, cells, QK]));
        }
        let g1 = self.spatial_self_attention(&x, q1, k1, v1);
        trace.record((NAME, ".v_norm"), &g1);
        // Branch #2 is used only through its mean over the cells (step 3.8).
        let g2_mean = if trace.is_on() {
            let g2 = self.spatial_self_attention(&x, q2, k2, v2);
            trace.record((NAME, ".v_norm@call1"), &g2);
            g2.mean_dim(1).reshape([bt, c])
        } else {
            self.spatial_self_attention_mean(&x, q2, k2, v2)
        };

        // 3.3 Self-calibration vector c_self (paper Eq. 1), and G1's projection for 3.4.
        let (c_self, w_self, g1_v1) = self.self_calibration(&g1, trace);

        // 3.4 Audio-guided channel attention.
        let qa = self.affine_audio_1.forward(a_flat.clone());
        trace.record((NAME, ".affine_audio_1"), &qa);
        // relu(qa) ⊙ relu(G1·W1), averaged over the cells.
        let z = gate_mean(g1_v1, qa, true);
        let z = self.affine_bottleneck.forward(z);
        trace.record((NAME, ".affine_bottleneck"), &z);
        let ch = self.affine_v_c_att.forward(relu(z));
        trace.record((NAME, ".affine_v_c_att"), &ch);
        // code: the channel weights rescale the raw X, not G1.
        let xc = gate(x, sigmoid(ch) + 1.0, false); // X ⊙ (σ(ch) + 1): [BT, 49, 512]

        // 3.5 Audio-guided spatial attention.
        let qa2 = self.affine_audio_2.forward(a_flat);
        trace.record((NAME, ".affine_audio_2"), &qa2);
        let v2 = flat(&self.affine_video_2, xc.clone()); // [BT, 49, 256]
        let logits = gate_logit(v2, qa2, true, &self.affine_v_s_att); // [BT, 49, 1]
        trace.record((NAME, ".affine_v_s_att"), &logits);
        let w_sp = softmax(logits.tanh(), 1).swap_dims(1, 2); // [BT, 1, 49]
        trace.record((NAME, ":spatial_attention"), &w_sp);
        let vcs = bmm(w_sp.clone(), xc).reshape([bt, c]);

        // 3.6 v_out = vcs + β·σ(c_self)⊙vcs (paper Eq. 2).
        let v_out = (vcs.clone() + sigmoid(c_self).mul_scalar(self.beta) * vcs).reshape([b, t, c]);

        // 3.7–3.9; code: the visual query comes from branch #2.
        let a_out = self.visual_guided_audio(g2_mean, audio, b, t, c, trace);
        trace.record((NAME, ":visual_out"), &v_out);
        trace.record((NAME, ":audio_out"), &a_out);
        let maps = SpatialMaps {
            audio_guided: w_sp.reshape([b, t, cells]),
            self_calibration: w_self.reshape([b, t, cells]),
        };
        (v_out, a_out, Some(maps))
    }
}

/// AVCA's two spatial attention distributions over the 7×7 grid, `[B, T, 49]` each (rows sum
/// to 1): what the paper's Figure 5 draws.
pub struct SpatialMaps {
    /// Audio-guided spatial attention (step 3.5).
    pub audio_guided: Tensor<3>,
    /// Self-calibration attention over the cells of G1 (step 3.3).
    pub self_calibration: Tensor<3>,
}

impl SpatialMaps {
    /// Both maps with the names figures use, read to the host: `[B·T·49]` each.
    pub fn named(self) -> [(&'static str, Vec<f32>); 2] {
        [
            ("audio-guided", crate::to_vec(self.audio_guided)),
            ("self-calibration", crate::to_vec(self.self_calibration)),
        ]
    }
}

impl HasState for CoGuidedAttention {
    /// Keys per guide as REFERENCE §3.3 lists them: Co-/Audio-Guide 242 model keys in all,
    /// Visual-Guide without the second branch (`video_*2`, `v_norm2`; its audio-guided layers
    /// are built but unused), None without any `spatial_channel_att.*` key.
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        let (co, second_branch) = match self.guide {
            Guide::None => return,
            Guide::VisualGuide => (false, false),
            Guide::CoGuide | Guide::AudioGuide => (true, true),
        };
        // The audio-guided visual path is read only by the co-guidance forward.
        let vis = |name: &str| if co { at.child(name) } else { at.unused(name) };
        let used: [(&str, &mut Linear); 7] = [
            ("affine_video_1", &mut self.affine_video_1),
            ("affine_audio_1", &mut self.affine_audio_1),
            ("affine_bottleneck", &mut self.affine_bottleneck),
            ("affine_v_c_att", &mut self.affine_v_c_att),
            ("affine_video_2", &mut self.affine_video_2),
            ("affine_audio_2", &mut self.affine_audio_2),
            ("affine_v_s_att", &mut self.affine_v_s_att),
        ];
        for (name, l) in used {
            l.visit_state(&vis(name), v);
        }
        self.video_query.visit_state(&at.child("video_query"), v);
        self.video_key.visit_state(&at.child("video_key"), v);
        self.video_value.visit_state(&at.child("video_value"), v);
        self.v_norm.visit_state(&at.child("v_norm"), v);
        if second_branch {
            self.video_query2.visit_state(&at.child("video_query2"), v);
            self.video_key2.visit_state(&at.child("video_key2"), v);
            self.video_value2.visit_state(&at.child("video_value2"), v);
            self.v_norm2.visit_state(&at.unused("v_norm2"), v);
        }
        self.affine_video_ave
            .visit_state(&vis("affine_video_ave"), v);
        self.affine_video_3.visit_state(&vis("affine_video_3"), v);
        self.ave_bottleneck
            .visit_state(&at.unused("ave_bottleneck"), v);
        self.ave_v_att.visit_state(&vis("ave_v_att"), v);
        self.v_query.visit_state(&at.child("v_query"), v);
        self.vaudio_key.visit_state(&at.child("vaudio_key"), v);
        self.vaudio_value.visit_state(&at.child("vaudio_value"), v);
        self.audio_query.visit_state(&at.child("audio_query"), v);
        self.audio_key.visit_state(&at.child("audio_key"), v);
        self.audio_value.visit_state(&at.child("audio_value"), v);
        self.a_norm.visit_state(&at.child("a_norm"), v);
    }
}
