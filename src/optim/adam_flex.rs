//! One Adam update of a parameter on the CPU (`flex`) as one parallel pass over its flat
//! buffers: burn composes it from twelve single-threaded passes (scale, add, square, sqrt,
//! divide, ...) per parameter, 9.3 M parameters in CACE-Net. The same f32 operations in the
//! same order (scalars rounded to f32 as burn rounds them), so the same bits as the
//! composition in `optim.rs`, which other devices keep.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::flex;

/// The step's scalars, each rounded to f32 as burn's scalar operations round them.
#[derive(Debug, Clone, Copy)]
pub struct AdamScalars {
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// √(1 − β₂ᵗ).
    pub sqrt_bias2: f32,
    pub eps: f32,
    /// lr / (1 − β₁ᵗ).
    pub step_size: f32,
    /// lr · weight decay (decoupled); 0 for Adam.
    pub decay: f32,
}

#[backend_extension(Flex)]
pub trait FusedAdam: burn::backend::Backend {
    /// `(p', m', v')` from `p`, `g`, `m`, `v` `[n]`.
    #[allow(clippy::type_complexity)]
    fn adam_update(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        s: AdamScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// `(p', m', v')` for flat `p`, `g`, `m`, `v` on the CPU device.
pub fn adam_update(
    p: Tensor<1>,
    g: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    s: AdamScalars,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let (p, m, v) = <Dispatch as FusedAdam>::adam_update(
        p.into_dispatch(),
        g.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        s,
    );
    (
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// Elements per task.
const CHUNK: usize = 1 << 14;

impl FusedAdam for Flex {
    fn adam_update(
        p: FlexTensor,
        g: FlexTensor,
        m: FlexTensor,
        v: FlexTensor,
        s: AdamScalars,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let [p, g, m, v] = [p, g, m, v].map(|t| t.to_contiguous());
        let [p, g, m, v] = [&p, &g, &m, &v].map(flex::values);
        let n = p.len();
        let (mut new_p, mut new_m, mut new_v) = (flex::zeros(n), flex::zeros(n), flex::zeros(n));
        new_p
            .par_chunks_mut(CHUNK)
            .zip(new_m.par_chunks_mut(CHUNK))
            .zip(new_v.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, ((np, nm), nv))| {
                let at = c * CHUNK;
                for i in 0..np.len() {
                    let (p, g, m, v) = (p[at + i], g[at + i], m[at + i], v[at + i]);
                    let m = m * s.beta1 + g * s.one_minus_beta1;
                    let v = v * s.beta2 + g * g * s.one_minus_beta2;
                    let denom = v.sqrt() / s.sqrt_bias2 + s.eps;
                    let mut step = m / denom * s.step_size;
                    if s.decay != 0.0 {
                        step += p * s.decay;
                    }
                    (np[i], nm[i], nv[i]) = (p - step, m, v);
                }
            });
        let t = |x| flex::tensor(x, [n]);
        (t(new_p), t(new_m), t(new_v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// optim.rs's composition of the update from burn's operations.
    fn composed(
        (p, g, m, v): (Tensor<1>, Tensor<1>, Tensor<1>, Tensor<1>),
        (beta1, beta2, eps, lr, wd, t): (f64, f64, f64, f64, f64, i32),
    ) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
        let m = m.mul_scalar(beta1) + g.clone().mul_scalar(1.0 - beta1);
        let v = v.mul_scalar(beta2) + g.square().mul_scalar(1.0 - beta2);
        let (bias1, bias2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
        let denom = v.clone().sqrt().div_scalar(bias2.sqrt()).add_scalar(eps);
        let step = (m.clone() / denom).mul_scalar(lr / bias1);
        let step = if wd == 0.0 {
            step
        } else {
            step + p.clone().mul_scalar(lr * wd)
        };
        (p - step, m, v)
    }

    #[test]
    fn is_burns_composition_bit_for_bit_over_steps() {
        let dev = Device::flex();
        let n = 3 * CHUNK + 17; // several tasks and a ragged end
        let r = |s: f64| Tensor::<1>::random([n], Distribution::Normal(0.0, s), &dev);
        for wd in [0.0, 0.05] {
            let (beta1, beta2, eps, lr): (f64, f64, f64, f64) = (0.9, 0.999, 1e-8, 7e-4);
            let p0 = r(1.0);
            let (mut a, mut b) = ((p0.clone(), r(0.0), r(0.0)), (p0, r(0.0), r(0.0)));
            for t in 1..=3 {
                let g = r(0.1);
                let s = AdamScalars {
                    beta1: beta1 as f32,
                    one_minus_beta1: (1.0 - beta1) as f32,
                    beta2: beta2 as f32,
                    one_minus_beta2: (1.0 - beta2) as f32,
                    sqrt_bias2: (1.0 - beta2.powi(t)).sqrt() as f32,
                    eps: eps as f32,
                    step_size: (lr / (1.0 - beta1.powi(t))) as f32,
                    decay: (lr * wd) as f32,
                };
                a = adam_update(a.0, g.clone(), a.1, a.2, s);
                b = composed((b.0, g, b.1, b.2), (beta1, beta2, eps, lr, wd, t));
                for (x, y) in [(&a.0, &b.0), (&a.1, &b.1), (&a.2, &b.2)] {
                    assert_eq!(
                        crate::to_vec(x.clone()),
                        crate::to_vec(y.clone()),
                        "wd {wd}, t {t}"
                    );
                }
            }
        }
    }
}
