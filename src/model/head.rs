//! Localisation head with BECE, background-event contrast enhancement
//! (`SupvLocalizeModule`, REFERENCE §2.3 step 15).
//!
//! One non-linear projector `P = ReLU(Lin(F_av))` serves two purposes: its L2-normalised output
//! is the query view `q` of the supervised contrastive loss, and once BECE is switched on it is
//! mixed back into the event/background classifier's input, `F_o = F_av + λ·P`. The key view
//! `k` is the same projector applied to `F_av` plus Gaussian noise (σ = 0.1).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor};

use crate::config::{Augmentation, ModelConfig};

use super::nn::linear;
use super::state::{HasState, Prefix, StateVisitor};
use super::trace::Trace;

const NAME: &str = "localize_module";

#[derive(Module, Debug)]
pub struct LocalizationHead {
    /// Event/background classifier, 256 → 1 (logits).
    pub classifier: Linear,
    /// BECE projector (`encoder_q.0` in the state dict: the Linear of `Sequential(Linear, ReLU)`).
    pub encoder_q: Linear,
    /// Category classifier on the max over time, 256 → 28.
    pub event_classifier: Linear,
    /// λ: weight of the projected feature mixed into the event/background input.
    pub lambda: f64,
    /// BECE enabled in the config (`--contrastive`); without it the λ-mix never happens.
    pub contrastive: bool,
    /// σ of the Gaussian noise that makes the key view.
    pub noise_std: f64,
    #[module(skip)]
    pub augmentation: Augmentation,
    pub channel_mask_p: f64,
    pub mixup_weight: f64,
    /// The category head reads `F_o` instead of `F_av` (Table 2 *).
    pub enhanced_for_category: bool,
}

/// What the head returns (batch-first).
pub struct HeadOutput {
    /// `[B, T]` event/background logits.
    pub is_event: Tensor<2>,
    /// `[B, 28]` category logits before the `+ γ·av_score` term.
    pub class_logits: Tensor<2>,
    /// `[B, T, d]` unit query view.
    pub q: Tensor<3>,
    /// `[B, T, d]` unit key view.
    pub k: Tensor<3>,
}

/// `x / max(‖x‖₂, 1e-12)` over the last axis, like `F.normalize`.
///
/// A row of zeros is common here (`P` is a ReLU output). The derivative of `sqrt` at 0 is
/// infinite and 0·∞ would turn its gradient into NaN (PyTorch's norm defines it as 0); the
/// 1e-24 under the root keeps it finite and changes no f32 value of a norm above 1e-12.
pub fn l2_normalize(x: Tensor<3>) -> Tensor<3> {
    let norm = x
        .clone()
        .square()
        .sum_dim(2)
        .add_scalar(1e-24)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_normalize_of_a_zero_row_has_a_finite_gradient() {
        let device = Device::flex().autodiff();
        let x = Tensor::<3>::from_floats([[[3.0, 4.0], [0.0, 0.0]]], &device).require_grad();
        let y = l2_normalize(x.clone());
        let v = y
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(v, vec![0.6, 0.8, 0.0, 0.0]);
        let g = y.sum().backward();
        let gx = x
            .grad(&g)
            .unwrap()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(gx.iter().all(|g| g.is_finite()), "{gx:?}");
        // d/dx of (x1 + x2)/‖x‖ at (3, 4): (‖x‖² − x·(x1+x2)... ) = (16 − 12, 9 − 12)/125.
        assert!(
            (gx[0] - 4.0 / 125.0).abs() < 1e-6 && (gx[1] + 3.0 / 125.0).abs() < 1e-6,
            "{gx:?}"
        );
    }
}

impl LocalizationHead {
    pub fn new(d: usize, config: &ModelConfig, device: &Device) -> Self {
        Self {
            classifier: linear(d, 1, device),
            encoder_q: linear(d, d, device),
            event_classifier: linear(d, config.num_classes, device),
            lambda: config.lambda,
            contrastive: config.contrastive,
            noise_std: config.noise_std,
            augmentation: config.augmentation,
            channel_mask_p: config.channel_mask_p,
            mixup_weight: config.mixup_weight,
            enhanced_for_category: config.enhanced_for_category,
        }
    }

    /// BECE's second view of `F_av [B, T, d]`. `noise` (standard normal) replaces the draw of
    /// the Gaussian augmentation (parity tests feed the reference's draw).
    fn key_view(&self, fused: Tensor<3>, noise: Option<Tensor<3>>) -> Tensor<3> {
        match self.augmentation {
            Augmentation::GaussianNoise => {
                let noise =
                    noise.unwrap_or_else(|| fused.random_like(Distribution::Normal(0.0, 1.0)));
                fused + noise.mul_scalar(self.noise_std)
            }
            Augmentation::ChannelMask => {
                let keep = fused.random_like(Distribution::Bernoulli(1.0 - self.channel_mask_p));
                fused * keep
            }
            Augmentation::Mixup => {
                let t = fused.dims()[1];
                let device = fused.device();
                let perm =
                    Tensor::<1>::random([t], Distribution::Uniform(0.0, 1.0), &device).argsort(0);
                let other = fused.clone().select(1, perm);
                fused.mul_scalar(self.mixup_weight) + other.mul_scalar(1.0 - self.mixup_weight)
            }
        }
    }

    /// `fused [B, T, d]` = F_av. `bece_on` is the official `contrastive_switch` (off during
    /// the warm-up epochs, on afterwards and in evaluation). `noise [B, T, d]` is the standard
    /// normal draw of the key view; `None` draws a fresh one (code: also in eval mode).
    pub fn forward(
        &self,
        fused: Tensor<3>,
        bece_on: bool,
        noise: Option<Tensor<3>>,
        trace: &mut Trace,
    ) -> HeadOutput {
        let [b, t, d] = fused.dims();
        trace.record((NAME, ".input"), &fused);
        let p = relu(self.encoder_q.forward(fused.clone()));
        trace.record((NAME, ".encoder_q"), &p);
        let f_o = if bece_on && self.contrastive {
            fused.clone() + p.clone().mul_scalar(self.lambda)
        } else {
            fused.clone()
        };
        let is_event = self.classifier.forward(f_o.clone());
        trace.record((NAME, ".classifier"), &is_event);

        let k = relu(self.encoder_q.forward(self.key_view(fused.clone(), noise)));
        trace.record((NAME, ".encoder_q@call1"), &k);

        // Max over time of F_av (published), or of F_o (Table 2 *).
        let category_input = if self.enhanced_for_category {
            f_o
        } else {
            fused
        };
        let pooled = category_input.max_dim(1).reshape([b, d]);
        let class_logits = self.event_classifier.forward(pooled);
        trace.record((NAME, ".event_classifier"), &class_logits);
        HeadOutput {
            is_event: is_event.reshape([b, t]),
            class_logits,
            q: l2_normalize(p),
            k: l2_normalize(k),
        }
    }
}

impl HasState for LocalizationHead {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.classifier.visit_state(&at.child("classifier"), v);
        self.encoder_q.visit_state(&at.child("encoder_q.0"), v);
        self.event_classifier
            .visit_state(&at.child("event_classifier"), v);
    }
}
