//! One official training iteration (`train_one_epoch`'s body): forward in training mode →
//! targets for the training points → focal + DIoU losses → backward → `clip_grad_norm_` →
//! AdamW (two weight-decay groups) → the weights' moving average.

use anyhow::Result;
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use super::config::DenseTrainConfig;
use super::ema;
use crate::dense::data::DenseItem;
use crate::dense::infer::item_features;
use crate::dense::model::bece::BeceViews;
use crate::dense::model::labels::label_points;
use crate::dense::model::losses::{LossNormalizer, dense_losses};
use crate::dense::model::{DenseModel, VideoFeatures, preprocess};
use crate::loss::contrastive_masked;
use crate::optim::{Adam, AdamConfig, KeyedGrads};

/// Losses of one step (read back to the host).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLosses {
    pub cls: f64,
    pub reg: f64,
    pub total: f64,
    /// BECE's contrastive term (before its weight), once BECE is on.
    pub contrastive: Option<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

pub struct DenseTrainer {
    pub cfg: DenseTrainConfig,
    /// On the autodiff device.
    pub model: DenseModel,
    /// The moving average, on the plain device.
    pub ema: DenseModel,
    pub adam: Adam,
    pub normalizer: LossNormalizer,
    /// Training points of all levels, rows `[t, lo, hi, stride]`.
    points: Vec<f32>,
    pub device: Device,
}

impl DenseTrainer {
    pub fn new(cfg: &DenseTrainConfig, model: DenseModel, device: &Device) -> Result<Self> {
        let base = device.clone().inner();
        let points = cfg
            .model
            .point_generator()?
            .points(cfg.model.max_seq_len, true, &base)?
            .into_iter()
            .flat_map(crate::to_vec)
            .collect();
        Ok(Self {
            ema: model.valid(),
            model,
            adam: Adam::new(AdamConfig {
                lr: cfg.lr,
                beta1: cfg.betas.0,
                beta2: cfg.betas.1,
                eps: cfg.eps,
            }),
            normalizer: LossNormalizer {
                value: cfg.init_loss_norm,
                momentum: cfg.loss_norm_momentum,
            },
            points,
            cfg: cfg.clone(),
            device: device.clone(),
        })
    }

    /// Switches BECE on or off in the trained model and the moving average.
    pub fn set_bece(&mut self, on: bool) {
        let on = on && self.cfg.model.bece;
        self.model.bece_on = on;
        self.ema.bece_on = on;
    }

    /// One iteration on `items` (already truncated to the training window) with rate `lr`.
    pub fn step(&mut self, items: &[DenseItem], lr: f64) -> Result<StepLosses> {
        crate::pool::run(|| self.step_here(items, lr))
    }

    /// [`Self::step`] on the calling thread.
    fn step_here(&mut self, items: &[DenseItem], lr: f64) -> Result<StepLosses> {
        let videos: Vec<VideoFeatures> = items
            .iter()
            .map(|i| item_features(i, &self.device))
            .collect();
        let batch = preprocess(&videos, &self.cfg.model, true)?;
        let out = self.model.forward(&batch);
        let (gt_cls, gt_off) = self.targets(items);
        let contrast = out
            .bece
            .map(|views| self.contrastive(views, &gt_cls, &out.masks));
        let losses = dense_losses(
            &out.cls_logits,
            &out.offsets,
            &out.masks,
            gt_cls,
            gt_off,
            &mut self.normalizer,
            self.cfg.loss_weight,
            self.cfg.label_smoothing,
        );
        let total = match &contrast {
            Some(c) => losses.total.clone() + c.clone().mul_scalar(self.cfg.contrastive_weight),
            None => losses.total.clone(),
        };
        let mut grads = KeyedGrads::collect(&self.model, &total.backward());
        let norm = if self.cfg.clip_grad_l2norm > 0.0 {
            grads.clip_global_norm(self.cfg.clip_grad_l2norm)
        } else {
            grads.global_norm()
        };
        let wd = self.cfg.weight_decay;
        self.adam
            .step_decoupled(&mut self.model, &grads, lr, |key| {
                if decays(key) { wd } else { 0.0 }
            });
        ema::update(&mut self.ema, &self.model, self.cfg.ema_decay);
        let read = |t: Tensor<1>| crate::to_vec(t.inner())[0] as f64;
        Ok(StepLosses {
            cls: read(losses.cls),
            reg: read(losses.reg),
            total: read(total),
            contrastive: contrast.map(read),
            grad_norm: read(norm),
        })
    }

    /// BECE's contrastive term over the valid points: a point is an event when it is a
    /// positive for some class.
    fn contrastive(&self, views: BeceViews, gt_cls: &Tensor<3>, masks: &[Tensor<2>]) -> Tensor<1> {
        let is_event = crate::to_vec(gt_cls.clone().max_dim(2));
        let valid = crate::to_vec(Tensor::cat(masks.to_vec(), 1).inner());
        contrastive_masked(views.q, views.k, &is_event, Some(&valid), self.cfg.tau)
    }

    /// Class targets `[B, FT, C]` and offsets `[B, FT, C, 2]` (class-aware) or `[B, FT, 1, 2]`.
    fn targets(&self, items: &[DenseItem]) -> (Tensor<3>, Tensor<4>) {
        let c = self.cfg.model.num_classes;
        let aware = self.cfg.model.class_aware;
        let ft = self.points.len() / 4;
        let (mut cls, mut reg) = (Vec::new(), Vec::new());
        for item in items {
            let labels: Vec<usize> = item.labels.iter().map(|&l| l as usize).collect();
            let t = label_points(&self.points, &item.segments, &labels, c, aware);
            cls.extend(t.cls);
            reg.extend(t.reg);
        }
        let b = items.len();
        let rc = if aware { c } else { 1 };
        (
            Tensor::from_data(TensorData::new(cls, [b, ft, c]), &self.device),
            Tensor::from_data(TensorData::new(reg, [b, ft, rc, 2]), &self.device),
        )
    }
}

/// The official weight-decay groups (`make_optimizer`): weights of linear layers and
/// convolutions decay; biases, LayerNorm weights and the `Scale` / `AffineDropPath` scales do
/// not. Told apart by the state-dict key: the norms are the modules named `ln*` or `*norm*`
/// (tests/dense/train.rs checks the split against the official groups, key by key).
pub fn decays(key: &str) -> bool {
    let Some(module) = key.strip_suffix(".weight") else {
        return false;
    };
    let name = module
        .rsplit('.')
        .find(|s| !s.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or("");
    !(name.starts_with("ln") || name.contains("norm"))
}
