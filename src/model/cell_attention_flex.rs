//! AVCA's spatial self-attention over the 49 cells, `LN(X + softmax(Q Kᵀ) V)`, in evaluation on
//! the CPU (`flex`): each batch item is one rayon task that multiplies, normalises the scores
//! and the output rows while they are in cache, and writes its output once.
//!
//! Why our own: without autodiff burn runs it as five passes over `[B·T, 49, ·]` tensors — the
//! two batched products, a softmax, the residual add (on one thread, copying X first since X
//! is shared) and LayerNorm: ~43 ms of a ~260 ms bf16 evaluation of 64 videos, for AVCA's two
//! branches. Training keeps the composition ([`super::bmm_flex`], [`super::layer_norm_flex`]),
//! whose backward needs its parts. The products are gemm's calls as in `bmm_flex` and the
//! softmax is burn-flex's row by row (bit for bit); the LayerNorm's statistics are summed in
//! f64 as in training ([`super::layer_norm_flex`]), not in f32 as burn-flex's evaluation does.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::nn::LayerNorm;
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::bmm_flex::operand;
use super::layer_norm_flex::row_stats;
use super::nn::LAYER_NORM_EPS;
use crate::device::is_flex;
use crate::flex;
use crate::strided::{self, Mat, View};

#[backend_extension(Flex)]
pub trait CellAttention: burn::backend::Backend {
    /// `q, k [N, L, Dk]`, `v, x [N, L, C]`, `gamma`, `beta [C]` →
    /// `LN(x + softmax(q kᵀ) v)` per item, `[N, L, C]`, or its mean over `L`, `[N, C]`.
    #[allow(clippy::too_many_arguments)]
    fn cell_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
        mean: bool,
    ) -> FloatTensor<Self>;
}

/// Whether [`attend`] runs here: evaluating (no autodiff) on the CPU, with a LayerNorm that
/// has β; elsewhere the caller composes the attention from burn's operations.
pub fn applies(x: &Tensor<3>, ln: &LayerNorm) -> bool {
    let device = x.device();
    ln.beta.is_some() && !device.is_autodiff() && is_flex(&device)
}

/// `ln(x + softmax(q kᵀ, 2) v)` (no scaling of the scores) in one pass, where [`applies`]
/// says so. `ln` is built by [`super::nn::layer_norm`] (ε = [`LAYER_NORM_EPS`]).
pub fn attend(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    x: &Tensor<3>,
    ln: &LayerNorm,
) -> Tensor<3> {
    Tensor::from_dispatch(dispatch([q, k, v], x, ln, false))
}

/// [`attend`]'s mean over the cells, `[N, C]`, without forming `[N, L, C]` (AVCA's second
/// branch is used only through this mean).
pub fn attend_mean(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    x: &Tensor<3>,
    ln: &LayerNorm,
) -> Tensor<2> {
    Tensor::from_dispatch(dispatch([q, k, v], x, ln, true))
}

fn dispatch(
    [q, k, v]: [Tensor<3>; 3],
    x: &Tensor<3>,
    ln: &LayerNorm,
    mean: bool,
) -> burn::tensor::DispatchTensor {
    assert!(applies(x, ln), "cell attention: evaluation on the CPU only");
    let beta = ln.beta.as_ref().expect("checked by applies");
    <Dispatch as CellAttention>::cell_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        x.clone().into_dispatch(),
        ln.gamma.val().into_dispatch(),
        beta.val().into_dispatch(),
        LAYER_NORM_EPS,
        mean,
    )
}

impl CellAttention for Flex {
    fn cell_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
        mean: bool,
    ) -> FlexTensor {
        let [n, l, c] = x.layout().shape().dims::<3>();
        let (q, k, v) = (
            flex::non_negative_strides(&q),
            flex::non_negative_strides(&k),
            flex::non_negative_strides(&v),
        );
        let (q, kt, v) = (operand(&q, false), operand(&k, true), operand(&v, false));
        let dk = q.cols();
        assert!(
            q.rows() == l && kt.cols() == l && kt.rows() == dk && v.rows() == l && v.cols() == c,
            "cell attention: shapes"
        );
        let x = x.to_contiguous();
        let (gamma, beta) = (flex::to_vec(&gamma), flex::to_vec(&beta));
        let item = |i: usize, y: &mut [MaybeUninit<f32>], s: &mut [f32], o: &mut [f32]| {
            // Scores [L, L], each row a softmax.
            let par = Parallelism::None;
            strided::gemm_into(
                Mat::new(s, l, 1),
                q.item(i),
                kt.item(i),
                [l, l, dk],
                false,
                par,
            );
            s.chunks_mut(l).for_each(softmax_row);
            // Output [L, C] = scores · V, then each row: + X, LayerNorm.
            let scores = View::new(s, l, 1);
            strided::gemm_into(Mat::new(o, c, 1), scores, v.item(i), [l, c, l], false, par);
            let xs = &flex::values(&x)[i * l * c..][..l * c];
            residual_norm(Rows { y, o, x: xs }, (&gamma, &beta), eps);
        };
        // Each item's output: its L rows, or their mean.
        let per = if mean { c } else { l * c };
        let mut y = Vec::with_capacity(n * per);
        if l * c > 0 {
            y.spare_capacity_mut()[..n * per]
                .par_chunks_mut(per)
                .enumerate()
                .for_each_init(
                    || (vec![0f32; l * l], vec![0f32; l * c]),
                    |(s, o), (i, y)| item(i, y, s, o),
                );
        }
        // SAFETY: every item wrote its `per` outputs.
        unsafe { y.set_len(n * per) };
        match mean {
            true => flex::tensor(y, [n, c]),
            false => flex::tensor(y, [n, l, c]),
        }
    }
}

/// An item's rows: the output `y` (`L` rows, or one: their mean), the attention's output `o`
/// (overwritten), the residual `x`.
struct Rows<'a> {
    y: &'a mut [MaybeUninit<f32>],
    o: &'a mut [f32],
    x: &'a [f32],
}

/// `y = LN(o + x)` row by row (`γ`, `β` of the rows' width), with AVX-512 where the CPU has it.
/// The binary is built for any x86-64, so these loops would otherwise use 4-wide SSE2; the
/// values are the same either way (no fused multiply-adds: Rust does not contract).
fn residual_norm(rows: Rows, (gamma, beta): (&[f32], &[f32]), eps: f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked on the line above).
        return unsafe { residual_norm_avx512(rows, (gamma, beta), eps) };
    }
    residual_norm_any(rows, (gamma, beta), eps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn residual_norm_avx512(rows: Rows, (gamma, beta): (&[f32], &[f32]), eps: f64) {
    residual_norm_any(rows, (gamma, beta), eps)
}

#[inline(always)]
fn residual_norm_any(rows: Rows, (gamma, beta): (&[f32], &[f32]), eps: f64) {
    let c = gamma.len();
    let Rows { y, o, x } = rows;
    if y.len() == o.len() {
        for ((y, o), x) in y.chunks_mut(c).zip(o.chunks_mut(c)).zip(x.chunks(c)) {
            o.iter_mut().zip(x).for_each(|(o, &x)| *o += x);
            let (mu, r) = row_stats(o, eps);
            for (((y, &o), &g), &b) in y.iter_mut().zip(&*o).zip(gamma).zip(beta) {
                y.write((o - mu) * r * g + b);
            }
        }
        return;
    }
    // The mean: rows normalised in place, then summed in order and divided, as burn's
    // `mean_dim` does.
    for (o, x) in o.chunks_mut(c).zip(x.chunks(c)) {
        o.iter_mut().zip(x).for_each(|(o, &x)| *o += x);
        let (mu, r) = row_stats(o, eps);
        for ((o, &g), &b) in o.iter_mut().zip(gamma).zip(beta) {
            *o = (*o - mu) * r * g + b;
        }
    }
    let rows = (o.len() / c.max(1)) as f32;
    let (sum, rest) = o.split_at_mut(c.min(o.len()));
    for row in rest.chunks(c) {
        sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
    }
    for (y, &s) in y.iter_mut().zip(&*sum) {
        y.write(s / rows);
    }
}

/// burn-flex's softmax of a row, in its order of operations (so its values bit for bit): the
/// maximum, `exp(x − max)` summed left to right, then each times `1 / sum`.
fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::softmax;
    use burn::tensor::{Device, Distribution};

    /// Against burn's composition: strided Q, K, V slices of one wider tensor, as AVCA's fused
    /// projections hand them over. Tolerance: burn-flex's LayerNorm sums in f32 (its statistics
    /// differ by ~1e-7 relative from ours in f64), scaled by |γ·x̂| ≤ ~10.
    #[test]
    fn matches_burns_composition() {
        let dev = Device::flex();
        let (n, l, dk, c) = (6, 49, 16, 40);
        let normal = |s: [usize; 3]| Tensor::<3>::random(s, Distribution::Normal(0.0, 1.0), &dev);
        let p = normal([n, l, 2 * dk + c]);
        let (q, k, v) = (
            p.clone().narrow(2, 0, dk),
            p.clone().narrow(2, dk, dk),
            p.narrow(2, 2 * dk, c),
        );
        let x = normal([n, l, c]);
        // γ and β away from 1 and 0, so that a mix-up between them shows.
        let mut ln = super::super::nn::layer_norm(c, &dev);
        let param = |mean: f64| {
            burn::module::Param::from_tensor(Tensor::random(
                [c],
                Distribution::Normal(mean, 0.5),
                &dev,
            ))
        };
        ln.gamma = param(1.0);
        ln.beta = Some(param(0.0));
        assert!(applies(&x, &ln));
        let ours = attend(q.clone(), k.clone(), v.clone(), &x, &ln);
        let theirs = ln.forward(x + softmax(q.matmul(k.swap_dims(1, 2)), 2).matmul(v));
        assert_eq!(ours.dims(), [n, l, c]);
        let (ours, theirs) = (crate::to_vec(ours), crate::to_vec(theirs));
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "largest difference {worst}");
        let spread = theirs.iter().map(|v| v.abs()).fold(0f32, f32::max);
        assert!(spread > 1.0, "outputs too small to test anything: {spread}");
    }

    /// The AVX-512 build of the row pass gives the portable build's values bit for bit (the
    /// other tests run whichever this CPU takes).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn residual_norm_is_the_same_with_and_without_avx512() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let (rows, c) = (5, 37); // a width that is not a multiple of any vector length
        let v = |n: usize, seed: u32| -> Vec<f32> {
            (0..n)
                .map(|i| (((i as u32 * 2654435761) ^ seed) % 1000) as f32 / 77.0 - 6.0)
                .collect()
        };
        let (o, x, gamma, beta) = (v(rows * c, 1), v(rows * c, 2), v(c, 3), v(c, 4));
        let run = |avx512: bool| {
            let (mut y, mut o) = (vec![MaybeUninit::new(0f32); rows * c], o.clone());
            let r = Rows {
                y: &mut y,
                o: &mut o,
                x: &x,
            };
            if avx512 {
                // SAFETY: checked above.
                unsafe { residual_norm_avx512(r, (&gamma, &beta), 1e-5) }
            } else {
                residual_norm_any(r, (&gamma, &beta), 1e-5)
            }
            // SAFETY: every value was written.
            y.iter()
                .map(|v| unsafe { v.assume_init() })
                .collect::<Vec<f32>>()
        };
        let (fast, portable) = (run(true), run(false));
        assert_eq!(fast, portable);
        assert!(portable.iter().any(|&v| v.abs() > 1.0));
    }

    /// The mean over the cells, formed without the rows, against burn's mean of the rows.
    #[test]
    fn the_mean_is_the_mean_of_the_rows() {
        let dev = Device::flex();
        let (n, l, dk, c) = (4, 49, 8, 24);
        let normal = |s: [usize; 3]| Tensor::<3>::random(s, Distribution::Normal(0.0, 1.0), &dev);
        let (q, k, v, x) = (
            normal([n, l, dk]),
            normal([n, l, dk]),
            normal([n, l, c]),
            normal([n, l, c]),
        );
        let mut ln = super::super::nn::layer_norm(c, &dev);
        ln.beta = Some(burn::module::Param::from_tensor(Tensor::random(
            [c],
            Distribution::Normal(0.5, 0.5),
            &dev,
        )));
        let rows = attend(q.clone(), k.clone(), v.clone(), &x, &ln);
        let want = crate::to_vec(rows.mean_dim(1).reshape([n, c]));
        let got = attend_mean(q, k, v, &x, &ln);
        assert_eq!(got.dims(), [n, c]);
        for (g, w) in crate::to_vec(got).iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{g} vs {w}");
        }
        assert!(
            want.iter().any(|w| w.abs() > 0.2),
            "means too small to test anything"
        );
    }

    #[test]
    fn softmax_rows_are_burns_bit_for_bit() {
        let dev = Device::flex();
        let t = Tensor::<2>::random([7, 49], Distribution::Normal(0.0, 3.0), &dev);
        let mut ours = crate::to_vec(t.clone());
        ours.chunks_mut(49).for_each(softmax_row);
        assert_eq!(ours, crate::to_vec(softmax(t, 1)));
    }

    #[test]
    fn not_used_in_training() {
        let dev = Device::flex().autodiff();
        let t = Tensor::<3>::zeros([1, 2, 4], &dev);
        let ln = super::super::nn::layer_norm(4, &dev);
        assert!(!applies(&t, &ln));
        assert!(applies(
            &t.inner(),
            &super::super::nn::layer_norm(4, &Device::flex())
        ));
    }
}
