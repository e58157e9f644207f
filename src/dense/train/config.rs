//! Everything a dense training run depends on, with the official UnAV-100 values as defaults
//! (`configs/avel_unav100.yaml` over `libs/core/config.py`); saved as `RUN/train_config.json`.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::dense::data::DenseDataConfig;
use crate::dense::model::DenseModelConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenseTrainConfig {
    pub model: DenseModelConfig,
    pub data: DenseDataConfig,
    /// Epochs of the cosine schedule after the warm-up (official 40); a run has
    /// `epochs + warmup_epochs` epochs.
    pub epochs: usize,
    pub warmup_epochs: usize,
    pub batch_size: usize,
    /// Videos per forward pass in evaluation (the official loader uses the training batch size).
    pub eval_batch_size: usize,
    /// AdamW.
    pub lr: f64,
    pub weight_decay: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// `clip_grad_norm_` (official 1.0; ≤ 0 turns it off).
    pub clip_grad_l2norm: f64,
    /// Decay of the weights' moving average, which evaluation uses (`ModelEma`).
    pub ema_decay: f64,
    /// The loss normaliser: EMA of the number of positive points (initial value, momentum).
    pub init_loss_norm: f64,
    pub loss_norm_momentum: f64,
    /// Regression weight (≤ 0: balanced automatically).
    pub loss_weight: f64,
    pub label_smoothing: f64,
    /// First epoch (0-based) with BECE on (when `model.bece`): its λ-mix and contrastive term.
    /// `None`: ⌈all epochs / 8⌉, the AVE code's `epoch >= n_epoch / 8`.
    pub bece_start_epoch: Option<usize>,
    /// Weight of BECE's contrastive term and its temperature (the AVE run's 1.0 and 0.01).
    pub contrastive_weight: f64,
    pub tau: f64,
    pub seed: u64,
}

impl Default for DenseTrainConfig {
    fn default() -> Self {
        Self {
            model: DenseModelConfig::default(),
            data: DenseDataConfig::default(),
            epochs: 40,
            warmup_epochs: 5,
            batch_size: 16,
            eval_batch_size: 16,
            lr: 1e-4,
            weight_decay: 1e-4,
            betas: (0.9, 0.999),
            eps: 1e-8,
            clip_grad_l2norm: 1.0,
            ema_decay: 0.999,
            init_loss_norm: 250.0,
            loss_norm_momentum: 0.9,
            loss_weight: 1.0,
            label_smoothing: 0.0,
            bece_start_epoch: None,
            contrastive_weight: 1.0,
            tau: 0.01,
            seed: 1234567891,
        }
    }
}

impl DenseTrainConfig {
    /// All epochs of a run (the official `max_epochs`).
    pub fn total_epochs(&self) -> usize {
        self.epochs + self.warmup_epochs
    }

    /// Whether BECE acts in epoch `epoch` (0-based).
    pub fn bece_on(&self, epoch: usize) -> bool {
        self.model.bece
            && epoch
                >= self
                    .bece_start_epoch
                    .unwrap_or(self.total_epochs().div_ceil(8))
    }

    /// Errors name the field.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.data.check()?;
        let (m, d) = (&self.model, &self.data);
        let pairs = [
            (
                "input_dim_v",
                m.input_dim_v,
                "rgb_dim + flow_dim",
                d.rgb_dim + d.flow_dim,
            ),
            ("input_dim_a", m.input_dim_a, "audio_dim", d.audio_dim),
            ("num_classes", m.num_classes, "num_classes", d.num_classes),
            ("max_seq_len", m.max_seq_len, "max_seq_len", d.max_seq_len),
        ];
        for (a, x, b, y) in pairs {
            if x != y {
                bail!("model.{a} is {x} but data.{b} is {y}; they must agree");
            }
        }
        if self.epochs == 0 {
            bail!("epochs must be positive");
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            bail!("batch_size and eval_batch_size must be positive");
        }
        let rates = [
            ("lr", self.lr),
            ("weight_decay", self.weight_decay),
            ("eps", self.eps),
            ("init_loss_norm", self.init_loss_norm),
            ("contrastive_weight", self.contrastive_weight),
        ];
        for (name, v) in rates {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{name} must be a finite number >= 0 (got {v})");
            }
        }
        for (name, v) in [
            ("ema_decay", self.ema_decay),
            ("loss_norm_momentum", self.loss_norm_momentum),
            ("betas.0", self.betas.0),
            ("betas.1", self.betas.1),
        ] {
            if !(0.0..1.0).contains(&v) {
                bail!("{name} must be in [0, 1) (got {v})");
            }
        }
        if !(self.tau.is_finite() && self.tau > 0.0) {
            bail!("tau must be a positive number (got {})", self.tau);
        }
        Ok(())
    }
}
