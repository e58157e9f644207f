//! BatchNorm on the CPU (`flex`) as two parallel passes forward and two backward, instead of
//! burn's composed `batch_norm_train` (REFERENCE §6.3's encoders carry 53 of them).
//!
//! Why our own: burn's default builds training BatchNorm from generic tensor operations — two
//! `swap_dims` copies for the statistics, then subtract, divide, multiply and add over the whole
//! activation, and as many again in its backward — and burn-flex runs each element-wise
//! operation on one thread. A profile of a ResNet-50 fine-tuning step (20 images) had a fifth
//! of the main thread's time in those passes. Here each pass is parallel over channels (the
//! statistics, with f64 sums) or over `[n, c]` rows (the affine map), through burn's backend
//! extensions: [`FusedBatchNorm`] for `Flex` and, with a hand-written backward, for
//! `Autodiff<Flex>`. Other backends keep burn's operation ([`super::batch_norm::BatchNorm`]
//! chooses). Tested against burn's `batch_norm_train` forward and backward below, and through
//! the fine-tuning golden test (tests/finetune_golden.rs).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, ExtensionType, Flex, backend_extension};
use burn::tensor::Tensor;

use crate::flex::{self, to_vec};
use burn_flex::FlexTensor;
use rayon::prelude::*;
use std::borrow::Cow;

/// The training forward's results: the output and the batch statistics (mean, biased
/// variance; `[C]`, not differentiable) for the running statistics.
#[derive(ExtensionType)]
pub struct BatchStats<B: burn::backend::Backend> {
    pub output: FloatTensor<B>,
    pub mean: FloatTensor<B>,
    pub variance: FloatTensor<B>,
}

#[backend_extension(Flex, Autodiff)]
pub trait FusedBatchNorm: burn::backend::Backend {
    /// `x [N, C, L]`, `weight`/`bias [C]` → normalised with the batch statistics.
    fn batch_norm_batch_stats(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
        relu: bool,
    ) -> BatchStats<Self>;

    /// `x [N, C, L]` → `x · scale[c] + shift[c]` (evaluation-mode BatchNorm, folded).
    fn channel_affine(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self>;
}

/// `[N, C, ...]` → `[N, C, L]`.
fn as_ncl<const D: usize>(x: Tensor<D>) -> Tensor<3> {
    let dims = x.dims();
    x.reshape([dims[0], dims[1], dims[2..].iter().product()])
}

/// Training BatchNorm over `x [N, C, ...]`, followed by a ReLU when `relu`:
/// (output, batch mean, biased batch variance).
pub fn batch_norm_batch_stats<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
    relu: bool,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let dims = x.dims();
    let out = <Dispatch as FusedBatchNorm>::batch_norm_batch_stats(
        as_ncl(x).into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        eps,
        relu,
    );
    (
        Tensor::<3>::from_dispatch(out.output).reshape(dims),
        Tensor::from_dispatch(out.mean),
        Tensor::from_dispatch(out.variance),
    )
}

/// `x [N, C, ...] · scale[c] + shift[c]` (then a ReLU when `relu`) in one parallel pass.
pub fn channel_affine<const D: usize>(
    x: Tensor<D>,
    scale: Tensor<1>,
    shift: Tensor<1>,
    relu: bool,
) -> Tensor<D> {
    let dims = x.dims();
    let y = <Dispatch as FusedBatchNorm>::channel_affine(
        as_ncl(x).into_dispatch(),
        scale.into_dispatch(),
        shift.into_dispatch(),
        relu,
    );
    Tensor::<3>::from_dispatch(y).reshape(dims)
}

/// `[N, C, L]`, the shape every kernel here works on.
fn ncl(t: &FlexTensor) -> [usize; 3] {
    t.layout().shape().dims::<3>()
}

/// Σ over i < len of f(i), in 16 f32 lanes (vectorised), added up in f64.
fn lane_sum(len: usize, f: impl Fn(usize) -> f32) -> f64 {
    let mut acc = [0f32; 16];
    let full = len / 16 * 16;
    for start in (0..full).step_by(16) {
        for (k, a) in acc.iter_mut().enumerate() {
            *a += f(start + k);
        }
    }
    let tail: f64 = (full..len).map(|i| f(i) as f64).sum();
    acc.iter().map(|&a| a as f64).sum::<f64>() + tail
}

/// Per channel c: Σ over the images n of `f(c, start of row [n, c, :])`, parallel over c.
fn channel_sums([n, c, l]: [usize; 3], f: impl Fn(usize, usize) -> f64 + Sync) -> Vec<f64> {
    (0..c)
        .into_par_iter()
        .map(|ch| (0..n).map(|i| f(ch, (i * c + ch) * l)).sum())
        .collect()
}

/// `out[n, c, :] = x[n, c, :] · a[c] + b[c]` (+ `d[n, c, :] · e[c]` when given; then
/// max(0, ·) when `relu`), parallel over rows.
fn affine_rows(
    x: &[f32],
    l: usize,
    a: &[f32],
    b: &[f32],
    extra: Option<(&[f32], &[f32])>,
    relu: bool,
) -> Vec<f32> {
    let c = a.len();
    let mut out = crate::flex::zeros(x.len());
    out.par_chunks_mut(l.max(1))
        .enumerate()
        .for_each(|(row, o)| {
            let ch = row % c;
            let xs = &x[row * l..][..l];
            match extra {
                None if relu => o
                    .iter_mut()
                    .zip(xs)
                    .for_each(|(o, &v)| *o = (v * a[ch] + b[ch]).max(0.0)),
                None => o
                    .iter_mut()
                    .zip(xs)
                    .for_each(|(o, &v)| *o = v * a[ch] + b[ch]),
                Some((d, e)) => {
                    let ds = &d[row * l..][..l];
                    for ((o, &v), &g) in o.iter_mut().zip(xs).zip(ds) {
                        *o = g * e[ch] + v * a[ch] + b[ch];
                    }
                }
            }
        });
    out
}

/// Mean and biased variance per channel (two passes, f64 sums).
fn statistics(x: &[f32], dims: [usize; 3]) -> (Vec<f64>, Vec<f64>) {
    let m = (dims[0] * dims[2]) as f64;
    let l = dims[2];
    let mean: Vec<f64> = channel_sums(dims, |_, at| lane_sum(l, |i| x[at + i]))
        .into_iter()
        .map(|s| s / m)
        .collect();
    let var = channel_sums(dims, |ch, at| {
        let mu = mean[ch] as f32;
        lane_sum(l, |i| (x[at + i] - mu) * (x[at + i] - mu))
    });
    (mean, var.into_iter().map(|s| s / m).collect())
}

/// The forward on flex tensors: the output and what the backward needs.
fn forward(
    x: &FlexTensor,
    weight: &[f32],
    bias: &[f32],
    eps: f64,
    relu: bool,
) -> (FlexTensor, Saved) {
    let x = x.to_contiguous();
    let (xs, dims) = (flex::values(&x), ncl(&x));
    let (mean, var) = statistics(xs, dims);
    let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let scale: Vec<f32> = (0..dims[1])
        .map(|c| (weight[c] as f64 * inv_std[c]) as f32)
        .collect();
    let shift: Vec<f32> = (0..dims[1])
        .map(|c| (bias[c] as f64 - mean[c] * scale[c] as f64) as f32)
        .collect();
    let out = flex::tensor(affine_rows(xs, dims[2], &scale, &shift, None, relu), dims);
    let saved = Saved {
        x,
        weight: weight.to_vec(),
        mean,
        var,
        inv_std,
        scale,
        shift,
        relu,
    };
    (out, saved)
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

impl FusedBatchNorm for Flex {
    fn batch_norm_batch_stats(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        eps: f64,
        relu: bool,
    ) -> BatchStats<Self> {
        let (output, saved) = forward(&x, &to_vec(&weight), &to_vec(&bias), eps, relu);
        let [mean, variance] = saved.statistics();
        BatchStats {
            output,
            mean,
            variance,
        }
    }

    fn channel_affine(
        x: FlexTensor,
        scale: FlexTensor,
        shift: FlexTensor,
        relu: bool,
    ) -> FlexTensor {
        let x = x.to_contiguous();
        let (scale, shift) = (to_vec(&scale), to_vec(&shift));
        let y = affine_rows(flex::values(&x), ncl(&x)[2], &scale, &shift, None, relu);
        flex::tensor(y, ncl(&x))
    }
}

/// What the backward needs: the input, the weight, the batch statistics, and the affine map
/// the forward applied (to find where a following ReLU let the gradient through).
#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    weight: Vec<f32>,
    mean: Vec<f64>,
    var: Vec<f64>,
    inv_std: Vec<f64>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
}

impl Saved {
    /// Batch mean and biased variance as `[C]` tensors.
    fn statistics(&self) -> [FlexTensor; 2] {
        let c = self.mean.len();
        [
            flex::tensor(f32s(&self.mean), [c]),
            flex::tensor(f32s(&self.var), [c]),
        ]
    }

    /// The output gradient where the forward's ReLU passed it (all of it without ReLU).
    fn through_relu<'a>(&self, x: &[f32], dy: &'a [f32], l: usize) -> Cow<'a, [f32]> {
        if !self.relu {
            return dy.into();
        }
        let c = self.scale.len();
        let mut out = dy.to_vec();
        out.par_chunks_mut(l.max(1))
            .enumerate()
            .for_each(|(row, g)| {
                let (a, b) = (self.scale[row % c], self.shift[row % c]);
                for (g, &v) in g.iter_mut().zip(&x[row * l..][..l]) {
                    if v * a + b <= 0.0 {
                        *g = 0.0;
                    }
                }
            });
        out.into()
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = Saved;

    /// With x̂ = (x − μ)·s, a = γ·s and M = N·L per channel: dβ = Σ dy, dγ = Σ dy·x̂,
    /// dx = a·(dy − dβ/M − x̂·dγ/M) = a·dy + k·x + k₀, one pass after the sums.
    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let saved = ops.state;
        let dy = dy.to_contiguous();
        let (xs, dims) = (flex::values(&saved.x), ncl(&saved.x));
        let dys = saved.through_relu(xs, flex::values(&dy), dims[2]);
        let (weight, mean, inv_std) = (&saved.weight, &saved.mean, &saved.inv_std);
        let (c, l) = (dims[1], dims[2]);
        let m = (dims[0] * l) as f64;
        let d_beta = channel_sums(dims, |_, at| lane_sum(l, |i| dys[at + i]));
        let sum_dy_x = channel_sums(dims, |_, at| lane_sum(l, |i| dys[at + i] * xs[at + i]));
        let d_gamma: Vec<f64> = (0..c)
            .map(|k| (sum_dy_x[k] - mean[k] * d_beta[k]) * inv_std[k])
            .collect();
        if let Some(node) = node_x {
            let a: Vec<f64> = (0..c).map(|k| weight[k] as f64 * inv_std[k]).collect();
            let kx: Vec<f32> = (0..c)
                .map(|k| (-a[k] * inv_std[k] * d_gamma[k] / m) as f32)
                .collect();
            let k0: Vec<f32> = (0..c)
                .map(|k| {
                    (-a[k] * d_beta[k] / m + a[k] * inv_std[k] * mean[k] * d_gamma[k] / m) as f32
                })
                .collect();
            let dx = affine_rows(xs, l, &kx, &k0, Some((&dys, &f32s(&a))), false);
            grads.register::<Flex>(node.id, flex::tensor(dx, dims));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, flex::tensor(f32s(&d_gamma), [c]));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, flex::tensor(f32s(&d_beta), [c]));
        }
    }
}

/// burn-autodiff's tensor type (its module is private; the alias names it).
type AutodiffTensor = FloatTensor<Autodiff<Flex>>;

impl<C: CheckpointStrategy> FusedBatchNorm for Autodiff<Flex, C> {
    fn batch_norm_batch_stats(
        x: AutodiffTensor,
        weight: AutodiffTensor,
        bias: AutodiffTensor,
        eps: f64,
        relu: bool,
    ) -> BatchStats<Self> {
        let (w, b) = (to_vec(weight.primitive()), to_vec(bias.primitive()));
        let (output, saved) = forward(x.primitive(), &w, &b, eps, relu);
        let [mean, variance] = saved.statistics().map(AutodiffTensor::new);
        let output = match BatchNormBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(saved, output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        BatchStats {
            output,
            mean,
            variance,
        }
    }

    fn channel_affine(
        x: AutodiffTensor,
        scale: AutodiffTensor,
        shift: AutodiffTensor,
        relu: bool,
    ) -> AutodiffTensor {
        // Evaluation only (not differentiable): the result is a constant.
        AutodiffTensor::new(Flex::channel_affine(
            x.into_primitive(),
            scale.into_primitive(),
            shift.into_primitive(),
            relu,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::relu;
    use burn::tensor::module::{batch_norm, batch_norm_train};
    use burn::tensor::{Device, Distribution};

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// Forward, statistics and all three gradients against burn's composed BatchNorm (and
    /// ReLU), on an input with a large mean (cancellation) and a non-contiguous view.
    #[test]
    fn matches_burns_batch_norm_forward_and_backward() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random([3, 5, 6, 7], Distribution::Normal(4.0, 2.0), &device)
            .swap_dims(2, 3)
            .require_grad();
        let w = Tensor::<1>::random([5], Distribution::Normal(1.0, 0.5), &device).require_grad();
        let b = Tensor::<1>::random([5], Distribution::Normal(0.0, 0.5), &device).require_grad();
        let probe = Tensor::<4>::random([3, 5, 7, 6], Distribution::Normal(0.0, 1.0), &device);
        let grads_of = |y: Tensor<4>| {
            let g = (y * probe.clone()).sum().backward();
            [
                x.grad(&g).unwrap(),
                w.grad(&g).unwrap().unsqueeze(),
                b.grad(&g).unwrap().unsqueeze(),
            ]
        };
        for with_relu in [false, true] {
            let (ours, mean, var) =
                batch_norm_batch_stats(x.clone(), w.clone(), b.clone(), 1e-5, with_relu);
            let theirs = batch_norm_train(x.clone(), w.clone(), b.clone(), 1e-5);
            let out = if with_relu {
                relu(theirs.output)
            } else {
                theirs.output
            };
            let zeros = out.clone().equal_elem(0.0).int().sum().into_scalar::<i64>();
            assert!(!with_relu || zeros > 100, "the ReLU cuts ({zeros} zeros)");
            assert!(max_diff(ours.clone(), out.clone()) < 1e-5);
            assert!(max_diff(mean, theirs.mean) < 1e-5);
            assert!(max_diff(var, theirs.variance) < 1e-4);
            let (g_ours, g_theirs) = (grads_of(ours), grads_of(out));
            for (k, (a, b)) in g_ours.into_iter().zip(g_theirs).enumerate() {
                let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
                let d = max_diff(a.inner(), b.inner()) / scale;
                assert!(d < 1e-4, "gradient {k} differs by {d} (relu {with_relu})");
            }
        }
    }

    #[test]
    fn channel_affine_is_evaluation_batch_norm() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 4, 3, 5], Distribution::Normal(1.0, 2.0), &device);
        let [w, b, m] = [0.5, 0.0, 1.0]
            .map(|mu| Tensor::<1>::random([4], Distribution::Normal(mu, 1.0), &device));
        let v = Tensor::<1>::random([4], Distribution::Uniform(0.5, 2.0), &device);
        let scale = w.clone() / v.clone().add_scalar(1e-5).sqrt();
        let shift = b.clone() - m.clone() * scale.clone();
        let theirs = batch_norm(x.clone(), w, b, m, v, 1e-5);
        let ours = channel_affine(x.clone(), scale.clone(), shift.clone(), false);
        assert!(max_diff(ours, theirs.clone()) < 1e-5);
        let ours = channel_affine(x, scale, shift, true);
        assert!(max_diff(ours, relu(theirs)) < 1e-5);
    }
}
