//! The UnAV baseline's learning-rate schedule (official `LinearWarmupCosineAnnealingLR`,
//! `libs/utils/lr_schedulers.py`, stepped once per iteration): from 0, linearly to the base
//! rate over the warm-up steps, then a cosine down to `eta_min` = 1e-8 at the last step.
//!
//! The official scheduler is written in PyTorch's chained form (each rate from the previous
//! one); this is its closed form, which it equals up to rounding (tests/dense/train.rs
//! compares all 315 rates of a 45-epoch run).

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    pub base_lr: f64,
    /// Warm-up iterations (warm-up epochs × iterations per epoch).
    pub warmup_steps: usize,
    /// All iterations ((epochs + warm-up epochs) × iterations per epoch).
    pub max_steps: usize,
    pub eta_min: f64,
}

impl WarmupCosine {
    pub fn new(base_lr: f64, warmup_steps: usize, max_steps: usize) -> Self {
        Self {
            base_lr,
            warmup_steps,
            max_steps,
            eta_min: 1e-8,
        }
    }

    /// The rate of optimizer step `step` (0-based): the official warm-up starts at exactly 0,
    /// so the very first step leaves the weights unchanged (up to weight decay, also × lr).
    pub fn lr(&self, step: usize) -> f64 {
        let (w, m) = (self.warmup_steps, self.max_steps);
        if step == 0 {
            0.0
        } else if step < w {
            step as f64 * self.base_lr / (w - 1) as f64
        } else if m <= w {
            self.base_lr
        } else {
            let progress = (step - w) as f64 / (m - w) as f64;
            self.eta_min
                + 0.5
                    * (self.base_lr - self.eta_min)
                    * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_reaches_the_base_rate_and_the_cosine_ends_at_eta_min() {
        let s = WarmupCosine::new(1e-4, 5, 25);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(2) - 0.5e-4).abs() < 1e-18);
        assert_eq!(s.lr(4), 1e-4);
        assert_eq!(s.lr(5), 1e-4);
        assert!((s.lr(15) - (1e-8 + 0.5 * (1e-4 - 1e-8))).abs() < 1e-15);
        assert!((s.lr(25) - 1e-8).abs() < 1e-18);
        assert!(s.lr(6) < s.lr(5) && s.lr(24) > s.lr(25));
    }
}
