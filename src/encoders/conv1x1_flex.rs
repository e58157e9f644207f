//! The encoders' 1×1 convolutions on the CPU (`flex`), forward and backward: per image one
//! product `W [O, C] × x_i [C, L]` (L = pixels), ResNet-50's bottleneck ends and shortcuts.
//!
//! Why our own: as burn's `matmul` of the weight broadcast over the images they ran as
//! burn-flex's batched product, which allocates every output as zeroed bytes and copies it to a
//! realigned buffer (a second pass over fresh pages: in a profile of the fine-tuning step, 15 %
//! of the samples were page faults in that copy), and whose backward forms the weight gradient
//! image by image (`[N, O, C]`) before summing it. Here gemm writes each output once
//! ([`strided::products`]) and the weight gradient is summed in one buffer per thread.
//! Other backends keep burn's `matmul` ([`conv2d`] chooses).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::tensor::{Tensor, s};
use burn_flex::FlexTensor;
use gemm::Parallelism;
use rayon::prelude::*;

use crate::device::is_flex;
use crate::flex;
use crate::strided::{self, Mat, View};

#[backend_extension(Flex, Autodiff)]
pub trait Conv1x1: burn::backend::Backend {
    /// `weight [O, C]`, `x [N, C, L]` → `[N, O, L]`.
    fn conv1x1(weight: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `y[i] = weight · x[i]` for `weight [O, C]`, `x [N, C, L]`.
pub fn conv1x1(weight: Tensor<2>, x: Tensor<3>) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as Conv1x1>::conv1x1(
        weight.into_dispatch(),
        x.into_dispatch(),
    ))
}

/// An unpadded 1×1 convolution of images, `x [N, C, H, W]`, `weight [O, C, 1, 1]`, no bias:
/// [`conv1x1`] over every `stride`-th pixel on the CPU, burn's `matmul` of the weight broadcast
/// over the images elsewhere.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, stride: usize) -> Tensor<4> {
    let [o, c, ..] = weight.dims();
    let x = if stride > 1 {
        let [_, _, h, w] = x.dims();
        x.slice(s![.., .., 0..h; stride, 0..w; stride])
    } else {
        x
    };
    let [b, _, h, w] = x.dims();
    let x = x.reshape([b, c, h * w]);
    let y = if is_flex(&x.device()) {
        conv1x1(weight.reshape([o, c]), x)
    } else {
        weight.reshape([1, o, c]).matmul(x)
    };
    y.reshape([b, o, h, w])
}

/// `[N, O, C, L]` of a weight `[O, C]` and an input `[N, C, L]`.
fn dims(weight: &FlexTensor, x: &FlexTensor) -> [usize; 4] {
    let [o, c] = weight.layout().shape().dims::<2>();
    let [n, cx, l] = x.layout().shape().dims::<3>();
    assert_eq!(
        c, cx,
        "conv1x1: weight [{o}, {c}] against input channels {cx}"
    );
    [n, o, c, l]
}

/// `y [N, O, L]`; `weight` and `x` contiguous.
fn forward(weight: &FlexTensor, x: &FlexTensor) -> FlexTensor {
    let [n, o, c, l] = dims(weight, x);
    let (w, xs) = (flex::values(weight), flex::values(x));
    let par = strided::parallelism([o, l, c]);
    let y = strided::products(
        n,
        [o, l, c],
        |i| (View::new(w, c, 1), View::new(&xs[i * c * l..], l, 1)),
        par,
    );
    flex::tensor(y, [n, o, l])
}

/// `dx [N, C, L]`: `Wᵀ · dy[i]` per image.
fn input_grad(weight: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let [o, c] = weight.layout().shape().dims::<2>();
    let [n, _, l] = dy.layout().shape().dims::<3>();
    let (w, dys) = (flex::values(weight), flex::values(dy));
    let par = strided::parallelism([c, l, o]);
    // Wᵀ's element (r, k) is W[k, r]: row stride 1, column stride C.
    let dx = strided::products(
        n,
        [c, l, o],
        |i| (View::new(w, 1, c), View::new(&dys[i * o * l..], l, 1)),
        par,
    );
    flex::tensor(dx, [n, c, l])
}

/// `dW [O, C] = Σᵢ dy[i] · x[i]ᵀ`: the images split in one run per thread, each summed into its
/// own buffer by gemm, the runs' sums then added in order (deterministic for a thread count).
fn weight_grad(x: &FlexTensor, dy: &FlexTensor) -> FlexTensor {
    let [n, c, l] = x.layout().shape().dims::<3>();
    let o = dy.layout().shape()[1];
    let (xs, dys) = (flex::values(x), flex::values(dy));
    let runs = rayon::current_num_threads().clamp(1, n.max(1));
    let per = n.div_ceil(runs).max(1);
    // One run: gemm's own threads; several: one thread each.
    let par = if runs == 1 {
        strided::parallelism([o, c, l])
    } else {
        Parallelism::None
    };
    let sums: Vec<Vec<f32>> = (0..n)
        .into_par_iter()
        .step_by(per)
        .map(|i0| {
            let mut dw = vec![0f32; o * c];
            for i in i0..(i0 + per).min(n) {
                // x[i]ᵀ's element (p, k) is x[i][k, p]: row stride 1, column stride L.
                let (dy_i, x_t) = (
                    View::new(&dys[i * o * l..], l, 1),
                    View::new(&xs[i * c * l..], 1, l),
                );
                strided::gemm_into(Mat::new(&mut dw, c, 1), dy_i, x_t, [o, c, l], i > i0, par);
            }
            dw
        })
        .collect();
    let mut sums = sums.into_iter();
    let mut dw = sums.next().unwrap_or_else(|| vec![0f32; o * c]);
    for s in sums {
        dw.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
    }
    flex::tensor(dw, [o, c])
}

impl Conv1x1 for Flex {
    fn conv1x1(weight: FlexTensor, x: FlexTensor) -> FlexTensor {
        forward(&weight.to_contiguous(), &x.to_contiguous())
    }
}

/// The backward keeps the weight and the input, as burn's matmul does.
#[derive(Debug)]
struct Conv1x1Backward;

impl Backward<Flex, 2> for Conv1x1Backward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_w, node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (weight, x) = ops.state;
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, input_grad(&weight, &dy));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, weight_grad(&x, &dy));
        }
    }
}

impl<C: CheckpointStrategy> Conv1x1 for Autodiff<Flex, C> {
    fn conv1x1(weight: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [weight.node(), x.node()];
        let (w, x) = (
            weight.into_primitive().to_contiguous(),
            x.into_primitive().to_contiguous(),
        );
        let out = forward(&w, &x);
        match Conv1x1Backward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((w, x), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// Largest difference between `a` and `b` relative to the largest magnitude of `b` (≥ 1).
    fn rel_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let (a, b) = (crate::to_vec(a), crate::to_vec(b));
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// Output and both gradients against burn's broadcast `matmul` (what the backbone ran
    /// before), through autodiff, for: many images (one gemm thread each, weight-gradient
    /// runs per thread), one image (gemm's threads), an odd count that leaves a short last run,
    /// and ResNet's widening 64 → 256 shape in small. f32 sums in another order: the
    /// tolerance is 1e-5 of the largest magnitude (products of ≤ 300 terms of size ~1).
    #[test]
    fn matches_burns_broadcast_matmul_and_its_gradients() {
        let device = Device::flex().autodiff();
        device.seed(3);
        for [n, o, c, l] in [
            [20, 24, 16, 49],
            [1, 96, 80, 300],
            [7, 8, 12, 33],
            [5, 256, 64, 56],
        ] {
            let w =
                Tensor::<2>::random([o, c], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let x = Tensor::<3>::random([n, c, l], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let upstream = Tensor::<3>::random([n, o, l], Distribution::Normal(0.0, 1.0), &device);
            let (w2, x2) = (
                w.clone().detach().require_grad(),
                x.clone().detach().require_grad(),
            );

            let ours = conv1x1(w.clone(), x.clone());
            let reference = w2.clone().reshape([1, o, c]).matmul(x2.clone());
            assert!(
                rel_diff(ours.clone(), reference.clone()) < 1e-5,
                "output {n}x{o}x{c}x{l}"
            );

            let g = (ours * upstream.clone()).sum().backward();
            let g2 = (reference * upstream).sum().backward();
            let (dw, dw2) = (w.grad(&g).unwrap(), w2.grad(&g2).unwrap());
            let (dx, dx2) = (x.grad(&g).unwrap(), x2.grad(&g2).unwrap());
            assert!(rel_diff(dw, dw2) < 1e-5, "weight gradient {n}x{o}x{c}x{l}");
            assert!(rel_diff(dx, dx2) < 1e-5, "input gradient {n}x{o}x{c}x{l}");
        }
    }

    /// Without autodiff (evaluation, extraction) the same values as with it.
    #[test]
    fn inference_is_the_training_forward() {
        let device = Device::flex();
        device.seed(4);
        let w = Tensor::<2>::random([6, 5], Distribution::Normal(0.0, 1.0), &device);
        let x = Tensor::<3>::random([3, 5, 10], Distribution::Normal(0.0, 1.0), &device);
        let ours = crate::to_vec(conv1x1(w.clone(), x.clone()));
        let reference = crate::to_vec(w.reshape([1, 6, 5]).matmul(x));
        assert_eq!(
            ours, reference,
            "one gemm call per image, as burn-flex makes"
        );
    }
}
