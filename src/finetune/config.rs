//! The settings of a fine-tuning run; the defaults are the official ones (REFERENCE §6.3).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::backbone::BackboneKind;
use crate::optim::SgdConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    pub encoder: BackboneKind,
    pub epochs: usize,
    /// Videos per optimisation step (official 128, over all GPUs).
    pub batch_size: usize,
    /// Videos per forward pass, and the set the InfoNCE loss contrasts. The official run split
    /// its batch of 128 over GPUs with DistributedDataParallel and no gathering: each GPU's loss
    /// contrasts its own share and the gradients are averaged. `cace` runs the shares one after
    /// another and averages their gradients the same way; 16 = 8 GPUs. Memory grows with it
    /// (ResNet-50: about 1 GB per video of a share on the CPU).
    pub local_batch: usize,
    pub sgd: SgdConfig,
    /// Epochs after which the rate is multiplied by `lr_gamma` (official `--schedule 15 30`).
    pub lr_milestones: Vec<usize>,
    pub lr_gamma: f64,
    /// Cosine schedule instead (`--cos`): `lr·½(1 + cos(π·epoch/epochs))`.
    pub cosine: bool,
    /// InfoNCE temperature (`--t`).
    pub tau: f64,
    /// Width of the shared space (`--hidden-dim`).
    pub hidden_dim: usize,
    /// Videos held out of training to measure retrieval accuracy each epoch (0: none).
    pub held_out: usize,
    pub seed: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self::new(BackboneKind::Resnet50)
    }
}

impl FinetuneConfig {
    pub fn new(encoder: BackboneKind) -> Self {
        Self {
            encoder,
            epochs: 50,
            batch_size: 128,
            local_batch: 16,
            sgd: SgdConfig::default(),
            lr_milestones: vec![15, 30],
            lr_gamma: 0.1,
            cosine: false,
            tau: 0.2,
            hidden_dim: 128,
            held_out: 128,
            seed: 0,
        }
    }

    /// The learning rate of (0-based) `epoch`, as the official `adjust_learning_rate`.
    pub fn lr(&self, epoch: usize) -> f64 {
        let base = self.sgd.lr;
        if self.cosine {
            let t = epoch as f64 / self.epochs as f64;
            return base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        }
        let passed = self.lr_milestones.iter().filter(|&&m| epoch >= m).count();
        base * self.lr_gamma.powi(passed as i32)
    }

    /// Every field's range, the field named.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("local_batch", self.local_batch),
            ("hidden_dim", self.hidden_dim),
        ] {
            if v == 0 {
                bail!("{name} must be at least 1, got 0");
            }
        }
        if self.batch_size % self.local_batch != 0 {
            bail!(
                "batch_size {} must be a multiple of local_batch {}",
                self.batch_size,
                self.local_batch
            );
        }
        if self.local_batch < 2 {
            bail!("local_batch must be at least 2: the loss contrasts the videos of a share");
        }
        for (name, v) in [
            ("sgd.lr", self.sgd.lr),
            ("tau", self.tau),
            ("lr_gamma", self.lr_gamma),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                bail!("{name} must be a positive number, got {v}");
            }
        }
        for (name, v) in [
            ("sgd.momentum", self.sgd.momentum),
            ("sgd.weight_decay", self.sgd.weight_decay),
        ] {
            if !(0.0..1.0).contains(&v) {
                bail!("{name} must be in [0, 1), got {v}");
            }
        }
        if self.hidden_dim > crate::config::MAX_WIDTH {
            bail!(
                "hidden_dim must be at most {}, got {}",
                crate::config::MAX_WIDTH,
                self.hidden_dim
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_the_official_ones() {
        let mut c = FinetuneConfig::new(BackboneKind::Resnet50);
        assert_eq!(c.lr(0), 1e-3);
        assert_eq!(c.lr(14), 1e-3);
        assert!((c.lr(15) - 1e-4).abs() < 1e-12);
        assert!((c.lr(30) - 1e-5).abs() < 1e-12);
        c.cosine = true;
        assert_eq!(c.lr(0), 1e-3);
        assert!((c.lr(25) - 0.5e-3).abs() < 1e-12);
        assert!(c.validate().is_ok());
        c.local_batch = 3;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("local_batch")
        );
    }
}
