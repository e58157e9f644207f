//! Model configuration. Defaults are the published CACE-Net run (REFERENCE §2.1): Co-Guide,
//! BiLSTM, BECE on, ψ 0.3, λ 0.6, β 0.4, α 0.1, γ 0.3, d 256, 4 heads, noise σ 0.1.
//! Saved as JSON next to every native checkpoint.

use serde::{Deserialize, Serialize};

use crate::model::temporal::TemporalKind;

/// Which co-guidance attention runs on the visual map and audio (paper Table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Guide {
    /// AVCA: audio guides vision and vision guides audio (the published model).
    #[default]
    CoGuide,
    /// Audio guides vision only: the same module with ψ forced to 0 (paper "AVCA-Visual-only").
    AudioGuide,
    /// Vision guides audio only (`Only_Visual_Guided_Attention`, paper "AVCA-Audio-only"): the
    /// visual output is the plain mean of the 49 cells, audio is calibrated with ψ.
    VisualGuide,
    /// No AVCA (paper "w/o AVCA"): visual = mean of the 49 cells, audio unchanged.
    None,
}

/// Largest width `validate` accepts for any size field. The widest published features are
/// 2048-d (ResNet50, Cnn14); at 16384 one `d × d` f32 matrix is already 1 GiB, and without a
/// bound a typo (`"d_model": 1e9` as an integer) asks for terabytes before any check runs.
pub const MAX_WIDTH: usize = 16_384;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Channels of the visual feature map `[T, 7, 7, C]` (512 VGG19 pool5, 2048 ResNet50).
    pub visual_dim: usize,
    /// Width of the audio feature `[T, C]` (128 VGGish, 2048 Cnn14).
    pub audio_dim: usize,
    /// Apply `a_fc` (audio_dim → 128) to audio. The official code has it commented out (audio
    /// gets no projection); it is needed when `audio_dim` ≠ 128.
    pub audio_fc: bool,
    /// Width of the relation modules and the head (`d_model`).
    pub d_model: usize,
    /// Attention heads of every relation block.
    pub heads: usize,
    /// Number of event categories (background is one more label, not a class here).
    pub num_classes: usize,
    pub guide: Guide,
    pub temporal: TemporalKind,
    /// ψ: visual-guided calibration of audio (`psai`).
    pub psi: f64,
    /// β: self-calibration weight of the audio-guided visual vector.
    pub beta: f64,
    /// λ: BECE mix of the projected feature into the event/background head (`Lambda`).
    pub lambda: f64,
    /// α: cross-modal gate modulation of the decoder outputs.
    pub alpha: f64,
    /// γ: weight of the CAS top-k score added to the category logits.
    pub gamma: f64,
    /// k of the CAS "mean of the top k segments" score.
    pub cas_top_k: usize,
    /// BECE on: the contrastive views are trained and, after the warm-up, mixed in with λ.
    pub contrastive: bool,
    /// σ of the Gaussian noise that makes BECE's key view.
    pub noise_std: f64,
    /// How BECE's key view is made from `F_av` (Table S4a).
    pub augmentation: Augmentation,
    /// Probability that an entry of `F_av` is zeroed, for [`Augmentation::ChannelMask`].
    pub channel_mask_p: f64,
    /// Weight `w` of the segment itself in [`Augmentation::Mixup`]: `w·F_t + (1 − w)·F_π(t)`.
    pub mixup_weight: f64,
    /// Table 2's starred row: the enhanced feature `F_o = F_av + λ·P` also feeds the category
    /// head (the code has no switch for it; off = the published model).
    pub enhanced_for_category: bool,
    pub dropout: DropoutConfig,
}

/// The augmentation that makes BECE's second (key) view (paper Table S4a; the official code
/// keeps only Gaussian noise, the other two are commented out there, REFERENCE §5.1.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Augmentation {
    /// `F_av + σ·N(0, 1)` (`noise_std` = σ; the published model).
    #[default]
    GaussianNoise,
    /// `F_av ⊙ m`, `m` Bernoulli with P(0) = `channel_mask_p`, drawn per entry.
    ChannelMask,
    /// Mixup over time: every segment mixed with another segment of the same video
    /// (a random permutation of the T segments per batch), weight `mixup_weight`.
    Mixup,
}

/// Dropout probabilities of the official code (all inactive in evaluation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DropoutConfig {
    /// After `ReLU(v_fc(v))`.
    pub visual_fc: f64,
    /// Inside the co-guidance attention's three self-attention residuals.
    pub coguide: f64,
    /// Every dropout of the transformer encoder/decoder layers (attention, FFN, residuals) and
    /// the residual of the audio-video interaction blocks.
    pub relation: f64,
    /// Attention dropout of the audio-video interaction blocks.
    pub interaction_attention: f64,
}

impl Default for DropoutConfig {
    fn default() -> Self {
        Self {
            visual_fc: 0.2,
            coguide: 0.2,
            relation: 0.1,
            interaction_attention: 0.2,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            visual_dim: 512,
            audio_dim: 128,
            audio_fc: false,
            d_model: 256,
            heads: 4,
            num_classes: 28,
            guide: Guide::CoGuide,
            temporal: TemporalKind::BiLstm,
            psi: 0.3,
            beta: 0.4,
            lambda: 0.6,
            alpha: 0.1,
            gamma: 0.3,
            cas_top_k: 4,
            contrastive: true,
            noise_std: 0.1,
            augmentation: Augmentation::GaussianNoise,
            channel_mask_p: 0.2,
            mixup_weight: 0.7,
            enhanced_for_category: false,
            dropout: DropoutConfig::default(),
        }
    }
}

impl ModelConfig {
    /// The same model with every dropout probability set to 0.
    pub fn without_dropout(mut self) -> Self {
        self.dropout = DropoutConfig {
            visual_fc: 0.0,
            coguide: 0.0,
            relation: 0.0,
            interaction_attention: 0.0,
        };
        self
    }

    /// ψ as the forward pass uses it (`Audio-Guide` forces 0).
    pub fn effective_psi(&self) -> f64 {
        match self.guide {
            Guide::CoGuide | Guide::VisualGuide => self.psi,
            Guide::AudioGuide | Guide::None => 0.0,
        }
    }

    /// Checks every field's range; the error names the field (`dropout.relation`, `psi`, ...).
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("visual_dim", self.visual_dim),
            ("audio_dim", self.audio_dim),
            ("d_model", self.d_model),
            ("heads", self.heads),
            ("num_classes", self.num_classes),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1, got 0"));
            }
            if v > MAX_WIDTH {
                return Err(format!(
                    "{name} must be at most {MAX_WIDTH}, got {v} (a weight matrix of that width \
                     would not fit in memory)"
                ));
            }
        }
        if self.num_classes > crate::data::annotations::NUM_CLASSES {
            return Err(format!(
                "num_classes must be at most {} (the AVE label files' categories), got {}",
                crate::data::annotations::NUM_CLASSES,
                self.num_classes
            ));
        }
        for (name, v) in [
            ("psi", self.psi),
            ("beta", self.beta),
            ("lambda", self.lambda),
            ("alpha", self.alpha),
            ("gamma", self.gamma),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be in [0, 1], got {v}"));
            }
        }
        if self.audio_dim != 128 && !self.audio_fc {
            return Err(format!(
                "audio_dim is {} but audio_fc is off: audio must be projected to 128 (set audio_fc = true)",
                self.audio_dim
            ));
        }
        if self.heads == 0 || self.d_model % self.heads != 0 {
            return Err(format!(
                "d_model {} is not divisible by heads {}",
                self.d_model, self.heads
            ));
        }
        if self.cas_top_k == 0 || self.cas_top_k > crate::T {
            return Err(format!(
                "cas_top_k must be in 1..={}, got {}",
                crate::T,
                self.cas_top_k
            ));
        }
        if !(0.0..1.0).contains(&self.channel_mask_p) {
            return Err(format!(
                "channel_mask_p must be in [0, 1), got {}",
                self.channel_mask_p
            ));
        }
        if !(0.0..=1.0).contains(&self.mixup_weight) {
            return Err(format!(
                "mixup_weight must be in [0, 1], got {}",
                self.mixup_weight
            ));
        }
        if !(self.noise_std >= 0.0 && self.noise_std.is_finite()) {
            return Err(format!("noise_std must be >= 0, got {}", self.noise_std));
        }
        for (name, p) in [
            ("visual_fc", self.dropout.visual_fc),
            ("coguide", self.dropout.coguide),
            ("relation", self.dropout.relation),
            ("interaction_attention", self.dropout.interaction_attention),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("dropout.{name} must be in [0, 1), got {p}"));
            }
        }
        Ok(())
    }
}
