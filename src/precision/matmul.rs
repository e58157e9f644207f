//! The bf16 product as a burn operation on the CPU device, with its backward: a backend
//! extension for `Flex` and `Autodiff<Flex>` (as `model/dropout.rs`). The backward's two
//! products (`dA = dC·Bᵀ`, `dB = Aᵀ·dC`) are bf16 too, read through transposed views (no copy).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;
use burn_flex::FlexTensor;

use super::gemm_bf16::{self, View};
use crate::flex;

#[backend_extension(Flex, Autodiff)]
pub trait MatmulBf16: burn::backend::Backend {
    /// `lhs [m, k] · rhs [k, n]`, bf16 operands, f32 sums.
    fn matmul_bf16(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `a [m, k] · b [k, n]` (2-d tensors on the CPU device, any strides), bf16 multiplies and f32
/// sums; differentiable.
pub fn matmul(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let c = <Dispatch as MatmulBf16>::matmul_bf16(a.into_dispatch(), b.into_dispatch());
    Tensor::from_dispatch(c)
}

/// `t` with non-negative strides (copied to contiguous only when it has negative ones).
fn positive(t: &FlexTensor) -> FlexTensor {
    if t.layout().has_positive_strides() {
        t.clone()
    } else {
        t.to_contiguous()
    }
}

/// The strided view of a 2-d tensor that [`positive`] returned.
fn view(t: &FlexTensor) -> View<'_> {
    let layout = t.layout();
    let (rows, cols, rs, cs) = layout.as_2d_strides().expect("bf16 matmul: a 2-d tensor");
    View {
        data: &t.storage::<f32>()[layout.start_offset()..],
        rows,
        cols,
        rs: rs as usize,
        cs: cs as usize,
    }
}

/// `op(a) · op(b)` where `op` transposes when its flag is set.
fn product(a: &FlexTensor, ta: bool, b: &FlexTensor, tb: bool) -> FlexTensor {
    let (a, b) = (positive(a), positive(b));
    let (va, vb) = (view(&a), view(&b));
    let va = if ta { va.t() } else { va };
    let vb = if tb { vb.t() } else { vb };
    let (m, n) = (va.rows, vb.cols);
    flex::tensor(gemm_bf16::matmul(va, vb), [m, n])
}

impl MatmulBf16 for Flex {
    fn matmul_bf16(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
        product(&lhs, false, &rhs, false)
    }
}

/// The backward keeps both operands, as burn's own matmul does.
#[derive(Debug)]
struct MatmulBackward;

impl Backward<Flex, 2> for MatmulBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(
        self,
        ops: Ops<(FlexTensor, FlexTensor), 2>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        let [node_a, node_b] = ops.parents;
        let dc = grads.consume::<Flex>(&ops.node);
        let (a, b) = ops.state;
        if let Some(node) = node_a {
            grads.register::<Flex>(node.id, product(&dc, false, &b, true));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, product(&a, true, &dc, false));
        }
    }
}

impl<C: CheckpointStrategy> MatmulBf16 for Autodiff<Flex, C> {
    fn matmul_bf16(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [lhs.node(), rhs.node()];
        let (a, b) = (lhs.into_primitive(), rhs.into_primitive());
        let out = product(&a, false, &b, false);
        match MatmulBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((a, b), out),
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

        let c = matmul(a.clone(), b.clone());
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
}
