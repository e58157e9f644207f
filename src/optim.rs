//! What burn lacks for the official schedule, written once: gradients by state-dict key,
//! PyTorch's global-norm clipping (`clip_grad_norm_`), PyTorch's Adam and AdamW (parameters
//! without a gradient get no state and no step, REFERENCE §4.3), SGD, and `MultiStepLR`.

use std::collections::HashMap;

use burn::module::Param;
use burn::tensor::{Gradients, Tensor};
use serde::{Deserialize, Serialize};

use crate::device::is_flex;
use crate::model::state::{HasState, Layout, Prefix, StateVisitor, map_params};

mod adam_flex;

/// Gradients of a module's parameters, by state-dict key, flattened, in burn's layout.
/// Parameters that received no gradient are absent (PyTorch's `grad is None`).
pub struct KeyedGrads {
    pub grads: Vec<(String, Tensor<1>)>,
}

impl KeyedGrads {
    pub fn collect<M: HasState + Clone>(module: &M, grads: &Gradients) -> Self {
        struct Collect<'a> {
            grads: &'a Gradients,
            out: Vec<(String, Tensor<1>)>,
        }
        impl StateVisitor for Collect<'_> {
            fn visit<const D: usize>(
                &mut self,
                key: &str,
                _used: bool,
                param: &mut Param<Tensor<D>>,
                _layout: Layout,
            ) {
                if let Some(g) = param.val().grad(self.grads) {
                    let n = g.shape().num_elements();
                    self.out.push((key.to_string(), g.reshape([n])));
                }
            }
        }
        let mut c = Collect {
            grads,
            out: Vec::new(),
        };
        module.clone().visit_state(&Prefix::root(), &mut c);
        Self { grads: c.out }
    }

    pub fn get(&self, key: &str) -> Option<&Tensor<1>> {
        self.grads.iter().find(|(k, _)| k == key).map(|(_, g)| g)
    }

    /// Global L2 norm over every gradient, `[1]` on the gradients' device: the sums of squares
    /// of all gradient tensors are added as tensors, so nothing is read back to the host.
    pub fn global_norm(&self) -> Tensor<1> {
        self.grads
            .iter()
            .map(|(_, g)| g.clone().square().sum())
            .reduce(|a, b| a + b)
            .expect("no gradients")
            .sqrt()
    }

    /// `torch.nn.utils.clip_grad_norm_`: every gradient is multiplied by
    /// `min(1, max_norm / (norm + 1e-6))`, computed and applied on the device (no read-back).
    /// Returns the norm before clipping, `[1]` on the device (NaN or ∞ when a gradient is).
    pub fn clip_global_norm(&mut self, max_norm: f64) -> Tensor<1> {
        let norm = self.global_norm();
        let max = Tensor::<1>::full([1], max_norm, &norm.device());
        let factor = (max / norm.clone().add_scalar(1e-6)).clamp_max(1.0);
        for (_, g) in self.grads.iter_mut() {
            *g = g.clone() * factor.clone();
        }
        norm
    }
}

/// Adam as PyTorch implements it (no weight decay, no amsgrad).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    /// The official run: lr 7e-4, betas (0.9, 0.999), eps 1e-8.
    fn default() -> Self {
        Self {
            lr: 7e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Per-parameter moments, keyed by state-dict key.
pub struct AdamState {
    pub step: u64,
    pub exp_avg: Tensor<1>,
    pub exp_avg_sq: Tensor<1>,
}

pub struct Adam {
    pub config: AdamConfig,
    pub state: HashMap<String, AdamState>,
}

impl Adam {
    pub fn new(config: AdamConfig) -> Self {
        Self {
            config,
            state: HashMap::new(),
        }
    }

    /// One step with learning rate `lr` on every parameter that has a gradient in `grads`.
    pub fn step<M: HasState>(&mut self, module: &mut M, grads: &KeyedGrads, lr: f64) {
        self.step_decoupled(module, grads, lr, |_| 0.0);
    }

    /// `torch.optim.AdamW`: the same step after the decoupled weight decay
    /// `p ← p·(1 − lr·wd)`, with `wd = decay(key)` per parameter (the UnAV baseline's two
    /// groups: 0 for biases, norms and scales). Applied as one update `p − (lr·wd·p + step)`,
    /// which differs from PyTorch's two in-place updates by rounding only.
    pub fn step_decoupled<M: HasState>(
        &mut self,
        module: &mut M,
        grads: &KeyedGrads,
        lr: f64,
        decay: impl Fn(&str) -> f64,
    ) {
        let c = self.config.clone();
        update_each(module, grads, |key, value, grad| {
            let st = self
                .state
                .entry(key.to_string())
                .or_insert_with(|| AdamState {
                    step: 0,
                    exp_avg: grad.zeros_like(),
                    exp_avg_sq: grad.zeros_like(),
                });
            st.step += 1;
            let bias1 = 1.0 - c.beta1.powi(st.step as i32);
            let bias2 = 1.0 - c.beta2.powi(st.step as i32);
            let wd = decay(key);
            if is_flex(&value.device()) {
                let s = adam_flex::AdamScalars {
                    beta1: c.beta1 as f32,
                    one_minus_beta1: (1.0 - c.beta1) as f32,
                    beta2: c.beta2 as f32,
                    one_minus_beta2: (1.0 - c.beta2) as f32,
                    sqrt_bias2: bias2.sqrt() as f32,
                    eps: c.eps as f32,
                    step_size: (lr / bias1) as f32,
                    decay: (lr * wd) as f32,
                };
                let (m, v) = (st.exp_avg.clone(), st.exp_avg_sq.clone());
                let (p, m, v) = adam_flex::adam_update(value, grad.clone(), m, v, s);
                (st.exp_avg, st.exp_avg_sq) = (m, v);
                return p;
            }
            st.exp_avg =
                st.exp_avg.clone().mul_scalar(c.beta1) + grad.clone().mul_scalar(1.0 - c.beta1);
            st.exp_avg_sq = st.exp_avg_sq.clone().mul_scalar(c.beta2)
                + grad.clone().square().mul_scalar(1.0 - c.beta2);
            let denom = st
                .exp_avg_sq
                .clone()
                .sqrt()
                .div_scalar(bias2.sqrt())
                .add_scalar(c.eps);
            let step = (st.exp_avg.clone() / denom).mul_scalar(lr / bias1);
            let step = if wd == 0.0 {
                step
            } else {
                step + value.clone().mul_scalar(lr * wd)
            };
            value - step
        });
    }
}

/// Replaces every parameter of `module` that has a gradient in `grads` by
/// `new(key, value, grad)` (flat, burn's layout; [`map_params`]: same id, same autodiff
/// tracking). The one place both optimizers write parameters.
fn update_each<M: HasState>(
    module: &mut M,
    grads: &KeyedGrads,
    mut new: impl FnMut(&str, Tensor<1>, &Tensor<1>) -> Tensor<1>,
) {
    let grads: HashMap<&str, &Tensor<1>> =
        grads.grads.iter().map(|(k, g)| (k.as_str(), g)).collect();
    map_params(module, |key, value| {
        let grad = grads.get(key)?;
        Some(new(key, value, grad))
    });
}

/// `torch.optim.SGD` with momentum and weight decay (dampening 0, not Nesterov), as the
/// official fine-tuning uses it (REFERENCE §6.3): per parameter with a gradient,
/// `d = g + wd·p`; `buf = d` on its first step, else `buf = momentum·buf + d`; `p ← p − lr·buf`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    /// The official fine-tuning: lr 1e-3, momentum 0.9, weight decay 1e-4.
    fn default() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 1e-4,
        }
    }
}

pub struct Sgd {
    pub config: SgdConfig,
    /// Momentum buffers by state-dict key (absent before a parameter's first step).
    pub momentum: HashMap<String, Tensor<1>>,
}

impl Sgd {
    pub fn new(config: SgdConfig) -> Self {
        Self {
            config,
            momentum: HashMap::new(),
        }
    }

    /// One step with learning rate `lr` on every parameter that has a gradient in `grads`.
    pub fn step<M: HasState>(&mut self, module: &mut M, grads: &KeyedGrads, lr: f64) {
        let c = self.config.clone();
        update_each(module, grads, |key, value, grad| {
            let d = grad.clone() + value.clone().mul_scalar(c.weight_decay);
            let buf = match self.momentum.remove(key) {
                Some(buf) if c.momentum != 0.0 => buf.mul_scalar(c.momentum) + d,
                _ => d,
            };
            if c.momentum != 0.0 {
                self.momentum.insert(key.to_string(), buf.clone());
            }
            value - buf.mul_scalar(lr)
        });
    }
}

/// `MultiStepLR`: the rate is multiplied by `gamma` at each milestone epoch (official:
/// 7e-4 halved after epochs 10, 20 and 30).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MultiStepLr {
    pub base_lr: f64,
    pub milestones: Vec<usize>,
    pub gamma: f64,
}

impl MultiStepLr {
    /// Learning rate used during (0-based) `epoch`.
    pub fn lr(&self, epoch: usize) -> f64 {
        let passed = self.milestones.iter().filter(|&&m| epoch >= m).count();
        self.base_lr * self.gamma.powi(passed as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn grads(values: &[&[f32]]) -> KeyedGrads {
        let device = Device::flex();
        KeyedGrads {
            grads: values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let t = Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &device);
                    (format!("p{i}"), t)
                })
                .collect(),
        }
    }

    #[test]
    fn global_clipping_is_torchs_clip_grad_norm() {
        // Norm √(9 + 16 + 144) = 13 over two tensors: scaled by 0.5 / (13 + 1e-6).
        let mut g = grads(&[&[3.0, 4.0], &[12.0]]);
        let norm = crate::to_vec(g.clip_global_norm(0.5))[0];
        assert_eq!(norm, 13.0);
        let f = 0.5 / (13.0 + 1e-6);
        let got: Vec<f32> = g
            .grads
            .iter()
            .flat_map(|(_, t)| crate::to_vec(t.clone()))
            .collect();
        for (a, b) in got.iter().zip([3.0 * f, 4.0 * f, 12.0 * f]) {
            assert!((*a as f64 - b).abs() < 1e-7, "{got:?}");
        }
        // Below the threshold nothing changes (factor exactly 1).
        let mut g = grads(&[&[0.03, 0.04]]);
        assert!((crate::to_vec(g.clip_global_norm(0.5))[0] - 0.05).abs() < 1e-8);
        assert_eq!(crate::to_vec(g.grads[0].1.clone()), vec![0.03, 0.04]);
        // A non-finite gradient gives a non-finite norm.
        let mut g = grads(&[&[1.0, f32::NAN]]);
        assert!(!crate::to_vec(g.clip_global_norm(0.5))[0].is_finite());
    }

    #[test]
    fn multistep_matches_official_schedule() {
        let s = MultiStepLr {
            base_lr: 7e-4,
            milestones: vec![10, 20, 30],
            gamma: 0.5,
        };
        assert_eq!(s.lr(0), 7e-4);
        assert_eq!(s.lr(9), 7e-4);
        assert_eq!(s.lr(10), 3.5e-4);
        assert_eq!(s.lr(19), 3.5e-4);
        assert_eq!(s.lr(20), 1.75e-4);
        assert_eq!(s.lr(30), 8.75e-5);
        assert_eq!(s.lr(199), 8.75e-5);
    }

    #[test]
    fn sgd_is_torchs_with_momentum_and_weight_decay() {
        struct One(Param<Tensor<1>>);
        impl HasState for One {
            fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
                v.visit(&at.key("p"), true, &mut self.0, Layout::Same);
            }
        }
        let device = Device::flex();
        let mut m = One(Param::from_tensor(Tensor::from_floats(
            [1.0, -2.0],
            &device,
        )));
        let mut sgd = Sgd::new(SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.1,
        });
        let step = |g: &[f32]| KeyedGrads {
            grads: vec![("p".into(), Tensor::from_floats(g, &device))],
        };
        // d = g + 0.1·p = [0.6, 0.3] = buf; p − 0.1·buf.
        sgd.step(&mut m, &step(&[0.5, 0.5]), 0.1);
        let p = crate::to_vec(m.0.val());
        assert!(
            (p[0] - 0.94).abs() < 1e-6 && (p[1] + 2.03).abs() < 1e-6,
            "{p:?}"
        );
        // d = [0.094, 0.797]; buf = 0.9·[0.6, 0.3] + d = [0.634, 1.067].
        sgd.step(&mut m, &step(&[0.0, 1.0]), 0.1);
        let p = crate::to_vec(m.0.val());
        assert!(
            (p[0] - 0.8766).abs() < 1e-6 && (p[1] + 2.1367).abs() < 1e-6,
            "{p:?}"
        );
        // A parameter without a gradient is not touched (not even by weight decay).
        sgd.step(&mut m, &KeyedGrads { grads: vec![] }, 0.1);
        assert_eq!(crate::to_vec(m.0.val()), p);
    }
}
