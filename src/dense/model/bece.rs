//! BECE (background-event contrast enhancement, paper §3.3) carried to the dense model
//! (issue 15; the supplement does not say where): on the fused per-level features that feed
//! the classification head, the natural place (the AVE model applies it to the fused features
//! feeding its event/background classifier, REFERENCE §2.3 step 15).
//!
//! Per level, `P = ReLU(W F)` (one 1×1 convolution shared by the levels). Once switched on
//! (from `bece_start_epoch` in training, always in evaluation, as the AVE switch), the
//! classification head sees `F + λ·P` (the regression head keeps `F`), and training adds the
//! supervised contrastive loss of [`crate::loss::contrastive_masked`] over the valid points
//! of all levels: the query view `normalize(P)`, the key view `normalize(ReLU(W(F + 0.1·N)))`
//! with fresh Gaussian noise; a point's positives are every other positive point of its
//! video (any class, from the training targets) if it is one, else its own other view.

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor};

use super::blocks::PointwiseConv;
use crate::model::head::l2_normalize;
use crate::model::state::{HasState, Prefix, StateVisitor};

#[derive(Module, Debug)]
pub struct DenseBece {
    pub encoder_q: PointwiseConv,
    /// λ: weight of the projection added to the classifier's input (the AVE run's 0.6).
    pub lambda: f64,
}

/// The two views `[B, FT, D]` (all levels' points concatenated), unit vectors.
pub struct BeceViews {
    pub q: Tensor<3>,
    pub k: Tensor<3>,
}

impl DenseBece {
    pub fn new(channels: usize, lambda: f64, device: &Device) -> Self {
        Self {
            encoder_q: PointwiseConv::new(channels, channels, device),
            lambda,
        }
    }

    /// The classifier's inputs `F + λ·P` per level, and the two views when `views` (training).
    pub fn forward(
        &self,
        feats: &[Tensor<3>],
        masks: &[Tensor<2>],
        views: bool,
    ) -> (Vec<Tensor<3>>, Option<BeceViews>) {
        let project = |f: Tensor<3>, m: &Tensor<2>| {
            relu(self.encoder_q.forward(f)) * m.clone().unsqueeze_dim::<3>(1)
        };
        let p: Vec<Tensor<3>> = feats
            .iter()
            .zip(masks)
            .map(|(f, m)| project(f.clone(), m))
            .collect();
        let enhanced = feats
            .iter()
            .zip(&p)
            .map(|(f, p)| f.clone() + p.clone().mul_scalar(self.lambda))
            .collect();
        if !views {
            return (enhanced, None);
        }
        let k: Vec<Tensor<3>> = feats
            .iter()
            .zip(masks)
            .map(|(f, m)| {
                let noise = Tensor::random(f.dims(), Distribution::Normal(0.0, 1.0), &f.device());
                project(f.clone() + noise.mul_scalar(0.1), m)
            })
            .collect();
        let cat = |xs: Vec<Tensor<3>>| l2_normalize(Tensor::cat(xs, 2).swap_dims(1, 2)); // [B, FT, D]
        (
            enhanced,
            Some(BeceViews {
                q: cat(p),
                k: cat(k),
            }),
        )
    }
}

impl HasState for DenseBece {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.encoder_q.visit_state(&at.child("encoder_q"), v);
    }
}
