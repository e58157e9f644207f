//! Dropout with a fast mask on the CPU.
//!
//! burn's `Dropout` draws a Bernoulli value per element through its generic random path (a
//! ChaCha stream and a float sample per element): about 10 % of a CPU training step went there
//! (the model drops out ~50 M activations per step). Here, on the `flex` device, one seed is
//! drawn from the device RNG per call — so runs stay deterministic under `device.seed` — and the
//! mask is filled in parallel by a counter-based generator (SplitMix64 of seed and element index,
//! two 32-bit draws per output pair), independent of the thread count, and applied in the same
//! pass; the backward draws the mask again from the seed, so nothing of the size of the
//! activation is kept for it (burn's `x * mask` keeps the mask). Other devices keep burn's
//! own draw. Semantics are PyTorch's: in training each element is zeroed with probability `p`
//! and the rest scaled by `1/(1 − p)`; in evaluation (a non-autodiff device) it is the identity.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Dispatch, Flex, backend_extension};
use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::flex;

#[derive(Module, Debug)]
pub struct Dropout {
    pub prob: f64,
}

/// SplitMix64 finaliser: a well-mixed 64-bit value of `z`.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Elements handed to one task (even, so a task holds whole pairs of draws).
const CHUNK: usize = 1 << 14;

/// `1/(1 − p)`, the factor of the elements kept.
fn kept_scale(p: f64) -> f32 {
    (1.0 / (1.0 - p)) as f32
}

/// `x[i]·mᵢ`, where `mᵢ` is `0` (probability `p`) or `1/(1 − p)`, drawn for element `i` from
/// `seed`: the same mask for any thread count, so the backward can draw it again instead of
/// keeping it (64 MB per AVCA dropout at batch 64). With `relu`, `ReLU(x[i])·mᵢ`.
fn apply_mask(seed: u64, p: f64, x: &[f32], relu: bool) -> Vec<f32> {
    let scale = kept_scale(p);
    // An element is dropped when its 32-bit draw is below p·2³².
    let threshold = (p * 4_294_967_296.0).min(4_294_967_295.0) as u64;
    let mut out = crate::flex::zeros(x.len());
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(c, (out, x))| {
            let task = Task {
                seed,
                first_pair: (c * CHUNK / 2) as u64,
                threshold,
                scale,
            };
            match (relu, wide_integers()) {
                // SAFETY: the CPU has the features (checked at run time).
                (false, true) => unsafe { task.run_avx512::<false>(x, out) },
                (true, true) => unsafe { task.run_avx512::<true>(x, out) },
                (false, false) => task.run::<false>(x, out),
                (true, false) => task.run::<true>(x, out),
            }
        });
    out
}

/// Whether the CPU multiplies 64-bit integers in vectors (AVX-512 DQ): the mask's hashing is
/// four 64-bit multiplies per pair of elements, scalar without it. Checked at run time; the
/// build targets the baseline x86-64.
fn wide_integers() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512dq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One task's share of [`apply_mask`]: elements from pair `first_pair` on.
struct Task {
    seed: u64,
    first_pair: u64,
    threshold: u64,
    scale: f32,
}

impl Task {
    /// Pairs of draws per block: the hashes first (a loop the compiler vectorises), then the
    /// elements.
    const PAIRS: usize = 64;

    #[inline(always)]
    fn run<const RELU: bool>(&self, x: &[f32], out: &mut [f32]) {
        let mut factor = [0f32; 2 * Self::PAIRS];
        for (b, (out, x)) in out
            .chunks_mut(2 * Self::PAIRS)
            .zip(x.chunks(2 * Self::PAIRS))
            .enumerate()
        {
            let base = self.first_pair + (b * Self::PAIRS) as u64;
            for (i, f) in factor.chunks_exact_mut(2).enumerate() {
                let r = mix(self.seed ^ mix(base + i as u64));
                for (k, f) in f.iter_mut().enumerate() {
                    let draw = (r >> (32 * k)) & 0xFFFF_FFFF;
                    *f = if draw < self.threshold {
                        0.0
                    } else {
                        self.scale
                    };
                }
            }
            for ((o, &x), &f) in out.iter_mut().zip(x).zip(&factor) {
                // burn's ReLU: x ≤ 0 → 0, a NaN stays one.
                let x = if RELU && x <= 0.0 { 0.0 } else { x };
                // x·0, not 0: a NaN or ∞ stays one, as in PyTorch's `x * mask`.
                *o = x * f;
            }
        }
    }

    /// [`Task::run`] compiled for AVX-512 (8 draws per vector).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and DQ ([`wide_integers`]).
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512dq"))]
    unsafe fn run_avx512<const RELU: bool>(&self, x: &[f32], out: &mut [f32]) {
        self.run::<RELU>(x, out)
    }
}

#[backend_extension(Flex, Autodiff)]
pub trait SeededDropout: burn::backend::Backend {
    /// `x` times the mask [`apply_mask`] draws from `seed`.
    fn dropout_seeded(x: FloatTensor<Self>, seed: u64, p: f64) -> FloatTensor<Self>;

    /// `ReLU(x)` times that mask, in one pass.
    fn relu_dropout_seeded(x: FloatTensor<Self>, seed: u64, p: f64) -> FloatTensor<Self>;
}

fn dropout_flex(x: &FlexTensor, seed: u64, p: f64, relu: bool) -> FlexTensor {
    let x = x.to_contiguous();
    flex::tensor(
        apply_mask(seed, p, flex::values(&x), relu),
        x.layout().shape().clone(),
    )
}

impl SeededDropout for Flex {
    fn dropout_seeded(x: FlexTensor, seed: u64, p: f64) -> FlexTensor {
        dropout_flex(&x, seed, p, false)
    }

    fn relu_dropout_seeded(x: FlexTensor, seed: u64, p: f64) -> FlexTensor {
        dropout_flex(&x, seed, p, true)
    }
}

/// The backward keeps the seed, not the mask: `dx = dy·m` with `m` drawn again.
#[derive(Debug)]
struct DropoutBackward;

impl Backward<Flex, 1> for DropoutBackward {
    type State = (u64, f64);

    fn backward(self, ops: Ops<(u64, f64), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_x {
            let (seed, p) = ops.state;
            grads.register::<Flex>(node.id, dropout_flex(&dy, seed, p, false));
        }
    }
}

/// `y = ReLU(x)·m` is positive exactly where `x > 0` and the element was kept, and there
/// `dy/dx = 1/(1 − p)`: the backward reads `y`, which the next layer keeps anyway, where
/// ReLU then dropout would keep ReLU's output too (64 MB after `v_fc` at batch 64). Equal to
/// that composition's `dy·m·[ReLU(x) > 0]` for finite `dy`.
#[derive(Debug)]
struct ReluDropoutBackward;

impl Backward<Flex, 1> for ReluDropoutBackward {
    type State = (FlexTensor, f32);

    fn backward(self, ops: Ops<(FlexTensor, f32), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        if let Some(node) = node_x {
            let (y, scale) = ops.state;
            // Written once, in parallel (no zero-filled buffer first).
            let dx: Vec<f32> = (flex::values(&y).par_iter())
                .zip(flex::values(&dy))
                .with_min_len(CHUNK)
                .map(|(&y, &dy)| if y > 0.0 { dy * scale } else { 0.0 })
                .collect();
            grads.register::<Flex>(node.id, flex::tensor(dx, dy.layout().shape().clone()));
        }
    }
}

impl<C: CheckpointStrategy> SeededDropout for Autodiff<Flex, C> {
    fn dropout_seeded(x: FloatTensor<Self>, seed: u64, p: f64) -> FloatTensor<Self> {
        let node = [x.node()];
        let out = dropout_flex(&x.into_primitive(), seed, p, false);
        match DropoutBackward
            .prepare::<C>(node)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((seed, p), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn relu_dropout_seeded(x: FloatTensor<Self>, seed: u64, p: f64) -> FloatTensor<Self> {
        let node = [x.node()];
        let out = dropout_flex(&x.into_primitive(), seed, p, true);
        match ReluDropoutBackward
            .prepare::<C>(node)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((out.clone(), kept_scale(p)), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

impl Dropout {
    pub fn new(prob: f64) -> Self {
        Self { prob }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self.seed(&x) {
            None => self.forward_generic(x),
            Some(seed) => Tensor::from_dispatch(<Dispatch as SeededDropout>::dropout_seeded(
                x.into_dispatch(),
                seed,
                self.prob,
            )),
        }
    }

    /// `self.forward(relu(x))`, in one op when training on the CPU.
    pub fn forward_relu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self.seed(&x) {
            None => self.forward_generic(relu(x)),
            Some(seed) => Tensor::from_dispatch(<Dispatch as SeededDropout>::relu_dropout_seeded(
                x.into_dispatch(),
                seed,
                self.prob,
            )),
        }
    }

    /// The seed of this call's mask when the seeded op runs (training on `flex`, p > 0): one
    /// per call from the device RNG (two 32-bit uniform draws).
    fn seed<const D: usize>(&self, x: &Tensor<D>) -> Option<u64> {
        let device = x.device();
        // Device equality does not see autodiff: evaluation on `flex` equals `flex().autodiff()`.
        if self.prob == 0.0 || !device.is_autodiff() || device != Device::flex().autodiff() {
            return None;
        }
        let s = crate::to_vec(Tensor::<1>::random(
            [2],
            Distribution::Uniform(0.0, 4_294_967_296.0),
            &device,
        ));
        Some(((s[0] as u64) << 32) ^ (s[1] as u64))
    }

    /// Evaluation (identity), p = 0, and devices other than `flex`: burn's own draw.
    fn forward_generic<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if !x.device().is_autodiff() || self.prob == 0.0 {
            return x;
        }
        let keep = 1.0 - self.prob;
        (x.clone() * x.random_like(Distribution::Bernoulli(keep))) * (1.0 / keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// The mask values (`0` or `1/(1 − p)`) for `n` elements from `seed`.
    fn mask(seed: u64, n: usize, p: f64) -> Vec<f32> {
        apply_mask(seed, p, &vec![1.0; n], false)
    }

    /// The mask is its definition — element `e` dropped when the 32-bit half `e mod 2` of
    /// `mix(seed ^ mix(⌊e/2⌋))` is below `p·2³²` — on the AVX-512 path and the plain one,
    /// bit for bit, across task boundaries and an odd length, NaN kept.
    #[test]
    fn mask_is_its_definition_on_every_path() {
        let (seed, p) = (0x5EED_1234_u64, 0.3);
        let n = 2 * CHUNK + 2 * Task::PAIRS + 5;
        let mut x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 201) as f32 - 100.0).collect();
        x[3] = f32::NAN;
        let threshold = (p * 4_294_967_296.0) as u64;
        for relu in [false, true] {
            let expect: Vec<u32> = (0..n)
                .map(|e| {
                    let r = mix(seed ^ mix((e / 2) as u64));
                    let draw = (r >> (32 * (e % 2))) & 0xFFFF_FFFF;
                    let v = if relu && x[e] <= 0.0 { 0.0 } else { x[e] };
                    let f = if draw < threshold { 0.0 } else { kept_scale(p) };
                    (v * f).to_bits()
                })
                .collect();
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert_eq!(bits(apply_mask(seed, p, &x, relu)), expect, "relu {relu}");
            let task = Task {
                seed,
                first_pair: 0,
                threshold,
                scale: kept_scale(p),
            };
            let mut plain = vec![0f32; n];
            if relu {
                task.run::<true>(&x, &mut plain)
            } else {
                task.run::<false>(&x, &mut plain)
            }
            assert_eq!(bits(plain), expect, "plain path, relu {relu}");
        }
    }

    /// The op's output and gradient against burn's `x * mask` with the mask made apart: the
    /// backward must draw the forward's mask again, element for element (a non-contiguous
    /// input spanning several tasks).
    #[test]
    fn backward_draws_the_forward_mask_again() {
        let _rng = crate::rng_lock(); // draws from the device generator
        let device = Device::flex().autodiff();
        let normal = |shape| Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let x = normal([3, 50, 700]).swap_dims(1, 2).require_grad();
        let probe = normal([3, 700, 50]);
        let (seed, p) = (0x5eed_u64, 0.3);
        let m = Tensor::<3>::from_data(
            TensorData::new(mask(seed, 3 * 700 * 50, p), [3, 700, 50]),
            &device,
        );
        let ours = Tensor::<3>::from_dispatch(<Dispatch as SeededDropout>::dropout_seeded(
            x.clone().into_dispatch(),
            seed,
            p,
        ));
        let theirs = x.clone() * m;
        let grad =
            |y: Tensor<3>| crate::to_vec(x.grad(&(y * probe.clone()).sum().backward()).unwrap());
        assert_eq!(crate::to_vec(ours.clone()), crate::to_vec(theirs.clone()));
        assert_eq!(grad(ours), grad(theirs));
    }

    /// The fused op against burn's `relu` then the seeded dropout: the same output and input
    /// gradient, bit for bit, with inputs at, below and above 0.
    #[test]
    fn relu_then_dropout_in_one_op_matches_the_two() {
        let _rng = crate::rng_lock();
        let device = Device::flex().autodiff();
        let normal = |shape| Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let x = (normal([4, 49, 300]).mask_fill(normal([4, 49, 300]).greater_elem(1.5), 0.0))
            .require_grad();
        let probe = normal([4, 49, 300]);
        let (seed, p) = (0xfeed_u64, 0.2);
        let fused = Tensor::<3>::from_dispatch(<Dispatch as SeededDropout>::relu_dropout_seeded(
            x.clone().into_dispatch(),
            seed,
            p,
        ));
        let apart = Tensor::<3>::from_dispatch(<Dispatch as SeededDropout>::dropout_seeded(
            relu(x.clone()).into_dispatch(),
            seed,
            p,
        ));
        let grad =
            |y: Tensor<3>| crate::to_vec(x.grad(&(y * probe.clone()).sum().backward()).unwrap());
        let out = crate::to_vec(fused.clone());
        assert_eq!(out, crate::to_vec(apart.clone()));
        assert!(out.iter().any(|&v| v > 0.0) && out.contains(&0.0));
        assert_eq!(grad(fused), grad(apart));
    }

    #[test]
    fn mask_drops_p_of_the_elements_and_scales_the_rest() {
        let n = 1 << 20;
        for p in [0.1, 0.2, 0.5] {
            let m = mask(7, n, p);
            let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
            // Binomial: std of the fraction is sqrt(p(1−p)/n) < 5e-4; allow 5 std.
            assert!((dropped - p).abs() < 2.5e-3, "p {p}: dropped {dropped}");
            let scale = (1.0 / (1.0 - p)) as f32;
            assert!(m.iter().all(|&v| v == 0.0 || v == scale));
            // Unbiased: the mean of the mask is 1.
            let mean = m.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            assert!((mean - 1.0).abs() < 6e-3, "p {p}: mean {mean}");
        }
        // Deterministic in the seed, different across seeds, and no visible period between
        // neighbouring chunks.
        assert_eq!(mask(3, 1000, 0.2), mask(3, 1000, 0.2));
        assert_ne!(mask(3, 1000, 0.2), mask(4, 1000, 0.2));
        let m = mask(9, 1 << 16, 0.5);
        assert_ne!(m[..1 << 14], m[1 << 14..2 << 14]);
    }

    #[test]
    fn dropout_is_identity_in_evaluation_and_seeded_in_training() {
        let _rng = crate::rng_lock();
        let x = Tensor::<2>::ones([64, 100], &Device::flex());
        let d = Dropout::new(0.3);
        assert_eq!(crate::to_vec(d.forward(x.clone())), vec![1.0; 6400]);
        let signed = Tensor::cat(
            vec![x.clone().mul_scalar(-1.0).slice(0..32), x.slice(32..64)],
            0,
        );
        let relu_only = crate::to_vec(d.forward_relu(signed));
        assert_eq!(relu_only, [vec![0.0; 3200], vec![1.0; 3200]].concat());
        let dev = Device::flex().autodiff();
        let run = || {
            dev.seed(11);
            crate::to_vec(d.forward(Tensor::<2>::ones([64, 100], &dev)))
        };
        let a = run();
        assert_eq!(a, run());
        let zeros = a.iter().filter(|&&v| v == 0.0).count();
        assert!(
            (1700..2150).contains(&zeros),
            "{zeros} of 6400 dropped at p 0.3"
        );
    }
}
