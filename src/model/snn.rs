//! The spiking temporal encoder of Table S1 (`SNNEncoder` → BrainCog `SHD_SNN`, REFERENCE §5.3):
//! one hidden layer of leaky integrate-and-fire neurons, run for 15 steps per segment.
//!
//! For `x [B, T, C]`: the membrane `m` starts at 0 once per forward call. For each segment `t`
//! the input current of its 15 steps is `I = BN(Drop(Lin(x_t)))`, computed over the 15·B copies
//! (dropout acts on each copy independently, batch norm uses the statistics of those 15·B rows
//! in training); per step `m ← m + (I_s − m)/τ`, `spike = H(m − θ)`, `m ← m·(1 − spike)` (hard
//! reset; the spike is detached in that product). The segment's output is the mean of its 15
//! spikes, and the membrane carries over to the next segment (the only temporal coupling).
//!
//! `H` has no useful derivative; training uses the surrogate `∂spike/∂u = max(0, α − α²|u|)`
//! (BrainCog `QGateGrad`, α = 2): a triangle `2 − 4|u|` on `|u| ≤ 1/α`, zero outside.

use burn::module::Module;
use burn::nn::Linear;

use super::dropout::Dropout;
use burn::tensor::{Device, Tensor};

use super::batch_norm::BatchNorm;
use super::nn::{dropout, linear};
use super::state::{HasState, Prefix, StateVisitor};

/// Simulation steps per segment.
pub const STEPS: usize = 15;
/// Membrane time constant τ.
pub const TAU: f64 = 2.0;
/// Firing threshold θ (a non-trainable parameter in BrainCog).
pub const THRESHOLD: f64 = 0.5;
/// Width parameter α of the surrogate gradient.
pub const SURROGATE_ALPHA: f64 = 2.0;
/// Dropout before the batch norm.
pub const DROPOUT: f64 = 0.1;

/// `spike = H(u)` forward (exactly 0 or 1), with the gradient of the triangle surrogate.
///
/// `s(u)` is the antiderivative of `max(0, α − α²|u|)`: `α·c − α²·c·|c|/2` with `c = clamp(u,
/// ±1/α)` (clamp passes no gradient outside, where the surrogate is 0). `H + (s − detach(s))`
/// equals `H` bit for bit (`s − s` is exactly 0) and differentiates like `s`.
pub fn spike(u: Tensor<2>) -> Tensor<2> {
    let a = SURROGATE_ALPHA;
    let heaviside = u.clone().greater_elem(0.0).float().detach();
    let c = u.clamp(-1.0 / a, 1.0 / a);
    let s = c.clone().mul_scalar(a) - (c.clone() * c.abs()).mul_scalar(a * a / 2.0);
    heaviside + (s.clone() - s.detach())
}

/// One LIF layer, `[B, T, C]` → `[B, T, h]` firing rates in `{0, 1/15, …, 1}`.
#[derive(Module, Debug)]
pub struct SpikingEncoder {
    /// `fc.0`: the input current's linear map.
    pub fc: Linear,
    pub drop: Dropout,
    /// `fc.2`.
    pub bn: BatchNorm,
}

impl SpikingEncoder {
    pub fn new(d_in: usize, hidden: usize, device: &Device) -> Self {
        Self {
            fc: linear(d_in, hidden, device),
            drop: dropout(DROPOUT),
            bn: BatchNorm::new(hidden, device),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let current = self.fc.forward(x); // [B, T, h]: the same map for all 15 copies
        let h = current.dims()[2];
        let mut m = Tensor::<2>::zeros([b, h], &current.device());
        let mut rates = Vec::with_capacity(t);
        for ti in 0..t {
            let c = current.clone().narrow(1, ti, 1).reshape([1, b, h]);
            // Step-major copies [15·B, h]; dropout draws a separate mask per copy.
            let copies = c.expand([STEPS, b, h]).reshape([STEPS * b, h]);
            let i = self
                .bn
                .forward(self.drop.forward(copies))
                .reshape([STEPS, b, h]);
            let mut sum = Tensor::<2>::zeros([b, h], &m.device());
            for s in 0..STEPS {
                let is = i.clone().narrow(0, s, 1).reshape([b, h]);
                m = m.clone() + (is - m).div_scalar(TAU);
                let sp = spike(m.clone().sub_scalar(THRESHOLD));
                m = m * (sp.clone().detach().neg().add_scalar(1.0));
                sum = sum + sp;
            }
            rates.push(sum.div_scalar(STEPS as f64).unsqueeze_dim(1));
        }
        Tensor::cat(rates, 1)
    }
}

impl HasState for SpikingEncoder {
    fn visit_state<V: StateVisitor>(&mut self, at: &Prefix, v: &mut V) {
        self.fc.visit_state(&at.child("fc.0"), v);
        self.bn.visit_state(&at.child("fc.2"), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    fn vals(t: Tensor<2>) -> Vec<f32> {
        crate::to_vec(t)
    }

    /// The surrogate gradient against the hand-derived triangle `max(0, 2 − 4|u|)`, and the
    /// forward against the exact step function.
    #[test]
    fn surrogate_gradient_is_the_triangle() {
        let device = Device::flex().autodiff();
        let us = [-0.7f32, -0.5, -0.3, -0.1, 0.0, 0.05, 0.2, 0.45, 0.6, 1.5];
        let u = Tensor::<2>::from_floats([us], &device).require_grad();
        let y = spike(u.clone());
        let fwd = vals(y.clone());
        for (x, s) in us.iter().zip(&fwd) {
            assert_eq!(*s, if *x > 0.0 { 1.0 } else { 0.0 }, "H({x})");
        }
        let g = vals(u.grad(&y.sum().backward()).unwrap());
        for (x, gx) in us.iter().zip(&g) {
            let want = (2.0 - 4.0 * x.abs()).max(0.0);
            assert!((gx - want).abs() < 1e-6, "u {x}: grad {gx}, want {want}");
        }
    }

    /// A finite difference of the smooth part agrees with the autodiff surrogate gradient.
    #[test]
    fn surrogate_matches_a_finite_difference_of_its_antiderivative() {
        let device = Device::flex();
        let s = |u: f64| {
            let c = u.clamp(-0.5, 0.5);
            2.0 * c - 2.0 * c * c.abs()
        };
        for u in [-0.4, -0.2, 0.1, 0.3, 0.49] {
            let h = 1e-5;
            let fd = (s(u + h) - s(u - h)) / (2.0 * h);
            let ad = {
                let dev = device.clone().autodiff();
                let x = Tensor::<2>::from_floats([[u as f32]], &dev).require_grad();
                let y = spike(x.clone());
                vals(x.grad(&y.sum().backward()).unwrap())[0] as f64
            };
            assert!((fd - ad).abs() < 1e-3, "u {u}: fd {fd}, autodiff {ad}");
        }
    }

    /// LIF dynamics by hand: a constant current 0.8 charges m = 0.4, 0.6 (spike, reset), 0.4,
    /// 0.6 (spike)... → 7 spikes in 15 steps (steps 2, 4, …, 14).
    #[test]
    fn lif_dynamics_by_hand() {
        let device = Device::flex();
        let mut enc = SpikingEncoder::new(1, 1, &device);
        enc.fc.weight = Param::from_tensor(Tensor::from_floats([[1.0]], &device));
        enc.fc.bias = Some(Param::from_tensor(Tensor::from_floats([0.0], &device)));
        // Eval mode, running stats 0 / 1: BN is x/√(1+1e-5).
        let x = Tensor::<3>::from_floats([[[0.8], [0.8]]], &device);
        let y = crate::to_vec(enc.forward(x));
        // segment 0: 7 spikes; the membrane after step 15 (0.4, no spike) carries on:
        // segment 1 starts from 0.4 → 0.6 spike at step 1, then every second step → 8 spikes.
        let i = 0.8 / (1.0f32 + 1e-5).sqrt();
        let mut m = 0.0f32;
        let mut want = vec![];
        for _ in 0..2 {
            let mut n = 0;
            for _ in 0..STEPS {
                m += (i - m) / 2.0;
                if m - 0.5 > 0.0 {
                    n += 1;
                    m = 0.0;
                }
            }
            want.push(n as f32 / 15.0);
        }
        assert_eq!(want, vec![7.0 / 15.0, 8.0 / 15.0]);
        assert_eq!(y, want);
    }
}
