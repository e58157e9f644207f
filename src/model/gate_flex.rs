//! AVCA's guided products `f(A) ⊙ f(b)` — a per-cell map `A [R, 49, C]` times a per-row
//! vector `b [R, C]` broadcast over the cells, `f` ReLU or the identity — as one parallel pass
//! on the CPU (`flex`), forward and backward.
//!
//! Why our own: burn-flex runs element-wise operations on one thread, and burn composes this
//! product from a ReLU, a broadcast multiply and, in the backward, a multiply, a ReLU mask and a
//! sum over the cells per operand: single-threaded passes over 32–64 MB at batch 64, four times
//! per step (AVCA's self-calibration query, channel and spatial attention, and the channel
//! rescaling of X). Here rows `R` are independent tasks; the backward recomputes `f` from the
//! saved inputs (burn keeps `f(A)` and a mask). Other devices keep burn's composition
//! ([`gate`] chooses). Values are burn's bit for bit in the forward (the same two f32
//! operations); `db`'s sum over the cells is taken in f64.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::device::is_flex;
use crate::flex;

#[backend_extension(Flex, Autodiff)]
pub trait BroadcastGate: burn::backend::Backend {
    /// `a [R, L, C]`, `b [R, C]` → `f(a)·f(b)` with `b` broadcast over `L`.
    fn broadcast_gate(a: FloatTensor<Self>, b: FloatTensor<Self>, relu: bool) -> FloatTensor<Self>;
}

/// `f(a) * f(b).unsqueeze_dim(1)` for `a [R, L, C]`, `b [R, C]`; `f` = ReLU when `relu`.
pub fn gate(a: Tensor<3>, b: Tensor<2>, relu_both: bool) -> Tensor<3> {
    if !is_flex(&a.device()) {
        let f2 = |x: Tensor<2>| if relu_both { relu(x) } else { x };
        let f3 = |x: Tensor<3>| if relu_both { relu(x) } else { x };
        return f3(a) * f2(b).unsqueeze_dim(1);
    }
    let y = <Dispatch as BroadcastGate>::broadcast_gate(
        a.into_dispatch(),
        b.into_dispatch(),
        relu_both,
    );
    Tensor::from_dispatch(y)
}

/// ReLU as burn-flex has it (a NaN passes), or the identity.
pub(super) fn f(x: f32, relu: bool) -> f32 {
    if !relu || x.is_nan() || x > 0.0 {
        x
    } else {
        0.0
    }
}

/// Where the ReLU passes the gradient (everywhere for the identity).
fn passes(x: f32, relu: bool) -> bool {
    !relu || x.is_nan() || x > 0.0
}

/// `a [R, L, C]` read in place: row `(r, l)`'s `C` values from `data[r·rs + l·ls]` (a slice of
/// a wider product, as the evaluation's fused projections hand over, needs no copy).
pub(super) struct Cells<'a> {
    data: &'a [f32],
    rs: usize,
    ls: usize,
}

impl<'a> Cells<'a> {
    /// `a` read in place when its channels are contiguous, else a contiguous copy of it, made
    /// into `copy` (which must live as long as the view).
    pub(super) fn of(a: &'a FlexTensor, copy: &'a mut Option<FlexTensor>) -> Self {
        let layout = a.layout();
        let strides = layout.strides();
        if layout.has_positive_strides() && strides[2] == 1 {
            return Self {
                data: &a.storage::<f32>()[layout.start_offset()..],
                rs: strides[0] as usize,
                ls: strides[1] as usize,
            };
        }
        let [_, cells, c] = layout.shape().dims::<3>();
        Self {
            data: flex::values(copy.insert(a.to_contiguous())),
            rs: cells * c,
            ls: c,
        }
    }

    pub(super) fn row(&self, r: usize, l: usize, c: usize) -> &[f32] {
        &self.data[r * self.rs + l * self.ls..][..c]
    }
}

/// `y [R, cells, C] = f(a)·f(b)`, written once (not cleared first).
fn forward(a: &Cells, b: &[f32], cells: usize, c: usize, relu: bool) -> Vec<f32> {
    let n = b.len() * cells;
    let mut y = Vec::with_capacity(n);
    if n == 0 {
        return y;
    }
    y.spare_capacity_mut()[..n]
        .par_chunks_mut(cells * c)
        .zip(b.par_chunks(c))
        .enumerate()
        .for_each(|(r, (y, b))| {
            for (l, y) in y.chunks_mut(c).enumerate() {
                for ((y, &a), &b) in y.iter_mut().zip(a.row(r, l, c)).zip(b) {
                    y.write(f(a, relu) * f(b, relu));
                }
            }
        });
    // SAFETY: every row's `cells·C` values were written above.
    unsafe { y.set_len(n) };
    y
}

/// `da = dy·f(b)·f'(a)`, `db = f'(b)·Σ_cells dy·f(a)`.
fn backward(a: &[f32], b: &[f32], dy: &[f32], c: usize, relu: bool) -> (Vec<f32>, Vec<f32>) {
    let cells = a.len() / b.len().max(1);
    let (mut da, mut db) = (flex::zeros(a.len()), vec![0f32; b.len()]);
    da.par_chunks_mut(cells * c)
        .zip(db.par_chunks_mut(c))
        .zip(a.par_chunks(cells * c))
        .zip(b.par_chunks(c))
        .zip(dy.par_chunks(cells * c))
        .for_each(|((((da, db), a), b), dy)| {
            let mut sum = vec![0f64; c];
            for ((da, a), dy) in da.chunks_mut(c).zip(a.chunks(c)).zip(dy.chunks(c)) {
                for k in 0..c {
                    let g = if passes(a[k], relu) { dy[k] } else { 0.0 };
                    da[k] = g * f(b[k], relu);
                    sum[k] += (dy[k] * f(a[k], relu)) as f64;
                }
            }
            for ((db, &s), &b) in db.iter_mut().zip(&sum).zip(b) {
                *db = if passes(b, relu) { s as f32 } else { 0.0 };
            }
        });
    (da, db)
}

fn gate_flex(a: &FlexTensor, b: &FlexTensor, relu: bool) -> FlexTensor {
    let b = b.to_contiguous();
    let shape = a.layout().shape().clone();
    let (cells, c) = (shape[1], shape[2]);
    let mut copy = None;
    let y = forward(&Cells::of(a, &mut copy), flex::values(&b), cells, c, relu);
    flex::tensor(y, shape)
}

impl BroadcastGate for Flex {
    fn broadcast_gate(a: FlexTensor, b: FlexTensor, relu: bool) -> FlexTensor {
        gate_flex(&a, &b, relu)
    }
}

#[derive(Debug)]
struct GateBackward;

impl Backward<Flex, 2> for GateBackward {
    type State = (FlexTensor, FlexTensor, bool);

    fn backward(
        self,
        ops: Ops<(FlexTensor, FlexTensor, bool), 2>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        let [node_a, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (a, b, relu) = ops.state;
        let c = b.layout().shape()[1];
        let (da, db) = backward(
            flex::values(&a),
            flex::values(&b),
            flex::values(&dy),
            c,
            relu,
        );
        if let Some(node) = node_a {
            grads.register::<Flex>(node.id, flex::tensor(da, a.layout().shape().clone()));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, flex::tensor(db, b.layout().shape().clone()));
        }
    }
}

impl<C: CheckpointStrategy> BroadcastGate for Autodiff<Flex, C> {
    fn broadcast_gate(a: FloatTensor<Self>, b: FloatTensor<Self>, relu: bool) -> FloatTensor<Self> {
        let nodes = [a.node(), b.node()];
        let (a, b) = (
            a.into_primitive().to_contiguous(),
            b.into_primitive().to_contiguous(),
        );
        let out = gate_flex(&a, &b, relu);
        match GateBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((a, b, relu), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn matches_burns_composition_forward_and_backward() {
        let dev = Device::flex().autodiff();
        for relu_both in [true, false] {
            // A transposed `a` (not contiguous) with values around zero, so the ReLU cuts.
            let a = Tensor::<3>::random([6, 24, 49], Distribution::Normal(0.0, 1.0), &dev)
                .swap_dims(1, 2)
                .detach()
                .require_grad();
            let b =
                Tensor::<2>::random([6, 24], Distribution::Normal(0.0, 1.0), &dev).require_grad();
            let probe = Tensor::<3>::random([6, 49, 24], Distribution::Normal(0.0, 1.0), &dev);

            let ours = gate(a.clone(), b.clone(), relu_both);
            let f2 = |x: Tensor<2>| if relu_both { relu(x) } else { x };
            let f3 = |x: Tensor<3>| if relu_both { relu(x) } else { x };
            let theirs = f3(a.clone()) * f2(b.clone()).unsqueeze_dim(1);
            assert_eq!(
                crate::to_vec(ours.clone()),
                crate::to_vec(theirs.clone()),
                "forward (relu {relu_both})"
            );

            let g1 = (ours * probe.clone()).sum().backward();
            let g2 = (theirs * probe).sum().backward();
            let da = max_diff(a.grad(&g1).unwrap(), a.grad(&g2).unwrap());
            let db: f32 = (b.grad(&g1).unwrap() - b.grad(&g2).unwrap())
                .abs()
                .max()
                .into_scalar();
            // da is the same two products; db sums 49 terms in another order.
            assert!(da == 0.0, "da differs by {da} (relu {relu_both})");
            assert!(db < 1e-5, "db differs by {db} (relu {relu_both})");
            let zeros = crate::to_vec(a.grad(&g1).unwrap())
                .iter()
                .filter(|&&x| x == 0.0)
                .count();
            // The ReLU masks about half of da (a cut by its own ReLU or b by its own).
            assert_eq!(zeros > 6 * 49 * 24 / 3, relu_both, "{zeros} zeros");
        }
    }

    #[test]
    fn evaluation_matches_too_on_slices_of_a_wider_tensor() {
        let dev = Device::flex();
        let wide = Tensor::<3>::random([3, 49, 40], Distribution::Normal(0.0, 1.0), &dev);
        let b = Tensor::<2>::random([3, 16], Distribution::Normal(0.0, 1.0), &dev);
        // Contiguous, and channels 8..24 of each cell read in place (rows 40 apart), as the
        // fused projections' outputs arrive.
        for a in [
            Tensor::<3>::random([3, 49, 16], Distribution::Normal(0.0, 1.0), &dev),
            wide.slice([0..3, 0..49, 8..24]),
        ] {
            let theirs = relu(a.clone()) * relu(b.clone()).unsqueeze_dim(1);
            assert_eq!(
                crate::to_vec(gate(a, b.clone(), true)),
                crate::to_vec(theirs)
            );
        }
        let empty = Tensor::<3>::zeros([0, 49, 16], &dev);
        assert_eq!(
            gate(empty, Tensor::zeros([0, 16], &dev), true).dims(),
            [0, 49, 16]
        );
    }
}
