//! LayerNorm over the last axis on the CPU (`flex`) in training: one parallel pass forward and
//! one backward, instead of burn-autodiff's composition of generic operations.
//!
//! Why our own: burn-flex's own `layer_norm` is fused and parallel, but burn-autodiff has no
//! LayerNorm of its own, so training builds it from mean, subtract, multiply, sqrt, divide,
//! scale and shift — each a pass over the activation on one thread, forward and backward. The
//! default model normalises `[B·T, 49, 512]` twice per step (AVCA's `v_norm`), 64 MB each at
//! batch 64. Here rows are independent tasks (`[R, D]`, R = all leading axes); the backward
//! recomputes each row's statistics from the saved input. Other backends and evaluation keep
//! burn's `LayerNorm::forward` ([`norm`] chooses). Tested against burn's below, and through
//! the golden parity tests (tests/parity.rs).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::nn::LayerNorm;
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::nn::LAYER_NORM_EPS;
use crate::device::is_flex;
use crate::flex::{self, to_vec};

#[backend_extension(Flex, Autodiff)]
pub trait FusedLayerNorm: burn::backend::Backend {
    /// `x [R, D]`, `gamma`/`beta [D]` → each row normalised (biased variance), scaled, shifted.
    fn layer_norm_rows(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
}

/// `ln.forward(x)`, with this file's kernels when training on the CPU (`ln` built by
/// [`super::nn::layer_norm`], whose ε burn keeps private).
pub fn norm<const D: usize>(ln: &LayerNorm, x: Tensor<D>) -> Tensor<D> {
    let (device, beta) = (x.device(), ln.beta.as_ref());
    let (true, Some(beta)) = (device.is_autodiff() && is_flex(&device), beta) else {
        return ln.forward(x);
    };
    let dims = x.dims();
    let d = dims[D - 1];
    let y = <Dispatch as FusedLayerNorm>::layer_norm_rows(
        x.reshape([dims.iter().product::<usize>() / d.max(1), d])
            .into_dispatch(),
        ln.gamma.val().into_dispatch(),
        beta.val().into_dispatch(),
        LAYER_NORM_EPS,
    );
    Tensor::<2>::from_dispatch(y).reshape(dims)
}

/// Rows handed to one task.
const ROWS_PER_TASK: usize = 16;

/// Mean and 1/√(biased variance + eps) of a row (f64 sums). Eight partial sums side by side:
/// one running sum is a chain of dependent f64 additions (~4 cycles each), which made the
/// statistics cost more than the rest of the normalisation. Inlined always, so that a caller
/// built for AVX-512 (`cell_attention_flex.rs`) vectorises it with its own features.
#[inline(always)]
pub(super) fn row_stats(row: &[f32], eps: f64) -> (f32, f32) {
    let n = row.len() as f64;
    let mean = lane_sum(row, |v| v as f64) / n;
    let var = lane_sum(row, |v| (v as f64 - mean).powi(2)) / n;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

/// `Σ f(v)` over `row`, in eight partial sums added at the end.
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    const L: usize = 8;
    let mut acc = [0f64; L];
    let chunks = row.chunks_exact(L);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f64>() + tail
}

fn forward(x: &[f32], gamma: &[f32], beta: &[f32], eps: f64) -> Vec<f32> {
    let d = gamma.len();
    let mut y = flex::zeros(x.len());
    y.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .for_each(|(ys, xs)| {
            for (y, x) in ys.chunks_mut(d).zip(xs.chunks(d)) {
                let (mu, r) = row_stats(x, eps);
                for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                    *y = (x - mu) * r * g + b;
                }
            }
        });
    y
}

/// With x̂ = (x − μ)·r and g = dy·γ per row: dx = r·(g − mean(g) − x̂·mean(g·x̂));
/// dγ = Σ_rows dy·x̂, dβ = Σ_rows dy (partial sums per task, added in f64).
fn backward(x: &[f32], dy: &[f32], gamma: &[f32], eps: f64) -> [Vec<f32>; 3] {
    let d = gamma.len();
    let mut dx = flex::zeros(x.len());
    let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .zip(dy.par_chunks(d * ROWS_PER_TASK))
        .map(|((dxs, xs), dys)| {
            let (mut dg, mut db) = (vec![0f64; d], vec![0f64; d]);
            let mut xhat = vec![0f32; d];
            for ((dx, x), dy) in dxs.chunks_mut(d).zip(xs.chunks(d)).zip(dys.chunks(d)) {
                let (mu, r) = row_stats(x, eps);
                let (mut sum_g, mut sum_gx) = (0f64, 0f64);
                for k in 0..d {
                    xhat[k] = (x[k] - mu) * r;
                    let g = (dy[k] * gamma[k]) as f64;
                    sum_g += g;
                    sum_gx += g * xhat[k] as f64;
                    dg[k] += (dy[k] * xhat[k]) as f64;
                    db[k] += dy[k] as f64;
                }
                let (mean_g, mean_gx) = ((sum_g / d as f64) as f32, (sum_gx / d as f64) as f32);
                for k in 0..d {
                    dx[k] = r * (dy[k] * gamma[k] - mean_g - xhat[k] * mean_gx);
                }
            }
            (dg, db)
        })
        .collect();
    // The partials added in task order, each whole in turn (reading one column across ~2,000
    // of them, as this did before, was a cache miss per value on the main thread: 12 % of a
    // training step's single-threaded time). The same sums in the same order.
    let total = |pick: fn(&(Vec<f64>, Vec<f64>)) -> &Vec<f64>| -> Vec<f32> {
        let mut sum = vec![0f64; d];
        for p in &partials {
            sum.iter_mut().zip(pick(p)).for_each(|(s, v)| *s += v);
        }
        sum.into_iter().map(|v| v as f32).collect()
    };
    [dx, total(|p| &p.0), total(|p| &p.1)]
}

impl FusedLayerNorm for Flex {
    fn layer_norm_rows(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, eps: f64) -> FlexTensor {
        Flex::layer_norm(x, gamma, Some(beta), eps)
    }
}

#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    gamma: Vec<f32>,
    eps: f64,
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_g, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let Saved { x, gamma, eps } = ops.state;
        let shape = x.layout().shape().clone();
        let [dx, dg, db] = backward(flex::values(&x), flex::values(&dy), &gamma, eps);
        let d = gamma.len();
        for (node, grad) in [
            (node_x, flex::tensor(dx, shape)),
            (node_g, flex::tensor(dg, [d])),
            (node_b, flex::tensor(db, [d])),
        ] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// burn-autodiff's tensor type (its module is private; the alias names it).
type AutodiffTensor = FloatTensor<Autodiff<Flex>>;

impl<C: CheckpointStrategy> FusedLayerNorm for Autodiff<Flex, C> {
    fn layer_norm_rows(
        x: AutodiffTensor,
        gamma: AutodiffTensor,
        beta: AutodiffTensor,
        eps: f64,
    ) -> AutodiffTensor {
        let nodes = [x.node(), gamma.node(), beta.node()];
        let (g, b) = (to_vec(gamma.primitive()), to_vec(beta.primitive()));
        let x = x.into_primitive().to_contiguous();
        let out = flex::tensor(
            forward(flex::values(&x), &g, &b, eps),
            x.layout().shape().clone(),
        );
        match LayerNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(Saved { x, gamma: g, eps }, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::nn::layer_norm;
    use burn::module::Param;
    use burn::tensor::{Device, Distribution};

    fn max_rel_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    /// Output and the three gradients against burn's LayerNorm, on a non-contiguous input
    /// with a large mean (cancellation), random γ and β, and more rows than one task takes.
    #[test]
    fn matches_burns_layer_norm_forward_and_backward() {
        let device = Device::flex().autodiff();
        let mut ln = layer_norm(24, &device);
        let random = |mean| Tensor::<1>::random([24], Distribution::Normal(mean, 0.5), &device);
        ln.gamma = Param::from_tensor(random(1.0));
        ln.beta = Some(Param::from_tensor(random(0.0)));
        let x = Tensor::<3>::random([5, 24, 7], Distribution::Normal(3.0, 2.0), &device)
            .swap_dims(1, 2)
            .require_grad();
        let probe = Tensor::<3>::random([5, 7, 24], Distribution::Normal(0.0, 1.0), &device);
        let grads_of = |y: Tensor<3>| {
            let g = (y * probe.clone()).sum().backward();
            let beta = ln.beta.as_ref().unwrap().val();
            [
                x.grad(&g).unwrap(),
                ln.gamma.val().grad(&g).unwrap().unsqueeze(),
                beta.grad(&g).unwrap().unsqueeze(),
            ]
        };
        let (ours, theirs) = (norm(&ln, x.clone()), ln.forward(x.clone()));
        assert!(max_rel_diff(ours.clone(), theirs.clone()) < 1e-5);
        for (k, (a, b)) in grads_of(ours).into_iter().zip(grads_of(theirs)).enumerate() {
            let d = max_rel_diff(a.inner(), b.inner());
            assert!(d < 1e-4, "gradient {k} differs by {d}");
        }
    }
}
