//! The linear layers on the CPU device, `x·W + b` in f32 or bf16, with their backward: a
//! backend extension for `Flex` and `Autodiff<Flex>` (as `model/dropout.rs`). The bias is the
//! product's starting value (burn adds it in a single-threaded pass over the output, and sums
//! its gradient in another); the backward's two products (`dx = dy·Wᵀ`, `dW = xᵀ·dy`) are in
//! the same precision, read through transposed views (no copy).
//!
//! f32 calls the gemm crate as burn-flex does (same kernels, same numbers), but writes into a
//! fresh `Vec<f32>`: burn-flex 0.22.1 allocates a product's output as zeroed bytes and then
//! copies them to a realigned buffer (`FlexTensor::empty` → `Bytes::from_bytes_vec`), two passes
//! over the output on the calling thread while the other core waits — 64 MB each for AVCA's
//! products at batch 64, about twenty of them in a training step.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::Precision;
use super::gemm_bf16::{self, View};
use crate::{flex, strided};

#[backend_extension(Flex, Autodiff)]
pub trait LinearFlex: burn::backend::Backend {
    /// `x [m, k] · w [k, n] + b [n]` (on every row), f32 sums; bf16 operands when `bf16`.
    fn linear_flex(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        bf16: bool,
    ) -> FloatTensor<Self>;
}

/// `x [m, k] · w [k, n] + b` (2-d tensors on the CPU device, any strides; no bias: zeros) in
/// `precision`; differentiable.
pub fn linear(x: Tensor<2>, w: Tensor<2>, b: Option<Tensor<1>>, precision: Precision) -> Tensor<2> {
    let b = b.unwrap_or_else(|| Tensor::zeros([w.dims()[1]], &w.device()));
    let bf16 = precision == Precision::Bf16;
    let y = <Dispatch as LinearFlex>::linear_flex(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
        bf16,
    );
    Tensor::from_dispatch(y)
}

/// The strided view of a 2-d tensor with non-negative strides.
fn view(t: &FlexTensor) -> View<'_> {
    let layout = t.layout();
    let (rows, cols, rs, cs) = layout.as_2d_strides().expect("linear: a 2-d tensor");
    View {
        data: &t.storage::<f32>()[layout.start_offset()..],
        rows,
        cols,
        rs: rs as usize,
        cs: cs as usize,
    }
}

/// `op(a) · op(b) (+ bias on every row)` where `op` transposes when its flag is set.
fn product(
    (a, ta): (&FlexTensor, bool),
    (b, tb): (&FlexTensor, bool),
    bias: Option<&FlexTensor>,
    bf16: bool,
) -> FlexTensor {
    let (a, b) = (flex::non_negative_strides(a), flex::non_negative_strides(b));
    let (va, vb) = (view(&a), view(&b));
    let va = if ta { va.t() } else { va };
    let vb = if tb { vb.t() } else { vb };
    let (m, n) = (va.rows, vb.cols);
    let bias = bias.map(|t| t.to_contiguous());
    let bias = bias.as_ref().map(flex::values);
    let c = if bf16 {
        gemm_bf16::matmul(va, vb, bias)
    } else {
        gemm_f32(va, vb, bias)
    };
    flex::tensor(c, [m, n])
}

/// `A·B (+ bias)` in f32 by the gemm crate, with burn-flex's parallelism rule
/// ([`strided::parallelism`]): with a bias the output starts as its rows (`bias + A·B`, rounded
/// once, as burn's `A·B + bias`); without one the product fills a new vector unread.
fn gemm_f32(a: View, b: View, bias: Option<&[f32]>) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul: inner dimensions");
    let (sa, sb) = (
        strided::View::new(a.data, a.rs, a.cs),
        strided::View::new(b.data, b.rs, b.cs),
    );
    let Some(bias) = bias else {
        return strided::product(sa, sb, [m, n, k]);
    };
    let mut c = flex::rows(m, n, Some(bias));
    if m * n > 0 && k > 0 {
        strided::gemm_into(
            strided::Mat::new(&mut c, n, 1),
            sa,
            sb,
            [m, n, k],
            true,
            strided::parallelism([m, n, k]),
        );
    }
    c
}

/// Column sums of `dy [m, n]`: the bias gradient (f64 partial sums per task of rows).
fn column_sums(dy: &FlexTensor) -> FlexTensor {
    let dy = dy.to_contiguous();
    let n = dy.layout().shape()[1];
    let rows = flex::values(&dy);
    let sums = rows
        .par_chunks(n * 256)
        .map(|chunk| {
            let mut s = vec![0f64; n];
            for row in chunk.chunks(n) {
                s.iter_mut().zip(row).for_each(|(s, &x)| *s += x as f64);
            }
            s
        })
        .reduce(
            || vec![0f64; n],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                a
            },
        );
    flex::tensor(sums.into_iter().map(|s| s as f32).collect(), [n])
}

impl LinearFlex for Flex {
    fn linear_flex(x: FlexTensor, w: FlexTensor, b: FlexTensor, bf16: bool) -> FlexTensor {
        product((&x, false), (&w, false), Some(&b), bf16)
    }
}

/// The backward keeps `x` and `w`, as burn's matmul does.
#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = (FlexTensor, FlexTensor, bool);

    fn backward(
        self,
        ops: Ops<(FlexTensor, FlexTensor, bool), 3>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, w, bf16) = ops.state;
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, product((&dy, false), (&w, true), None, bf16));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, product((&x, true), (&dy, false), None, bf16));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, column_sums(&dy));
        }
    }
}

impl<C: CheckpointStrategy> LinearFlex for Autodiff<Flex, C> {
    fn linear_flex(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        bf16: bool,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), w.node(), b.node()];
        let (x, w, b) = (x.into_primitive(), w.into_primitive(), b.into_primitive());
        let out = product((&x, false), (&w, false), Some(&b), bf16);
        match LinearBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, w, bf16), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precision::gemm_bf16::round_bf16;
    use burn::tensor::{Device, Distribution};

    /// burn's f32 matmul of the bf16-rounded operands: the reference for values and gradients.
    fn rounded(t: &Tensor<2>) -> Tensor<2> {
        let v: Vec<f32> = crate::to_vec(t.clone())
            .into_iter()
            .map(round_bf16)
            .collect();
        Tensor::from_data(burn::tensor::TensorData::new(v, t.dims()), &t.device())
    }

    fn close(a: Tensor<2>, b: Tensor<2>, tol: f32) {
        for (x, y) in crate::to_vec(a).iter().zip(crate::to_vec(b)) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn forward_and_gradients_are_the_rounded_f32_ones() {
        if !gemm_bf16::available() {
            eprintln!("skipped: no AVX512-BF16 on this CPU");
            return;
        }
        let dev = Device::flex().autodiff();
        let a = Tensor::<2>::random([70, 45], Distribution::Normal(0.0, 1.0), &dev);
        // A transposed operand: the kernel reads it through strides.
        let b = Tensor::<2>::random([33, 45], Distribution::Normal(0.0, 1.0), &dev).transpose();
        let r = Tensor::<2>::random([70, 33], Distribution::Normal(0.0, 1.0), &dev);
        let (a, b) = (a.require_grad(), b.detach().require_grad());

        let c = linear(a.clone(), b.clone(), None, Precision::Bf16);
        let grads = (c.clone() * r.clone()).sum().backward();
        let (ga, gb) = (a.grad(&grads).unwrap(), b.grad(&grads).unwrap());

        // Reference: dA = R·Bᵀ and dB = Aᵀ·R, each with its operands rounded to bf16.
        let (ai, bi, ri, ci) = (a.inner(), b.inner(), r.inner(), c.inner());
        close(ci.clone(), rounded(&ai).matmul(rounded(&bi)), 1e-5);
        close(ga, rounded(&ri).matmul(rounded(&bi).transpose()), 1e-5);
        close(gb, rounded(&ai).transpose().matmul(rounded(&ri)), 1e-5);
        // And bf16 is not f32: the unrounded product differs by far more than the tolerance.
        let diff: f32 = (ci - ai.matmul(bi)).abs().max().into_scalar();
        assert!(diff > 1e-3, "bf16 product equals the f32 one ({diff})");
    }

    #[test]
    fn f32_is_burns_product_bit_for_bit_forward_and_backward() {
        let dev = Device::flex().autodiff();
        // Large enough for the threaded path (m·n·k ≥ 192³), with a transposed operand.
        let a =
            Tensor::<2>::random([300, 160], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let b = Tensor::<2>::random([200, 160], Distribution::Normal(0.0, 1.0), &dev)
            .transpose()
            .detach()
            .require_grad();
        let r = Tensor::<2>::random([300, 200], Distribution::Normal(0.0, 1.0), &dev);
        let ours = linear(a.clone(), b.clone(), None, Precision::F32);
        let theirs = a.clone().matmul(b.clone());
        assert_eq!(crate::to_vec(ours.clone()), crate::to_vec(theirs.clone()));
        let g1 = (ours * r.clone()).sum().backward();
        let g2 = (theirs * r).sum().backward();
        for (x, y) in [(a.grad(&g1), a.grad(&g2)), (b.grad(&g1), b.grad(&g2))] {
            assert_eq!(crate::to_vec(x.unwrap()), crate::to_vec(y.unwrap()));
        }
    }

    #[test]
    fn f32_linear_with_bias_is_burns_forward_bit_for_bit_and_its_bias_gradient_close() {
        let dev = Device::flex().autodiff();
        let x = Tensor::<2>::random([700, 96], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let w = Tensor::<2>::random([96, 130], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let b = Tensor::<1>::random([130], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let r = Tensor::<2>::random([700, 130], Distribution::Normal(0.0, 1.0), &dev);
        let ours = linear(x.clone(), w.clone(), Some(b.clone()), Precision::F32);
        let theirs = burn::tensor::module::linear(x.clone(), w.clone(), Some(b.clone()));
        assert_eq!(crate::to_vec(ours.clone()), crate::to_vec(theirs.clone()));
        let g1 = (ours * r.clone()).sum().backward();
        let g2 = (theirs * r).sum().backward();
        for (p, q) in [(x.grad(&g1), x.grad(&g2)), (w.grad(&g1), w.grad(&g2))] {
            assert_eq!(crate::to_vec(p.unwrap()), crate::to_vec(q.unwrap()));
        }
        // The bias gradient sums 700 rows: in f64 here, in f32 by burn.
        let (db1, db2) = (b.grad(&g1).unwrap(), b.grad(&g2).unwrap());
        let scale: f32 = db2.clone().abs().max().into_scalar();
        let diff: f32 = (db1 - db2).abs().max().into_scalar();
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "bias gradient differs by {diff}"
        );
    }
}
