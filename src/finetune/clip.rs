//! The model the official fine-tuning trains (`clip/model.py` `CLIP`, REFERENCE §6.3): the image
//! encoder, and one projection head per modality (no bias) into a shared space where a video's
//! frames and its audio are pulled together by a symmetric InfoNCE loss over the batch.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};

use super::backbone::{Backbone, BackboneConfig};
use crate::model::state::{HasState, Layout, Prefix, StateVisitor};

/// Sizes and temperature; the defaults are the official ones (`--dim-A 128 --hidden-dim 128
/// --t 0.2`; `--dim-I` follows the backbone).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub backbone: BackboneConfig,
    /// Width of the audio vectors (128 VGGish).
    pub audio_dim: usize,
    /// Width of the shared space.
    pub hidden_dim: usize,
    /// Softmax temperature τ.
    pub tau: f64,
}

impl ClipConfig {
    pub fn new(backbone: BackboneConfig) -> Self {
        Self {
            backbone,
            audio_dim: 128,
            hidden_dim: 128,
            tau: 0.2,
        }
    }

    pub fn init(&self, device: &Device) -> Clip {
        Clip {
            encoder_i: self.backbone.init(device),
            alignment_i: projection(self.backbone.channels(), self.hidden_dim, device),
            alignment_a: projection(self.audio_dim, self.hidden_dim, device),
            tau: self.tau,
        }
    }
}

/// `nn.Linear(d_in, d_out, bias=False)`, stored `[d_in, d_out]` (burn's layout).
fn projection(d_in: usize, d_out: usize, device: &Device) -> Param<Tensor<2>> {
    let bound = 1.0 / (d_in as f64).sqrt();
    Param::from_tensor(Tensor::random(
        [d_in, d_out],
        Distribution::Uniform(-bound, bound),
        device,
    ))
}

#[derive(Module, Debug)]
pub struct Clip {
    /// The image encoder (`encoder_I`).
    pub encoder_i: Backbone,
    /// `alignment_I`: image width → hidden.
    pub alignment_i: Param<Tensor<2>>,
    /// `alignment_A`: audio width → hidden.
    pub alignment_a: Param<Tensor<2>>,
    pub tau: f64,
}

/// The two modalities of a batch in the shared space, L2-normalised.
pub struct Embeddings {
    /// `[B, hidden]`.
    pub image: Tensor<2>,
    /// `[B, hidden]`.
    pub audio: Tensor<2>,
}

impl Clip {
    /// `images [B, T, 3, H, W]` (normalised frames, one per second), `audio [B, T, A]` (the
    /// frozen audio vectors) → embeddings.
    pub fn embed(&self, images: Tensor<5>, audio: Tensor<3>) -> Embeddings {
        let [b, t, c, h, w] = images.dims();
        let maps = self.encoder_i.forward(images.reshape([b * t, c, h, w])); // [B·T, C, h', w']
        let [_, c, h, w] = maps.dims();
        let maps = maps.reshape([b, t, c, h, w]).mean_dim(1); // [B, 1, C, h', w']: mean over time
        let image = maps.reshape([b, c, h * w]).mean_dim(2).reshape([b, c]); // global average pool
        let audio = audio.mean_dim(1).squeeze_dim::<2>(1); // [B, A]
        Embeddings {
            image: l2_normalize(image.matmul(self.alignment_i.val())),
            audio: l2_normalize(audio.matmul(self.alignment_a.val())),
        }
    }

    /// `I_f A_fᵀ / τ`, `[B, B]`: row i scores video i's frames against every audio.
    pub fn logits(&self, e: &Embeddings) -> Tensor<2> {
        e.image
            .clone()
            .matmul(e.audio.clone().transpose())
            .div_scalar(self.tau)
    }
}

/// `F.normalize(x, dim=1)`: `x / max(‖x‖, 1e-12)` per row.
fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// The symmetric InfoNCE of the official loop: `½ [CE(logits, i) + CE(logitsᵀ, i)]`, the target
/// of row i being column i. (Paper Eq. 9 writes only the first term; REFERENCE §5.)
pub fn symmetric_info_nce(logits: Tensor<2>) -> Tensor<1> {
    let rows = cross_entropy_diagonal(logits.clone());
    let cols = cross_entropy_diagonal(logits.transpose());
    (rows + cols).div_scalar(2.0)
}

/// Mean over rows of `−log softmax(row)[i]`.
fn cross_entropy_diagonal(logits: Tensor<2>) -> Tensor<1> {
    let [b, _] = logits.dims();
    let log_p = burn::tensor::activation::log_softmax(logits.clone(), 1);
    let eye = Tensor::<2>::eye(b, &logits.device());
    (log_p * eye).sum().neg().div_scalar(b as f64)
}

impl HasState for Clip {
    /// `encoder_I.<torchvision key>`, `alignment_I.weight`, `alignment_A.weight`: the official
    /// `CLIP` module's keys but for the encoder's, which the official code names by position
    /// ([`super::backbone::sequential_key`]).
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.encoder_i.visit_state(&at.child("encoder_I"), v);
        for (name, p) in [
            ("alignment_I", &mut self.alignment_i),
            ("alignment_A", &mut self.alignment_a),
        ] {
            v.visit(
                &at.child(name).key("weight"),
                at.used,
                p,
                Layout::Transposed,
            );
        }
    }
}
