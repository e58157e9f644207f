//! Batched products `[B, M, K] × [B, K, N]` (or `[B, H, M, K] × [B, H, K, N]`) on the CPU
//! (`flex`), forward and backward: AVCA's attention over the 49 cells (`QKᵀ`, `softmax(·)·V`,
//! the attention maps pooling the cells) and the relation modules' multi-head attention.
//!
//! Why our own: burn-flex 0.22.1 allocates every product's output as zeroed bytes and then
//! copies them to a realigned buffer (`FlexTensor::empty` → `Bytes::from_bytes_vec`): two
//! single-threaded passes over outputs of 64 MB (`softmax(QKᵀ)·V` at batch 64, and the
//! gradients of V and of the pooled maps). Here the batch items are rayon tasks, each one call
//! of the gemm crate — the one burn-flex calls, so the values are the same bit for bit — into a
//! fresh buffer ([`crate::strided::products`]). Other devices, and batches that differ, keep
//! burn's `matmul` ([`bmm`]).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;
use burn_flex::FlexTensor;

use crate::device::is_flex;
use crate::{flex, strided};

#[backend_extension(Flex, Autodiff)]
pub trait BatchedMatmul: burn::backend::Backend {
    /// `lhs [B, M, K] · rhs [B, K, N]` → `[B, M, N]`.
    fn batched_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `a.matmul(b)` for `a [B, M, K]`, `b [B, K, N]` (D = 3) or `a [B, H, M, K]`,
/// `b [B, H, K, N]` (D = 4). Operands may be strided views (a transpose, heads split off a
/// wider axis): they are read in place.
pub fn bmm<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    let batch_dims = |t: &Tensor<D>| t.dims()[..D - 2].to_vec();
    if !is_flex(&a.device()) || !(3..=4).contains(&D) || batch_dims(&a) != batch_dims(&b) {
        return a.matmul(b);
    }
    let c = <Dispatch as BatchedMatmul>::batched_matmul(a.into_dispatch(), b.into_dispatch());
    Tensor::from_dispatch(c)
}

/// One operand: item `(i, j)`'s element `(r, c)` at `data[i·bs + j·hs + r·rs + c·cs]`, with
/// `j < heads` (`heads` = 1, `hs` = 0 for a 3-d operand).
pub(super) struct Operand<'a> {
    data: &'a [f32],
    batch: [usize; 2],
    rows: usize,
    cols: usize,
    bs: usize,
    hs: usize,
    rs: usize,
    cs: usize,
}

impl Operand<'_> {
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    pub(super) fn cols(&self) -> usize {
        self.cols
    }

    /// Item `i` (`i = i₀·heads + j`) as a strided matrix.
    pub(super) fn item(&self, i: usize) -> strided::View<'_> {
        let (outer, head) = (i / self.batch[1], i % self.batch[1]);
        strided::View::new(
            &self.data[outer * self.bs + head * self.hs..],
            self.rs,
            self.cs,
        )
    }
}

/// `t` (3-d or 4-d, non-negative strides), transposed per item when `transpose`.
pub(super) fn operand(t: &FlexTensor, transpose: bool) -> Operand<'_> {
    let layout = t.layout();
    let (shape, strides) = (layout.shape(), layout.strides());
    let d = shape.len();
    assert!(d == 3 || d == 4, "bmm: a {d}-d operand");
    let (mut rows, mut cols) = (shape[d - 2], shape[d - 1]);
    let (mut rs, mut cs) = (strides[d - 2] as usize, strides[d - 1] as usize);
    if transpose {
        (rows, cols, rs, cs) = (cols, rows, cs, rs);
    }
    let (heads, hs) = if d == 4 {
        (shape[1], strides[1] as usize)
    } else {
        (1, 0)
    };
    Operand {
        data: &t.storage::<f32>()[layout.start_offset()..],
        batch: [shape[0], heads],
        rows,
        cols,
        bs: strides[0] as usize,
        hs,
        rs,
        cs,
    }
}

/// `op(a) · op(b)` per batch item, `op` transposing when its flag is set; the output has the
/// operands' batch axes.
fn product(a: &FlexTensor, ta: bool, b: &FlexTensor, tb: bool) -> FlexTensor {
    let (a, b) = (flex::non_negative_strides(a), flex::non_negative_strides(b));
    let mut shape = a.layout().shape().to_vec();
    let (a, b) = (operand(&a, ta), operand(&b, tb));
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.batch == a.batch && b.rows == k, "bmm: shapes");
    let par = strided::parallelism([m, n, k]);
    let batch = a.batch[0] * a.batch[1];
    let c = strided::products(batch, [m, n, k], |i| (a.item(i), b.item(i)), par);
    let d = shape.len();
    shape[d - 2..].copy_from_slice(&[m, n]);
    flex::tensor(c, shape)
}

impl BatchedMatmul for Flex {
    fn batched_matmul(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
        product(&lhs, false, &rhs, false)
    }
}

/// The backward keeps both operands, as burn's matmul does.
#[derive(Debug)]
struct BmmBackward;

impl Backward<Flex, 2> for BmmBackward {
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

impl<C: CheckpointStrategy> BatchedMatmul for Autodiff<Flex, C> {
    fn batched_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [lhs.node(), rhs.node()];
        let (a, b) = (lhs.into_primitive(), rhs.into_primitive());
        let out = product(&a, false, &b, false);
        match BmmBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((a, b), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn is_burns_matmul_bit_for_bit_forward_and_backward() {
        let dev = Device::flex().autodiff();
        // AVCA's shapes in small: scores Q·Kᵀ (a transposed operand) and scores·V, many items
        // (one task each) and few (one threaded product each).
        for batch in [40, 2] {
            let normal = |s: [usize; 3]| {
                Tensor::<3>::random(s, Distribution::Normal(0.0, 1.0), &dev).require_grad()
            };
            let (q, k, v) = (
                normal([batch, 49, 16]),
                normal([batch, 49, 16]),
                normal([batch, 49, 24]),
            );
            let r = Tensor::<3>::random([batch, 49, 24], Distribution::Normal(0.0, 1.0), &dev);
            let ours = bmm(bmm(q.clone(), k.clone().swap_dims(1, 2)), v.clone());
            let theirs = q
                .clone()
                .matmul(k.clone().swap_dims(1, 2))
                .matmul(v.clone());
            assert_eq!(crate::to_vec(ours.clone()), crate::to_vec(theirs.clone()));
            let g1 = (ours * r.clone()).sum().backward();
            let g2 = (theirs * r).sum().backward();
            for t in [&q, &k, &v] {
                let (x, y) = (t.grad(&g1).unwrap(), t.grad(&g2).unwrap());
                assert_eq!(crate::to_vec(x), crate::to_vec(y), "batch {batch}");
            }
        }
    }

    /// Multi-head attention's operands: heads split off a slice of a wider projection
    /// (`[B, L, 3E]` → `[B, H, L, dh]` views, strides neither contiguous nor uniform over the
    /// two batch axes), forward and backward.
    #[test]
    fn four_d_views_are_burns_matmul_bit_for_bit() {
        let dev = Device::flex().autodiff();
        let (b, l, h, dh) = (5, 7, 4, 6);
        let x0 = Tensor::<3>::random([b, l, 3 * h * dh], Distribution::Normal(0.0, 1.0), &dev);
        let r = Tensor::<4>::random([b, h, l, dh], Distribution::Normal(0.0, 1.0), &dev);
        // Each side gets its own leaf: the two backward passes must not share a graph.
        let qkv = || {
            let x = x0.clone().detach().require_grad();
            let heads = |i: usize| {
                x.clone()
                    .narrow(2, i * h * dh, h * dh)
                    .reshape([b, l, h, dh])
                    .swap_dims(1, 2)
            };
            (heads(0), heads(1), heads(2), x)
        };
        let (q, k, v, x1) = qkv();
        let ours = bmm(bmm(q, k.swap_dims(2, 3)), v);
        let (q, k, v, x2) = qkv();
        let theirs = q.matmul(k.swap_dims(2, 3)).matmul(v);
        assert_eq!(ours.dims(), [b, h, l, dh]);
        assert_eq!(crate::to_vec(ours.clone()), crate::to_vec(theirs.clone()));
        let g1 = (ours * r.clone()).sum().backward();
        let g2 = (theirs * r).sum().backward();
        let (x1, x2) = (x1.grad(&g1).unwrap(), x2.grad(&g2).unwrap());
        assert_eq!(crate::to_vec(x1), crate::to_vec(x2));
    }

    #[test]
    fn evaluation_and_empty_products() {
        let dev = Device::flex();
        let a = Tensor::<3>::random([3, 5, 0], Distribution::Normal(0.0, 1.0), &dev);
        let b = Tensor::<3>::random([3, 0, 4], Distribution::Normal(0.0, 1.0), &dev);
        assert_eq!(crate::to_vec(bmm(a, b)), vec![0.0; 60]);
        let a = Tensor::<3>::random([3, 5, 7], Distribution::Normal(0.0, 1.0), &dev);
        let b = Tensor::<3>::random([3, 7, 4], Distribution::Normal(0.0, 1.0), &dev);
        assert_eq!(
            crate::to_vec(bmm(a.clone(), b.clone())),
            crate::to_vec(a.matmul(b))
        );
    }
}
