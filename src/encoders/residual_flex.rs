//! ResNet's block end, `relu(out + identity)`, as one parallel pass on the CPU (`flex`).
//!
//! Why our own: burn-flex runs the addition and the ReLU as two single-threaded passes over
//! the block's output (64 MB per pass for layer1 at 20 images), and the ReLU's backward as
//! another; here both directions are one pass each, parallel over chunks, through a burn
//! backend extension for `Flex` and `Autodiff<Flex>` (the backward keeps the output, as
//! PyTorch's ReLU does, and sends the masked gradient to both inputs). Other backends use
//! burn's operations ([`super::backbone`] chooses). Tested against burn below.

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

use crate::flex;

#[backend_extension(Flex, Autodiff)]
pub trait AddRelu: burn::backend::Backend {
    /// `max(0, a + b)` for two tensors of the same shape.
    fn add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `relu(a + b)`, `a` and `b` of the same shape.
pub fn add_relu<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    assert_eq!(a.dims(), b.dims(), "add_relu: shapes differ");
    Tensor::from_dispatch(<Dispatch as AddRelu>::add_relu(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// Elements per parallel task.
const CHUNK: usize = 1 << 16;

/// `out[i] = f(x[i], y[i])`, in parallel chunks, with `x`'s shape.
fn zip_map(x: &FlexTensor, y: &FlexTensor, f: impl Fn(f32, f32) -> f32 + Sync) -> FlexTensor {
    let (x, y) = (x.to_contiguous(), y.to_contiguous());
    let (xs, ys) = (flex::values(&x), flex::values(&y));
    let mut out = crate::flex::zeros(xs.len());
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(k, o)| {
        let (xs, ys) = (&xs[k * CHUNK..][..o.len()], &ys[k * CHUNK..][..o.len()]);
        for ((o, &a), &b) in o.iter_mut().zip(xs).zip(ys) {
            *o = f(a, b);
        }
    });
    flex::tensor(out, x.layout().shape().clone())
}

impl AddRelu for Flex {
    fn add_relu(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        zip_map(&a, &b, |a, b| (a + b).max(0.0))
    }
}

#[derive(Debug)]
struct AddReluBackward;

impl Backward<Flex, 2> for AddReluBackward {
    /// The output: the gradient passes where it is positive.
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let dx = zip_map(&dy, &ops.state, |g, y| if y > 0.0 { g } else { 0.0 });
        let [node_a, node_b] = ops.parents;
        if let Some(node) = node_a {
            grads.register::<Flex>(node.id, dx.clone());
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, dx);
        }
    }
}

impl<C: CheckpointStrategy> AddRelu for Autodiff<Flex, C> {
    fn add_relu(
        a: FloatTensor<Autodiff<Flex>>,
        b: FloatTensor<Autodiff<Flex>>,
    ) -> FloatTensor<Autodiff<Flex>> {
        let out = Flex::add_relu(a.primitive().clone(), b.primitive().clone());
        match AddReluBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(out.clone(), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::relu;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn matches_burns_add_and_relu_with_gradients() {
        let device = Device::flex().autodiff();
        // More than one parallel chunk; `b` a transposed (non-contiguous) view.
        let a = Tensor::<3>::random([3, 200, 150], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let b = Tensor::<3>::random([3, 150, 200], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let probe = Tensor::<3>::random([3, 200, 150], Distribution::Normal(0.0, 1.0), &device);
        let grads = |y: Tensor<3>| {
            let g = (y * probe.clone()).sum().backward();
            (a.grad(&g).unwrap(), b.grad(&g).unwrap())
        };
        // (Each graph its own transposition: a backward consumes the nodes it runs through.)
        let ours = add_relu(a.clone(), b.clone().swap_dims(1, 2));
        let theirs = relu(a.clone() + b.clone().swap_dims(1, 2));
        let diff = |x: Tensor<3>, y: Tensor<3>| (x - y).abs().max().into_scalar::<f32>();
        assert!(diff(ours.clone(), theirs.clone()) < 1e-6);
        let zeros = ours
            .clone()
            .equal_elem(0.0)
            .int()
            .sum()
            .into_scalar::<i64>();
        assert!(zeros > 10_000, "the ReLU cuts ({zeros} zeros)");
        let ((da, db), (da_ref, db_ref)) = (grads(ours), grads(theirs));
        assert!(diff(da.inner(), da_ref.inner()) < 1e-6);
        assert!(diff(db.inner(), db_ref.inner()) < 1e-6);
    }
}
