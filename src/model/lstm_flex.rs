//! The LSTM recurrence — `T` steps of `gates = xp_t + h·W_hh`, `c = σ(f)·c + σ(i)·tanh(g)`,
//! `h = σ(o)·tanh(c)` — as one operation on the CPU (`flex`), forward and backward.
//!
//! Why our own: burn composes each step from about twenty small operations (a `[B, H] × [H, 4H]`
//! product, four chunks, three sigmoids, two tanh, products and sums) and its backward from
//! about forty, each a `[B, H]`-sized pass on the calling thread with an autodiff node:
//! ~2,400 operations per training step for the two bidirectional layers, about a fifth of the
//! step's single-threaded time (`perf`, issue 16). Here the batch rows, which never mix, are
//! split over the threads once for the whole sequence; each thread runs its rows' `T` steps with
//! single-threaded products. The forward is burn's composition value for value (the same f32
//! operations in the same order; the products are gemm's, whose sums do not depend on how the
//! rows are split). The backward is the textbook one (backpropagation through time); `W_hh`'s
//! gradient is one product over all steps instead of a sum of `T` (other rounding, same
//! accuracy). Other devices keep burn's composition ([`recurrence`] chooses).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use burn_flex::FlexTensor;
use gemm::Parallelism;
use rayon::prelude::*;

use crate::device::is_flex;
use crate::flex;
use crate::strided::{self, Mat, View};

#[backend_extension(Flex, Autodiff)]
pub trait LstmRecurrence: burn::backend::Backend {
    /// `xp [B, T, 4H]` (input projection with both biases), `w_hh [H, 4H]` → `h [B, T, H]`.
    fn lstm_recurrence(
        xp: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        reverse: bool,
    ) -> FloatTensor<Self>;
}

/// `xp [B, T, 4H]`, `w_hh [H, 4H]` → `h [B, T, H]`: gates in PyTorch's order i, f, g, o, zero
/// initial state; `reverse` runs t = T−1 → 0 and places the output of step t at t.
pub fn recurrence(xp: Tensor<3>, w_hh: Tensor<2>, reverse: bool) -> Tensor<3> {
    if !is_flex(&xp.device()) {
        return composed(xp, w_hh, reverse);
    }
    let h = <Dispatch as LstmRecurrence>::lstm_recurrence(
        xp.into_dispatch(),
        w_hh.into_dispatch(),
        reverse,
    );
    Tensor::from_dispatch(h)
}

/// The recurrence from burn's operations (other devices, and the tests' reference).
pub fn composed(xp: Tensor<3>, w_hh: Tensor<2>, reverse: bool) -> Tensor<3> {
    let [b, t_len, four_h] = xp.dims();
    let hdim = four_h / 4;
    let device = xp.device();
    let mut h = Tensor::<2>::zeros([b, hdim], &device);
    let mut c = Tensor::<2>::zeros([b, hdim], &device);
    let mut outputs: Vec<Option<Tensor<2>>> = vec![None; t_len];
    for step in 0..t_len {
        let t = if reverse { t_len - 1 - step } else { step };
        let gates = xp.clone().narrow(1, t, 1).reshape([b, four_h]) + h.matmul(w_hh.clone());
        let [i, f, g, o]: [Tensor<2>; 4] = gates.chunk(4, 1).try_into().expect("four gates");
        c = sigmoid(f) * c + sigmoid(i) * g.tanh();
        h = sigmoid(o) * c.clone().tanh();
        outputs[t] = Some(h.clone());
    }
    Tensor::stack(outputs.into_iter().map(Option::unwrap).collect(), 1)
}

/// burn-flex's sigmoid, value for value.
fn sig(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Sizes, and the time order.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    reverse: bool,
}

impl Dims {
    /// The time index of processing step `s`.
    fn time(&self, s: usize) -> usize {
        if self.reverse { self.t - 1 - s } else { s }
    }

    /// Batch rows per thread: all rows split once over the threads.
    fn rows_per_task(&self) -> usize {
        self.b.div_ceil(rayon::current_num_threads()).max(1)
    }
}

/// The forward's activations, kept for the backward: gates after σ/tanh `[B, T, 4H]`, cells
/// `[B, T, H]` and outputs `[B, T, H]`.
#[derive(Clone, Debug)]
struct Saved {
    acts: Vec<f32>,
    cells: Vec<f32>,
    h: Vec<f32>,
}

/// Runs the recurrence; keeps what the backward needs when `keep`.
fn forward(xp: &[f32], w: &[f32], d: Dims, keep: bool) -> (Vec<f32>, Option<Saved>) {
    let (t_len, hd) = (d.t, d.h);
    let rows = d.rows_per_task();
    let mut out = vec![0f32; d.b * t_len * hd];
    let (mut acts, mut cells) = if keep {
        (
            vec![0f32; d.b * t_len * 4 * hd],
            vec![0f32; d.b * t_len * hd],
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let act_chunks: Vec<Option<(&mut [f32], &mut [f32])>> = if keep {
        acts.chunks_mut(rows * t_len * 4 * hd)
            .zip(cells.chunks_mut(rows * t_len * hd))
            .map(Some)
            .collect()
    } else {
        (0..d.b.div_ceil(rows)).map(|_| None).collect()
    };
    out.par_chunks_mut(rows * t_len * hd)
        .zip(xp.par_chunks(rows * t_len * 4 * hd))
        .zip(act_chunks)
        .for_each(|((out, xp), mut kept)| {
            let n = out.len() / (t_len * hd);
            let (mut h, mut c) = (vec![0f32; n * hd], vec![0f32; n * hd]);
            let mut gates = vec![0f32; n * 4 * hd];
            for s in 0..t_len {
                let t = d.time(s);
                // gates = h · W_hh, then xp_t added (burn: `xp_t + h.matmul(w)`).
                strided::gemm_into(
                    Mat::new(&mut gates, 4 * hd, 1),
                    View::new(&h, hd, 1),
                    View::new(w, 4 * hd, 1),
                    [n, 4 * hd, hd],
                    false,
                    Parallelism::None,
                );
                for r in 0..n {
                    let a = &gates[r * 4 * hd..(r + 1) * 4 * hd];
                    let x = &xp[(r * t_len + t) * 4 * hd..][..4 * hd];
                    for j in 0..hd {
                        let i = sig(x[j] + a[j]);
                        let f = sig(x[hd + j] + a[hd + j]);
                        let g = (x[2 * hd + j] + a[2 * hd + j]).tanh();
                        let o = sig(x[3 * hd + j] + a[3 * hd + j]);
                        let cell = f * c[r * hd + j] + i * g;
                        let hv = o * cell.tanh();
                        c[r * hd + j] = cell;
                        h[r * hd + j] = hv;
                        out[(r * t_len + t) * hd + j] = hv;
                        if let Some((acts, cells)) = kept.as_mut() {
                            let at = (r * t_len + t) * 4 * hd;
                            for (k, v) in [i, f, g, o].into_iter().enumerate() {
                                acts[at + k * hd + j] = v;
                            }
                            cells[(r * t_len + t) * hd + j] = cell;
                        }
                    }
                }
            }
        });
    let saved = keep.then(|| Saved {
        acts,
        cells,
        h: out.clone(),
    });
    (out, saved)
}

/// Backpropagation through time: `dy [B, T, H]` → (`dxp [B, T, 4H]`, `dW_hh [H, 4H]`).
fn backward(dy: &[f32], w: &[f32], s: &Saved, d: Dims) -> (Vec<f32>, Vec<f32>) {
    let (t_len, hd) = (d.t, d.h);
    if d.b * t_len == 0 {
        return (Vec::new(), vec![0.0; hd * 4 * hd]);
    }
    let rows = d.rows_per_task();
    let mut dxp = vec![0f32; d.b * t_len * 4 * hd];
    dxp.par_chunks_mut(rows * t_len * 4 * hd)
        .zip(dy.par_chunks(rows * t_len * hd))
        .zip(s.acts.par_chunks(rows * t_len * 4 * hd))
        .zip(s.cells.par_chunks(rows * t_len * hd))
        .for_each(|(((dxp, dy), acts), cells)| {
            let n = dy.len() / (t_len * hd);
            let (mut dh_next, mut dc_next) = (vec![0f32; n * hd], vec![0f32; n * hd]);
            for step in (0..t_len).rev() {
                let t = d.time(step);
                let prev = (step > 0).then(|| d.time(step - 1));
                for r in 0..n {
                    let at = (r * t_len + t) * 4 * hd;
                    for j in 0..hd {
                        let [i, f, g, o] = [0, 1, 2, 3].map(|k| acts[at + k * hd + j]);
                        let c = cells[(r * t_len + t) * hd + j];
                        let c_prev = prev.map_or(0.0, |p| cells[(r * t_len + p) * hd + j]);
                        let dh = dy[(r * t_len + t) * hd + j] + dh_next[r * hd + j];
                        let tc = c.tanh();
                        let dc = dh * o * (1.0 - tc * tc) + dc_next[r * hd + j];
                        dc_next[r * hd + j] = dc * f;
                        dxp[at + j] = dc * g * i * (1.0 - i);
                        dxp[at + hd + j] = dc * c_prev * f * (1.0 - f);
                        dxp[at + 2 * hd + j] = dc * i * (1.0 - g * g);
                        dxp[at + 3 * hd + j] = dh * tc * o * (1.0 - o);
                    }
                }
                if step > 0 {
                    // dh_{t−1} = dgates_t · W_hhᵀ (this task's rows at time t).
                    strided::gemm_into(
                        Mat::new(&mut dh_next, hd, 1),
                        View::new(&dxp[t * 4 * hd..], t_len * 4 * hd, 1),
                        View::new(w, 1, 4 * hd),
                        [n, hd, 4 * hd],
                        false,
                        Parallelism::None,
                    );
                }
            }
        });
    // dW_hh = Σ_t h_{t−1}ᵀ · dgates_t: one product over the B·T (row, time) pairs, with the
    // previous output of each (zeros before the first step).
    let mut h_prev = vec![0f32; d.b * t_len * hd];
    for r in 0..d.b {
        for step in 1..t_len {
            let (t, p) = (d.time(step), d.time(step - 1));
            h_prev[(r * t_len + t) * hd..][..hd]
                .copy_from_slice(&s.h[(r * t_len + p) * hd..][..hd]);
        }
    }
    let pairs = d.b * t_len;
    let dw = strided::product(
        View::new(&h_prev, 1, hd),
        View::new(&dxp, 4 * hd, 1),
        [hd, 4 * hd, pairs],
    );
    (dxp, dw)
}

fn dims(xp: &FlexTensor, reverse: bool) -> Dims {
    let shape = xp.layout().shape();
    Dims {
        b: shape[0],
        t: shape[1],
        h: shape[2] / 4,
        reverse,
    }
}

fn run(xp: &FlexTensor, w: &FlexTensor, reverse: bool, keep: bool) -> (FlexTensor, Option<Saved>) {
    let (xp, w) = (xp.to_contiguous(), w.to_contiguous());
    let d = dims(&xp, reverse);
    let ws = w.layout().shape();
    assert!(
        ws.num_dims() == 2 && ws[0] == d.h && ws[1] == 4 * d.h,
        "lstm: W_hh must be [H, 4H]"
    );
    if d.b * d.t == 0 {
        // Nothing to run (and no chunks to split into).
        let saved = keep.then(|| Saved {
            acts: Vec::new(),
            cells: Vec::new(),
            h: Vec::new(),
        });
        return (flex::tensor(Vec::new(), [d.b, d.t, d.h]), saved);
    }
    let (h, saved) = forward(flex::values(&xp), flex::values(&w), d, keep);
    (flex::tensor(h, [d.b, d.t, d.h]), saved)
}

impl LstmRecurrence for Flex {
    fn lstm_recurrence(xp: FlexTensor, w_hh: FlexTensor, reverse: bool) -> FlexTensor {
        run(&xp, &w_hh, reverse, false).0
    }
}

#[derive(Debug)]
struct LstmBackward;

impl Backward<Flex, 2> for LstmBackward {
    type State = (Saved, FlexTensor, Dims);

    fn backward(
        self,
        ops: Ops<(Saved, FlexTensor, Dims), 2>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        let [node_xp, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (saved, w, d) = ops.state;
        let (dxp, dw) = backward(flex::values(&dy), flex::values(&w), &saved, d);
        if let Some(node) = node_xp {
            grads.register::<Flex>(node.id, flex::tensor(dxp, [d.b, d.t, 4 * d.h]));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, flex::tensor(dw, [d.h, 4 * d.h]));
        }
    }
}

impl<C: CheckpointStrategy> LstmRecurrence for Autodiff<Flex, C> {
    fn lstm_recurrence(
        xp: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        reverse: bool,
    ) -> FloatTensor<Self> {
        let nodes = [xp.node(), w_hh.node()];
        let (xp, w) = (xp.into_primitive(), w_hh.into_primitive().to_contiguous());
        let prep = LstmBackward.prepare::<C>(nodes).compute_bound().stateful();
        let keep = matches!(prep, OpsKind::Tracked(_));
        let (h, saved) = run(&xp, &w, reverse, keep);
        match prep {
            OpsKind::Tracked(prep) => {
                let d = dims(&xp, reverse);
                prep.finish((saved.expect("kept when tracked"), w, d), h)
            }
            OpsKind::UnTracked(prep) => prep.finish(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn max_rel_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let scale: f32 = b.clone().abs().max().into_scalar();
        let diff: f32 = (a - b).abs().max().into_scalar();
        diff / scale.max(1e-12)
    }

    /// Forward equal to burn's composition value for value; gradients of `xp` and `W_hh`
    /// within f32 rounding of burn's autodiff (the same terms, summed in another order), in
    /// both directions, with more rows than threads and an odd batch.
    #[test]
    fn matches_burns_composition_forward_and_backward() {
        let dev = Device::flex().autodiff();
        let (b, t, h) = (7, 5, 24);
        for reverse in [false, true] {
            let xp = Tensor::<3>::random([b, t, 4 * h], Distribution::Normal(0.0, 1.0), &dev)
                .require_grad();
            let w = Tensor::<2>::random([h, 4 * h], Distribution::Normal(0.0, 0.3), &dev)
                .require_grad();
            let probe = Tensor::<3>::random([b, t, h], Distribution::Normal(0.0, 1.0), &dev);

            let ours = recurrence(xp.clone(), w.clone(), reverse);
            let theirs = composed(xp.clone(), w.clone(), reverse);
            assert_eq!(
                crate::to_vec(ours.clone()),
                crate::to_vec(theirs.clone()),
                "forward (reverse {reverse})"
            );

            let g1 = (ours * probe.clone()).sum().backward();
            let g2 = (theirs * probe).sum().backward();
            let dxp = max_rel_diff(xp.grad(&g1).unwrap(), xp.grad(&g2).unwrap());
            let dw = max_rel_diff(w.grad(&g1).unwrap(), w.grad(&g2).unwrap());
            assert!(
                dxp < 1e-5,
                "dxp differs by {dxp} (relative; reverse {reverse})"
            );
            assert!(
                dw < 1e-5,
                "dW differs by {dw} (relative; reverse {reverse})"
            );
            let norm: f32 = w.grad(&g1).unwrap().abs().sum().into_scalar();
            assert!(norm > 1e-2, "W_hh's gradient is (near) zero: {norm}");
        }
    }

    /// No rows or no steps: empty outputs and zero gradients, not a panic.
    #[test]
    fn empty_batches_and_sequences() {
        let dev = Device::flex().autodiff();
        for (b, t) in [(0, 4), (3, 0)] {
            let xp = Tensor::<3>::zeros([b, t, 32], &dev).require_grad();
            let w = Tensor::<2>::ones([8, 32], &dev).require_grad();
            let h = recurrence(xp.clone(), w.clone(), false);
            assert_eq!(h.dims(), [b, t, 8]);
            let g = h.sum().backward();
            let dw: f32 = w.grad(&g).unwrap().abs().sum().into_scalar();
            assert_eq!(dw, 0.0);
        }
    }

    /// Evaluation (no autodiff) gives the same values; one row (the latency path).
    #[test]
    fn evaluation_and_one_row() {
        let dev = Device::flex();
        for b in [1, 3] {
            let xp = Tensor::<3>::random([b, 4, 32], Distribution::Normal(0.0, 1.0), &dev);
            let w = Tensor::<2>::random([8, 32], Distribution::Normal(0.0, 0.5), &dev);
            assert_eq!(
                crate::to_vec(recurrence(xp.clone(), w.clone(), true)),
                crate::to_vec(composed(xp, w, true))
            );
        }
    }
}
