//! `nn.BatchNorm1d`/`nn.BatchNorm2d` with PyTorch's running statistics, for any rank
//! (`[N, C, ...]`): momentum 0.1, eps 1e-5, and the *unbiased* batch variance in the running
//! variance. burn's own `BatchNorm` keeps the biased one, which drifts from a PyTorch run by
//! `n/(n-1)` per update; the spiking encoder (Table S1) and the encoder fine-tuning (§6.3) both
//! need PyTorch's statistics.

use burn::module::{Module, Param, RunningState};
use burn::tensor::{Device, Tensor, activation};

use super::batch_norm_flex::{batch_norm_batch_stats, channel_affine};
use super::state::{HasState, Layout, Prefix, StateVisitor};
use crate::device::is_flex;

/// PyTorch's defaults.
pub const MOMENTUM: f64 = 0.1;
pub const EPS: f64 = 1e-5;

#[derive(Module, Debug)]
pub struct BatchNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
}

impl BatchNorm {
    /// `c` channels: weight 1, bias 0, running mean 0 and variance 1 (PyTorch's init).
    pub fn new(c: usize, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([c], device)),
            bias: Param::from_tensor(Tensor::zeros([c], device)),
            running_mean: RunningState::new(Tensor::zeros([c], device)),
            running_var: RunningState::new(Tensor::ones([c], device)),
        }
    }

    /// `[N, C, ...]` → same shape. On an autodiff device (training) it normalises with the
    /// batch statistics over every axis but `C` and updates the running ones; otherwise
    /// (evaluation) it uses the running ones.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.apply(x, false)
    }

    /// `relu(self.forward(x))`, in the same pass on the CPU.
    pub fn forward_relu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.apply(x, true)
    }

    fn apply<const D: usize>(&self, x: Tensor<D>, relu: bool) -> Tensor<D> {
        let flex = is_flex(&x.device());
        let then_relu = |y: Tensor<D>| if relu { activation::relu(y) } else { y };
        if !x.device().is_autodiff() {
            let (mean, var) = (
                self.running_mean.value_sync(),
                self.running_var.value_sync(),
            );
            if flex {
                let scale = self.weight.val() / var.add_scalar(EPS).sqrt();
                let shift = self.bias.val() - mean * scale.clone();
                return channel_affine(x, scale, shift, relu);
            }
            let (w, b) = (self.weight.val(), self.bias.val());
            return then_relu(burn::tensor::module::batch_norm(x, w, b, mean, var, EPS));
        }
        let dims = x.dims();
        let n = (dims.iter().product::<usize>() / dims[1]) as f64;
        let (output, batch_mean, batch_var) = if flex {
            batch_norm_batch_stats(x, self.weight.val(), self.bias.val(), EPS, relu)
        } else {
            let r =
                burn::tensor::module::batch_norm_train(x, self.weight.val(), self.bias.val(), EPS);
            (then_relu(r.output), r.mean, r.variance)
        };
        let m = MOMENTUM;
        let mean = self
            .running_mean
            .value_sync()
            .mul_scalar(1.0 - m)
            .add(batch_mean.detach().mul_scalar(m));
        let unbiased = batch_var.detach().mul_scalar(n / (n - 1.0).max(1.0));
        let var = self
            .running_var
            .value_sync()
            .mul_scalar(1.0 - m)
            .add(unbiased.mul_scalar(m));
        self.running_mean.update(mean.detach());
        self.running_var.update(var.detach());
        output
    }
}

impl HasState for BatchNorm {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        v.visit(&at.key("weight"), at.used, &mut self.weight, Layout::Same);
        v.visit(&at.key("bias"), at.used, &mut self.bias, Layout::Same);
        // Buffers: visited as parameters without gradient (stored, loaded, never trained).
        for (name, state) in [
            ("running_mean", &mut self.running_mean),
            ("running_var", &mut self.running_var),
        ] {
            let mut p = Param::from_tensor(state.value_sync()).set_require_grad(false);
            v.visit(&at.key(name), false, &mut p, Layout::Same);
            *state = RunningState::new(p.val());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The training-mode gradient equals that of the formula written out in tensor ops
    /// (mean and biased variance over every axis but `C`), which autodiff differentiates.
    #[test]
    fn training_gradient_is_the_formulas() {
        let _rng = crate::rng_lock();
        let device = Device::flex().autodiff();
        let x0 = Tensor::<4>::random(
            [6, 3, 4, 5],
            Distribution::Normal(0.5, 2.0),
            &device.clone().inner(),
        );
        let r = Tensor::<4>::random(
            [6, 3, 4, 5],
            Distribution::Normal(0.0, 1.0),
            &device.clone().inner(),
        );
        let bn = BatchNorm::new(3, &device);
        let x = Tensor::<4>::from_inner(x0.clone()).require_grad();
        let loss = (bn.forward(x.clone()) * Tensor::from_inner(r.clone())).sum();
        let g1 = crate::to_vec(x.grad(&loss.backward()).unwrap());

        let x = Tensor::<4>::from_inner(x0).require_grad();
        let xs = x.clone().swap_dims(0, 1).reshape([3, 6 * 4 * 5]);
        let mean = xs.clone().mean_dim(1);
        let var = (xs.clone() - mean.clone()).square().mean_dim(1);
        let y = (xs - mean) / var.add_scalar(EPS).sqrt();
        let y = y.reshape([3, 6, 4, 5]).swap_dims(0, 1);
        let loss = (y * Tensor::from_inner(r)).sum();
        let g2 = crate::to_vec(x.grad(&loss.backward()).unwrap());
        let err = g1
            .iter()
            .zip(&g2)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-4, "max difference {err}");
    }
}
