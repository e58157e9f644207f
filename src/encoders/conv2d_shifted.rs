//! Stride-1 k×k convolutions on the CPU as k² shifted matrix products over a zero-padded copy
//! of each image: no im2col buffer, the GEMM's own packing reads the shifted windows.
//!
//! Laid out on the padded width `Pw = W + 2p`, output pixel `(y, x)` sits at `y·Pw + x`, and
//! the input it sees through kernel tap `(i, j)` at the same index plus `i·Pw + j`. So with
//! `X̃ [C, Ph·Pw]` the padded image, `Y [O, Ho·Pw] = Σ_ij W_ij [O, C] × X̃[:, i·Pw + j ..]`:
//! k² GEMMs whose right operand is a window of X̃ (row stride one plane) and whose left operand
//! is a strided view of the weight. The `Pw − Wo` columns that wrap around a row are dropped
//! (forward) or zero (the output gradient, so they add nothing backward). The input gradient
//! adds `W_ijᵀ × dY` into the same windows of a padded buffer, and the weight gradient is
//! `dW_ij += dY × X̃ windowᵀ`, accumulated over the images.
//!
//! Why our own: burn-flex's convolution copies the input to NHWC on one thread, and its
//! im2col tiles and output scatter cost more than the products for the encoders' 3×3 layers
//! (measured at 20 images: layer1's forward 88 ms against 67 here, input gradient 69 against 55,
//! weight gradient as im2col products 100 against 53; BENCHMARKS.md).
//! Images run in parallel, each product on one thread (one image: the product is parallel).

use core::ops::Range;
use gemm::Parallelism;
use rayon::prelude::*;

use crate::strided::{Mat, View, gemm_into};

/// A stride-1 convolution: input `[C, H, W]` per image, `O` filters of `k×k`, zero padding `p`.
#[derive(Debug, Clone, Copy)]
pub struct Shifted {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub p: usize,
}

impl Shifted {
    fn pw(&self) -> usize {
        self.w + 2 * self.p
    }
    pub fn ho(&self) -> usize {
        self.h + 2 * self.p + 1 - self.k
    }
    pub fn wo(&self) -> usize {
        self.w + 2 * self.p + 1 - self.k
    }
    /// One padded channel plane, plus the k − 1 values the last window reads past it.
    fn plane(&self) -> usize {
        (self.h + 2 * self.p) * self.pw() + self.k - 1
    }
    /// Output pixels on the padded width.
    fn lp(&self) -> usize {
        self.ho() * self.pw()
    }
    fn taps(&self) -> impl Iterator<Item = (usize, usize)> {
        let (k, pw) = (self.k, self.pw());
        (0..k * k).map(move |t| (t, (t / k) * pw + t % k))
    }
    fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }
    fn out_len(&self) -> usize {
        self.o * self.ho() * self.wo()
    }

    /// `x [C, H, W]` → `X̃ [C, plane]`.
    fn pad(&self, x: &[f32]) -> Vec<f32> {
        let (plane, pw, p) = (self.plane(), self.pw(), self.p);
        let mut xp = vec![0f32; self.c * plane];
        for (src, dst) in x.chunks(self.h * self.w).zip(xp.chunks_mut(plane)) {
            for (row, s) in src.chunks(self.w).enumerate() {
                dst[(row + p) * pw + p..][..self.w].copy_from_slice(s);
            }
        }
        xp
    }

    /// `dy [O, Ho, Wo]` → `[O, Ho·Pw]`, zero in the wrap-around columns.
    fn widen(&self, dy: &[f32]) -> Vec<f32> {
        let (wo, pw) = (self.wo(), self.pw());
        let mut out = vec![0f32; self.o * self.lp()];
        for (src, dst) in dy.chunks(wo).zip(out.chunks_mut(pw)) {
            dst[..wo].copy_from_slice(src);
        }
        out
    }

    /// `y [O, Ho, Wo]` of one image.
    fn forward_image(&self, weight: &[f32], x: &[f32], y: &mut [f32], par: Parallelism) {
        let (xp, kk, lp) = (self.pad(x), self.k * self.k, self.lp());
        let mut yp = vec![0f32; self.o * lp];
        for (t, offset) in self.taps() {
            let dst = Mat::new(&mut yp, lp, 1);
            let lhs = View::new(&weight[t..], self.c * kk, kk);
            let rhs = View::new(&xp[offset..], self.plane(), 1);
            gemm_into(dst, lhs, rhs, [self.o, lp, self.c], t > 0, par);
        }
        for (dst, src) in y.chunks_mut(self.wo()).zip(yp.chunks(self.pw())) {
            dst.copy_from_slice(&src[..self.wo()]);
        }
    }

    /// Adds this image's input gradient to `dx [C, H, W]` and, when given, its weight gradient
    /// to `dw [O, C, k, k]`.
    fn backward_image(
        &self,
        weight: &[f32],
        x: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dw: Option<&mut [f32]>,
        par: Parallelism,
    ) {
        let (dyp, kk, lp, plane) = (self.widen(dy), self.k * self.k, self.lp(), self.plane());
        if let Some(dx) = dx {
            let mut dxp = vec![0f32; self.c * plane];
            for (t, offset) in self.taps() {
                let dst = Mat::new(&mut dxp[offset..], plane, 1);
                let lhs = View::new(&weight[t..], kk, self.c * kk);
                let rhs = View::new(&dyp, lp, 1);
                gemm_into(dst, lhs, rhs, [self.c, lp, self.o], true, par);
            }
            let (pw, p) = (self.pw(), self.p);
            for (dst, src) in dx.chunks_mut(self.h * self.w).zip(dxp.chunks(plane)) {
                for (row, d) in dst.chunks_mut(self.w).enumerate() {
                    d.copy_from_slice(&src[(row + p) * pw + p..][..self.w]);
                }
            }
        }
        if let Some(dw) = dw {
            let xp = self.pad(x);
            for (t, offset) in self.taps() {
                let dst = Mat::new(&mut dw[t..], self.c * kk, kk);
                let lhs = View::new(&dyp, lp, 1);
                let rhs = View::new(&xp[offset..], 1, plane);
                gemm_into(dst, lhs, rhs, [self.o, self.c, lp], true, par);
            }
        }
    }

    /// `y [N, O, Ho, Wo]` for `x [N, C, H, W]`, `weight [O, C, k, k]` (contiguous).
    pub fn forward(&self, x: &[f32], weight: &[f32]) -> Vec<f32> {
        let n = x.len() / self.image_len();
        let par = inner_parallelism(n);
        let mut y = vec![0f32; n * self.out_len()];
        y.par_chunks_mut(self.out_len())
            .zip(x.par_chunks(self.image_len()))
            .for_each(|(y, x)| self.forward_image(weight, x, y, par));
        y
    }

    /// `(dx, dw)` for the output gradient `dy [N, O, Ho, Wo]`, each only when asked for.
    /// The images are cut into at most [`PARTS`] fixed runs, each adding up its own weight
    /// gradient, and the runs' sums are added in order: the same result on every run and
    /// every machine, whatever the threads do.
    pub fn backward(
        &self,
        x: &[f32],
        weight: &[f32],
        dy: &[f32],
        need: [bool; 2],
    ) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
        let (len, n) = (self.image_len(), x.len() / self.image_len());
        let parts = n.clamp(1, PARTS);
        let par = inner_parallelism(parts);
        let runs: Vec<Range<usize>> = (0..parts)
            .map(|q| q * n / parts..(q + 1) * n / parts)
            .collect();
        let mut dx = need[0].then(|| vec![0f32; x.len()]);
        let mut dx_runs: Vec<Option<&mut [f32]>> = Vec::with_capacity(parts);
        let mut rest = dx.as_deref_mut();
        for run in &runs {
            let (head, tail) = match rest.take() {
                Some(r) => {
                    let (h, t) = r.split_at_mut(run.len() * len);
                    (Some(h), Some(t))
                }
                None => (None, None),
            };
            dx_runs.push(head);
            rest = tail;
        }
        let sums: Vec<Option<Vec<f32>>> = runs
            .into_par_iter()
            .zip(dx_runs)
            .map(|(run, mut dx)| {
                let mut dw = need[1].then(|| vec![0f32; weight.len()]);
                for (k, i) in run.enumerate() {
                    let dx = dx.as_deref_mut().map(|d| &mut d[k * len..][..len]);
                    let x = &x[i * len..][..len];
                    let dy = &dy[i * self.out_len()..][..self.out_len()];
                    self.backward_image(weight, x, dy, dx, dw.as_deref_mut(), par);
                }
                dw
            })
            .collect();
        let dw = sums.into_iter().reduce(|a, b| {
            a.zip(b).map(|(mut a, b)| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            })
        });
        (dx, dw.flatten())
    }
}

/// Runs of images whose weight gradients are summed separately (memory: one weight-sized
/// buffer each).
const PARTS: usize = 8;

/// One product per task when there are tasks enough for the threads; otherwise each product
/// is itself parallel (gemm splits its output, so the sums stay in the same order).
fn inner_parallelism(tasks: usize) -> Parallelism {
    if tasks >= rayon::current_num_threads() {
        Parallelism::None
    } else {
        Parallelism::Rayon(0)
    }
}
