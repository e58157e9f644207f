//! AVCA's guided products `f(A) ⊙ f(b)` ([`super::gate_flex`]) where only a reduction of them
//! is used, in one pass when evaluating on the CPU (`flex`):
//! - the attention logits `Linear(C → 1)(f(A) ⊙ f(b))` (self-calibration's `ave_v_att`,
//!   spatial attention's `affine_v_s_att`): [`gate_logit`];
//! - the channel attention's mean over the cells `mean_cells(f(A) ⊙ f(b))`: [`gate_mean`].
//!
//! Why our own: composed, the product `[B·T, 49, C]` (32–64 MB at batch 64) is written and read
//! back — for a product with one output column, which in bf16 also converts it and computes
//! 32 columns wide, or for burn's mean over the cells, on one thread. Here each row of `A` is
//! read where it lies (a slice of a wider projection) and reduced at once. The logits sum in
//! sixteen f32 partial sums (within f32 rounding of the composition, not bit for bit); the
//! mean sums the cells in order and divides, as burn's `mean_dim`. Training keeps the
//! composition, whose backward needs the product.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::gate_flex::{Cells, f, gate};
use super::nn::flat;
use crate::device::is_flex;
use crate::flex;

#[backend_extension(Flex)]
pub trait GateReduced: burn::backend::Backend {
    /// `a [R, L, C]`, `b [R, C]`, `w [C]`, `bias` → `[R, L, 1]`: `Σ_c f(a)·f(b)·w + bias`.
    fn gate_logit(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: f32,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// `a [R, L, C]`, `b [R, C]` → `[R, C]`: `mean_L f(a)·f(b)`.
    fn gate_mean(a: FloatTensor<Self>, b: FloatTensor<Self>, relu: bool) -> FloatTensor<Self>;
}

/// `flat(l, gate(a, b, relu_both))` for `a [R, L, C]`, `b [R, C]` and `l` a `Linear(C → 1)`
/// with a bias: `[R, L, 1]`, in one pass when evaluating on the CPU.
pub fn gate_logit(a: Tensor<3>, b: Tensor<2>, relu_both: bool, l: &Linear) -> Tensor<3> {
    let device = a.device();
    let one_out = l.weight.dims()[1] == 1;
    let (true, false, true, Some(bias)) = (
        is_flex(&device),
        device.is_autodiff(),
        one_out,
        l.bias.as_ref(),
    ) else {
        return flat(l, gate(a, b, relu_both));
    };
    let c = l.weight.dims()[0];
    let bias = crate::to_vec(bias.val())[0];
    let y = <Dispatch as GateReduced>::gate_logit(
        a.into_dispatch(),
        b.into_dispatch(),
        l.weight.val().reshape([c]).into_dispatch(),
        bias,
        relu_both,
    );
    Tensor::from_dispatch(y)
}

/// `gate(a, b, relu_both).mean_dim(1)` for `a [R, L, C]`, `b [R, C]`: `[R, C]`, in one pass
/// when evaluating on the CPU.
pub fn gate_mean(a: Tensor<3>, b: Tensor<2>, relu_both: bool) -> Tensor<2> {
    let device = a.device();
    if device.is_autodiff() || !is_flex(&device) {
        let [r, _, c] = a.dims();
        return gate(a, b, relu_both).mean_dim(1).reshape([r, c]);
    }
    let y = <Dispatch as GateReduced>::gate_mean(a.into_dispatch(), b.into_dispatch(), relu_both);
    Tensor::from_dispatch(y)
}

impl GateReduced for Flex {
    fn gate_logit(
        a: FlexTensor,
        b: FlexTensor,
        w: FlexTensor,
        bias: f32,
        relu: bool,
    ) -> FlexTensor {
        let [r, l, c] = a.layout().shape().dims::<3>();
        let (b, w) = (b.to_contiguous(), flex::to_vec(&w));
        let mut copy = None;
        let cells = Cells::of(&a, &mut copy);
        let mut y = vec![0f32; r * l];
        if c > 0 {
            y.par_chunks_mut(l.max(1))
                .zip(flex::values(&b).par_chunks(c))
                .enumerate()
                .for_each_init(Vec::new, |bw, (row, (y, b))| {
                    // f(b)·w of this row, in a buffer each thread reuses.
                    bw.clear();
                    bw.extend(b.iter().zip(&w).map(|(&b, &w)| f(b, relu) * w));
                    for (cell, y) in y.iter_mut().enumerate() {
                        *y = dot(cells.row(row, cell, c), bw, relu) + bias;
                    }
                });
        } else {
            y.fill(bias);
        }
        flex::tensor(y, [r, l, 1])
    }

    fn gate_mean(a: FlexTensor, b: FlexTensor, relu: bool) -> FlexTensor {
        let [r, l, c] = a.layout().shape().dims::<3>();
        let b = b.to_contiguous();
        let mut copy = None;
        let cells = Cells::of(&a, &mut copy);
        let mut y = vec![0f32; r * c];
        y.par_chunks_mut(c.max(1))
            .zip(flex::values(&b).par_chunks(c.max(1)))
            .enumerate()
            .for_each(|(row, (y, b))| {
                for cell in 0..l {
                    let a = cells.row(row, cell, c);
                    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
                        *y += f(a, relu) * f(b, relu);
                    }
                }
                y.iter_mut().for_each(|y| *y /= l as f32);
            });
        flex::tensor(y, [r, c])
    }
}

/// `Σ f(a)·bw`, with AVX-512 where the CPU has it (the binary targets any x86-64); the same
/// value either way (sixteen partial sums, no contraction).
fn dot(a: &[f32], bw: &[f32], relu: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked on the line above).
        return unsafe { dot_avx512(a, bw, relu) };
    }
    dot_any(a, bw, relu)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], bw: &[f32], relu: bool) -> f32 {
    dot_any(a, bw, relu)
}

#[inline(always)]
fn dot_any(a: &[f32], bw: &[f32], relu: bool) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (a16, b16) = (a.chunks_exact(L), bw.chunks_exact(L));
    let tail: f32 = a16
        .remainder()
        .iter()
        .zip(b16.remainder())
        .map(|(&a, &b)| f(a, relu) * b)
        .sum();
    for (a, b) in a16.zip(b16) {
        for ((s, &a), &b) in acc.iter_mut().zip(a).zip(b) {
            *s += f(a, relu) * b;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// Against the composition, with `a` a slice of a wider tensor (as AVCA hands it over) and
    /// a width that is not a multiple of 16. Tolerance: f32 sums of 40 products of size ~1,
    /// summed in another order (~1e-6 relative to Σ|terms|).
    #[test]
    fn matches_the_composition() {
        let dev = Device::flex();
        let (r, l, c) = (5, 49, 40);
        for relu in [true, false] {
            let wide = Tensor::<3>::random([r, l, c + 7], Distribution::Normal(0.0, 1.0), &dev);
            let a = wide.narrow(2, 3, c);
            let b = Tensor::<2>::random([r, c], Distribution::Normal(0.0, 1.0), &dev);
            let lin = super::super::nn::linear(c, 1, &dev);
            let ours = gate_logit(a.clone(), b.clone(), relu, &lin);
            let theirs = flat(&lin, gate(a, b, relu));
            assert_eq!(ours.dims(), [r, l, 1]);
            let (ours, theirs) = (crate::to_vec(ours), crate::to_vec(theirs));
            for (o, t) in ours.iter().zip(&theirs) {
                assert!((o - t).abs() <= 1e-5, "relu {relu}: {o} vs {t}");
            }
            let spread = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(spread > 0.5, "logits too small to test anything");
        }
    }

    /// Against burn's mean of the product (its values to f32 rounding: the sum over the cells
    /// in another order at most), `a` transposed (no view: copied).
    #[test]
    fn the_mean_matches_the_composition() {
        let dev = Device::flex();
        let (r, l, c) = (4, 49, 24);
        for relu in [true, false] {
            let a = Tensor::<3>::random([r, c, l], Distribution::Normal(0.0, 1.0), &dev)
                .swap_dims(1, 2);
            let b = Tensor::<2>::random([r, c], Distribution::Normal(0.0, 1.0), &dev);
            let ours = gate_mean(a.clone(), b.clone(), relu);
            let theirs = gate(a, b, relu).mean_dim(1).reshape([r, c]);
            assert_eq!(ours.dims(), [r, c]);
            let (ours, theirs) = (crate::to_vec(ours), crate::to_vec(theirs));
            for (o, t) in ours.iter().zip(&theirs) {
                assert!(
                    (o - t).abs() <= 1e-6 * (1.0 + t.abs()),
                    "relu {relu}: {o} vs {t}"
                );
            }
            assert!(
                theirs.iter().any(|t| t.abs() > 0.2),
                "means too small to test anything"
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_dot_is_the_same_with_and_without_avx512() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let a: Vec<f32> = (0..53).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..53).map(|i| (i as f32 * 0.11).cos()).collect();
        for relu in [true, false] {
            // SAFETY: checked above.
            let fast = unsafe { dot_avx512(&a, &b, relu) };
            assert_eq!(fast.to_bits(), dot_any(&a, &b, relu).to_bits());
        }
    }
}
