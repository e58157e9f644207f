//! The training configuration: everything a run depends on, with the published values as
//! defaults, checked field by field before anything is written.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::optim::{AdamConfig, MultiStepLr};
use crate::precision::Precision;

/// Everything a run depends on; saved as `RUN_DIR/train_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub adam: AdamConfig,
    /// Epochs after which the learning rate is multiplied by `lr_gamma` (`MultiStepLR`).
    pub lr_milestones: Vec<usize>,
    pub lr_gamma: f64,
    /// Global L2 gradient-norm clip (`clip_grad_norm_`).
    pub clip_norm: f64,
    /// Weight of BECE's contrastive term (`contras_coeff`).
    pub contrastive_weight: f64,
    /// Contrastive temperature τ.
    pub tau: f64,
    /// First epoch (0-based) with BECE's contrastive term and λ-mix on. `None` = the official
    /// `epoch >= n_epoch / 8` (a float comparison: ⌈n_epoch / 8⌉, 25 for 200 epochs).
    pub bece_start_epoch: Option<usize>,
    pub seed: u64,
    /// Replace the audio features by zeros (an ablation: how much does sound matter?).
    pub zero_audio: bool,
    /// Hold the features in memory (`true`) or stream each batch from the HDF5 files
    /// (`false`). `None`: in memory when they take at most 2 GiB as f32.
    pub features_in_memory: Option<bool>,
    /// Copy the features to the compute device once and keep them there (`true`), or send each
    /// batch over from the host (`false`). `None`: on a GPU when they take at most 6 GiB as f32
    /// ([`crate::resident::AUTO_DEVICE_BYTES`]), never on the CPU (nothing to gain there).
    pub features_on_device: Option<bool>,
    /// `"f32"` (the parity standard) or `"bf16"`: the large multiplies with bf16 operands and
    /// f32 sums, training and evaluation ([`crate::precision`]).
    pub precision: Precision,
}

impl Default for TrainConfig {
    /// The published run (REFERENCE §4.1).
    fn default() -> Self {
        Self {
            model: ModelConfig::default(),
            epochs: 200,
            batch_size: 64,
            eval_batch_size: 64,
            adam: AdamConfig::default(),
            lr_milestones: vec![10, 20, 30],
            lr_gamma: 0.5,
            clip_norm: 0.5,
            contrastive_weight: 1.0,
            tau: 0.01,
            bece_start_epoch: None,
            seed: 3917,
            zero_audio: false,
            features_in_memory: None,
            features_on_device: None,
            precision: Precision::F32,
        }
    }
}

impl TrainConfig {
    pub fn bece_start(&self) -> usize {
        self.bece_start_epoch.unwrap_or(self.epochs.div_ceil(8))
    }

    pub fn schedule(&self) -> MultiStepLr {
        MultiStepLr {
            base_lr: self.adam.lr,
            milestones: self.lr_milestones.clone(),
            gamma: self.lr_gamma,
        }
    }

    /// Checks every field's range before anything is written; the error names the field.
    pub fn validate(&self) -> Result<()> {
        self.model
            .validate()
            .map_err(|e| anyhow::anyhow!("model.{e}"))?;
        for (name, v) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("eval_batch_size", self.eval_batch_size),
        ] {
            if v == 0 {
                bail!("{name} must be at least 1, got 0");
            }
        }
        let positive = [
            ("adam.lr", self.adam.lr),
            ("adam.eps", self.adam.eps),
            ("tau", self.tau),
            ("clip_norm", self.clip_norm),
            ("lr_gamma", self.lr_gamma),
        ];
        for (name, v) in positive {
            if !(v > 0.0 && v.is_finite()) {
                bail!("{name} must be a positive number, got {v}");
            }
        }
        for (name, v) in [
            ("adam.beta1", self.adam.beta1),
            ("adam.beta2", self.adam.beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                bail!("{name} must be in [0, 1), got {v}");
            }
        }
        if !(self.contrastive_weight >= 0.0 && self.contrastive_weight.is_finite()) {
            bail!(
                "contrastive_weight must be >= 0, got {}",
                self.contrastive_weight
            );
        }
        if self.lr_milestones.windows(2).any(|w| w[0] >= w[1]) {
            bail!(
                "lr_milestones must be increasing, got {:?}",
                self.lr_milestones
            );
        }
        Ok(())
    }
}
