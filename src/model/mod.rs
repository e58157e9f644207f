//! CACE-Net, the supervised model (`supv_main_model`), forward pass in the order of
//! REFERENCE §2.3. Tensors are batch-first throughout; shapes are given at every step.

pub mod batch_norm;
pub mod batch_norm_flex;
pub mod bmm_flex;
pub mod cell_attention_flex;
pub mod coguide;
pub mod dropout;
pub mod gate_flex;
pub mod gate_reduced_flex;
pub mod head;
pub mod layer_norm_flex;
pub mod lstm_flex;
pub mod nn;
pub mod relation;
pub mod snn;
pub mod state;
pub mod temporal;
pub mod trace;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor};

use crate::config::ModelConfig;
use coguide::CoGuidedAttention;
pub use coguide::SpatialMaps;
use dropout::Dropout;
use head::LocalizationHead;
use nn::{dropout, linear};
use relation::{
    AudioVideoInteraction, CrossModalRelation, InteractionConfig, RelationConfig,
    TemporalSelfRelation,
};
use state::{HasState, Prefix, StateVisitor};
use temporal::TemporalEncoder;
pub use trace::Trace;

#[derive(Module, Debug)]
pub struct CaceNet {
    /// AVCA, the co-guidance attention (`spatial_channel_att`).
    pub spatial_channel_att: CoGuidedAttention,
    /// Per-cell visual projection, visual_dim → 512.
    pub v_fc: Linear,
    /// Audio projection, audio_dim → 128; code: not called unless `audio_fc` is set.
    pub a_fc: Linear,
    pub video_encoder: TemporalSelfRelation,
    pub video_decoder: CrossModalRelation,
    pub audio_encoder: TemporalSelfRelation,
    pub audio_decoder: CrossModalRelation,
    pub audio_visual_rnn_layer: TemporalEncoder,
    pub audio_gated: Linear,
    pub video_gated: Linear,
    /// Audio-video interaction updating the visual stream (`AVInter` in the state dict).
    pub av_inter: AudioVideoInteraction,
    /// Audio-video interaction updating the audio stream (`VAInter`).
    pub va_inter: AudioVideoInteraction,
    pub localize_module: LocalizationHead,
    pub audio_cas: Linear,
    pub video_cas: Linear,
    pub v_fc_dropout: Dropout,
    pub use_audio_fc: bool,
    pub alpha: f64,
    pub gamma: f64,
    pub cas_top_k: usize,
}

/// The six outputs of the official forward, batch-first.
pub struct CaceOutput {
    /// `[B, T]` event/background logits (`is_event_scores`).
    pub is_event: Tensor<2>,
    /// `[B, 28]` category logits including `+ γ·av_score` (`event_scores`).
    pub event_scores: Tensor<2>,
    /// `[B, T]` product of the two modality gates, in (0, 1) (`audio_visual_gate`).
    pub gate: Tensor<2>,
    /// `[B, 28]` CAS score: mean of the top-k segments, averaged over the two modalities.
    pub av_score: Tensor<2>,
    /// `[B, T, d]` BECE query view (unit vectors).
    pub q: Tensor<3>,
    /// `[B, T, d]` BECE key view (unit vectors, from the noisy feature).
    pub k: Tensor<3>,
    /// AVCA's spatial attention maps (Co-Guide and Audio-Guide only).
    pub spatial_maps: Option<SpatialMaps>,
}

/// Options of one forward pass.
#[derive(Default)]
pub struct ForwardOptions {
    /// The official `contrastive_switch`: λ-mix on (true in evaluation and after the warm-up).
    pub bece_on: bool,
    /// `[B, T, d]` standard-normal noise for BECE's key view; `None` draws it.
    pub noise: Option<Tensor<3>>,
}

impl ForwardOptions {
    /// BECE's λ-mix on, noise drawn: evaluation, and training after the warm-up.
    pub fn bece_on() -> Self {
        Self {
            bece_on: true,
            noise: None,
        }
    }
}

impl CaceNet {
    /// A freshly initialised model; an error names the config field that is out of range.
    pub fn new(config: &ModelConfig, device: &Device) -> anyhow::Result<Self> {
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid model config: {e}"))?;
        let d = config.d_model;
        let h = config.heads;
        let p = &config.dropout;
        // Widths after the temporal encoder: audio 256 / visual 512 (128 / 512 without one).
        let (ta, tv) = config.temporal.output_widths();
        let relation = |d_in| RelationConfig {
            d_in,
            d_model: d,
            heads: h,
            dropout: p.relation,
        };
        let interaction = InteractionConfig {
            d_model: d,
            heads: h,
            attn_dropout: p.interaction_attention,
            dropout: p.relation,
        };
        Ok(Self {
            spatial_channel_att: CoGuidedAttention::new(
                config.guide,
                config.effective_psi(),
                config.beta,
                p.coguide,
                device,
            ),
            v_fc: linear(config.visual_dim, 512, device),
            a_fc: linear(config.audio_dim, 128, device),
            video_encoder: relation(tv).init_self(device),
            video_decoder: relation(tv).init_cross(device),
            audio_encoder: relation(ta).init_self(device),
            audio_decoder: relation(ta).init_cross(device),
            audio_visual_rnn_layer: TemporalEncoder::new(config.temporal, 128, 512, device),
            audio_gated: linear(d, 1, device),
            video_gated: linear(d, 1, device),
            av_inter: interaction.init(device),
            va_inter: interaction.init(device),
            localize_module: LocalizationHead::new(d, config, device),
            audio_cas: linear(d, config.num_classes, device),
            video_cas: linear(d, config.num_classes, device),
            v_fc_dropout: dropout(p.visual_fc),
            use_audio_fc: config.audio_fc,
            alpha: config.alpha,
            gamma: config.gamma,
            cas_top_k: config.cas_top_k,
        })
    }

    pub fn forward(&self, visual: Tensor<5>, audio: Tensor<3>, opts: ForwardOptions) -> CaceOutput {
        self.forward_traced(visual, audio, opts, &mut Trace::off())
    }

    /// `visual [B, T, 7, 7, Cv]`, `audio [B, T, Ca]`; records activations into `trace`. Runs on
    /// the pool's threads ([`crate::pool`]; in place when already there, as in a training step).
    pub fn forward_traced(
        &self,
        visual: Tensor<5>,
        audio: Tensor<3>,
        opts: ForwardOptions,
        trace: &mut Trace,
    ) -> CaceOutput {
        crate::pool::run(|| self.forward_here(visual, audio, opts, trace))
    }

    /// [`Self::forward_traced`] on the calling thread.
    fn forward_here(
        &self,
        visual: Tensor<5>,
        audio: Tensor<3>,
        opts: ForwardOptions,
        trace: &mut Trace,
    ) -> CaceOutput {
        let [b, t, ..] = visual.dims();

        // 2. V0 = Drop(ReLU(v_fc(v))) at every grid cell: [B, T, 7, 7, 512].
        let y = nn::flat(&self.v_fc, visual);
        let v0 = if trace.is_on() {
            let v0 = relu(y);
            trace.record("relu", &v0);
            self.v_fc_dropout.forward(v0)
        } else {
            self.v_fc_dropout.forward_relu(y)
        };
        // code: audio is used as is unless a_fc is enabled for wider audio features.
        let audio = if self.use_audio_fc {
            self.a_fc.forward(audio)
        } else {
            audio
        };

        // 3. AVCA → [B, T, 512], [B, T, 128].
        let (v1, a1, spatial_maps) = self.spatial_channel_att.forward(v0, audio, trace);

        // 4. Temporal encoder → [B, T, 256], [B, T, 512].
        let (ar, vr) = self.audio_visual_rnn_layer.forward(a1, v1);
        trace.record("audio_visual_rnn_layer.audio_rnn:output", &ar);
        trace.record("audio_visual_rnn_layer.visual_rnn:output", &vr);

        // 6–9. Self- and cross-modal relation attention → [B, T, d] each.
        let vkv = self
            .video_encoder
            .forward(vr.clone(), "video_encoder", trace);
        let aq = self
            .audio_decoder
            .forward(ar.clone(), vkv.clone(), "audio_decoder", trace);
        let akv = self.audio_encoder.forward(ar, "audio_encoder", trace);
        let vq = self
            .video_decoder
            .forward(vr, akv.clone(), "video_decoder", trace);

        // 10. Modality gates [B, T, 1] and their product.
        let g_a = sigmoid(self.audio_gated.forward(akv));
        let g_v = sigmoid(self.video_gated.forward(vkv));
        trace.record("audio_gated", &g_a);
        trace.record("video_gated", &g_v);
        let gate = (g_a.clone() * g_v.clone()).reshape([b, t]);

        // 11. Cross-modal gating: x ← x + α·g⊙x.
        let vq = vq.clone() + (g_a * vq).mul_scalar(self.alpha);
        let aq = aq.clone() + (g_v * aq).mul_scalar(self.alpha);

        // 12. CAS score → [B, 28].
        let av_score = self.cas_score(vq.clone(), aq.clone(), trace);

        // 13. Audio-video interaction; code: the second block reads the already updated vq.
        let vq = self.av_inter.forward(vq, aq.clone(), "AVInter", trace);
        let aq = self.va_inter.forward(aq, vq.clone(), "VAInter", trace);

        // 14–15. F_av = (vq + aq)/2 → head with BECE.
        let fused = (vq + aq).mul_scalar(0.5);
        let head = self
            .localize_module
            .forward(fused, opts.bece_on, opts.noise, trace);
        trace.record("localize_module:is_event_logits", &head.is_event);
        trace.record("localize_module:class_logits", &head.class_logits);
        trace.record("localize_module:q", &head.q);
        trace.record("localize_module:k", &head.k);

        // 16. Category logits include the CAS score (code only, REFERENCE §5.1.3).
        let event_scores = head.class_logits + av_score.clone().mul_scalar(self.gamma);
        CaceOutput {
            is_event: head.is_event,
            event_scores,
            gate,
            av_score,
            q: head.q,
            k: head.k,
            spatial_maps,
        }
    }

    /// Step 12, class activation sequences: per class, the mean of the top-k segments' scores,
    /// averaged over the two modalities. `vq, aq [B, T, d]` → `[B, 28]`.
    fn cas_score(&self, vq: Tensor<3>, aq: Tensor<3>, trace: &mut Trace) -> Tensor<2> {
        trace.record("video_cas.input", &vq);
        let cas_v = self.video_cas.forward(vq);
        trace.record("video_cas", &cas_v);
        trace.record("audio_cas.input", &aq);
        let cas_a = self.audio_cas.forward(aq);
        trace.record("audio_cas", &cas_a);
        let [b, _, c] = cas_v.dims();
        let k = self.cas_top_k;
        let top_mean = |x: Tensor<3>| x.topk(k, 1).mean_dim(1).reshape([b, c]);
        (top_mean(cas_v) + top_mean(cas_a)).mul_scalar(0.5)
    }
}

impl HasState for CaceNet {
    /// State-dict order of the official model (REFERENCE §3.2).
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.spatial_channel_att
            .visit_state(&at.child("spatial_channel_att"), v);
        self.v_fc.visit_state(&at.child("v_fc"), v);
        let a_fc = if self.use_audio_fc {
            at.child("a_fc")
        } else {
            at.unused("a_fc")
        };
        self.a_fc.visit_state(&a_fc, v);
        self.video_encoder
            .visit_state(&at.child("video_encoder"), v);
        self.video_decoder
            .visit_state(&at.child("video_decoder"), v);
        self.audio_encoder
            .visit_state(&at.child("audio_encoder"), v);
        self.audio_decoder
            .visit_state(&at.child("audio_decoder"), v);
        self.audio_visual_rnn_layer
            .visit_state(&at.child("audio_visual_rnn_layer"), v);
        self.audio_gated.visit_state(&at.child("audio_gated.0"), v);
        self.video_gated.visit_state(&at.child("video_gated.0"), v);
        self.av_inter.visit_state(&at.child("AVInter"), v);
        self.va_inter.visit_state(&at.child("VAInter"), v);
        self.localize_module
            .visit_state(&at.child("localize_module"), v);
        self.audio_cas.visit_state(&at.child("audio_cas"), v);
        self.video_cas.visit_state(&at.child("video_cas"), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{Targets, objective};
    use crate::model::state::ParamList;
    use crate::optim::KeyedGrads;
    use burn::tensor::Distribution;

    /// A freshly built model trains every parameter its forward uses (the deep-copied
    /// transformer layers included), and none of the 70 it never reads.
    #[test]
    fn fresh_model_gets_a_gradient_for_every_used_parameter() {
        let _rng = crate::rng_lock();
        let device = Device::flex().autodiff();
        device.seed(1);
        let config = ModelConfig::default();
        let mut model = CaceNet::new(&config, &device).unwrap();
        let b = 2;
        let v = Tensor::random([b, 10, 7, 7, 512], Distribution::Uniform(0.0, 1.0), &device);
        let a = Tensor::random([b, 10, 128], Distribution::Normal(0.0, 1.0), &device);
        let mut labels = vec![0f32; b * 10 * 29];
        for t in 0..10 {
            labels[t * 29 + if t < 4 { 3 } else { 28 }] = 1.0;
            labels[(10 + t) * 29 + 7] = 1.0;
        }
        let targets = Targets::from_onehot(&labels, b);
        let out = model.forward(v, a, ForwardOptions::bece_on());
        let terms = objective(&out, &targets, Some(1.0), 0.01);
        let grads = KeyedGrads::collect(&model, &terms.total.backward());
        let list = ParamList::of(&mut model);
        for (key, used, _) in &list.entries {
            assert_eq!(
                grads.get(key).is_some(),
                *used,
                "{key}: used = {used} but gradient present = {}",
                grads.get(key).is_some()
            );
        }
        assert_eq!(grads.grads.len(), 172);
    }
}
