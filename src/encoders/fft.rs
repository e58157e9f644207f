//! A radix-2 FFT in f64 for the power-of-two frame sizes of the audio front ends (512, 1024).
//!
//! f64 keeps the front ends' spectra within ~1e-13 of NumPy's: the log-mel values then differ from
//! the references by rounding to f32 only, also in quiet bins where f32 would lose digits.

use std::f64::consts::PI;

/// Forward transform of length `n` (a power of two), twiddles and bit-reversal precomputed.
pub struct Fft {
    n: usize,
    /// `(cos, sin)` of `2πk/n` for `k < n/2`; the forward transform uses `e^{-2πik/n}`.
    twiddles: Vec<(f64, f64)>,
    /// `bit_reverse[i]`: where input `i` goes before the butterflies.
    bit_reverse: Vec<usize>,
}

impl Fft {
    pub fn new(n: usize) -> Self {
        assert!(
            n.is_power_of_two() && n >= 2,
            "FFT length {n} is not a power of two"
        );
        let bits = n.trailing_zeros();
        let twiddles = (0..n / 2)
            .map(|k| {
                let a = 2.0 * PI * k as f64 / n as f64;
                (a.cos(), a.sin())
            })
            .collect();
        let bit_reverse = (0..n)
            .map(|i| i.reverse_bits() >> (usize::BITS - bits))
            .collect();
        Self {
            n,
            twiddles,
            bit_reverse,
        }
    }

    /// In-place `X[k] = Σ_j x[j] e^{-2πijk/n}` on split real/imaginary parts.
    pub fn forward(&self, re: &mut [f64], im: &mut [f64]) {
        let n = self.n;
        assert!(re.len() == n && im.len() == n);
        for i in 0..n {
            let j = self.bit_reverse[i];
            if i < j {
                re.swap(i, j);
                im.swap(i, j);
            }
        }
        let mut len = 2;
        while len <= n {
            let half = len / 2;
            let step = n / len;
            for start in (0..n).step_by(len) {
                for j in 0..half {
                    let (c, s) = self.twiddles[j * step];
                    let (a, b) = (start + j, start + j + half);
                    // v = x[b] · e^{-iθ} = x[b] · (c - i s)
                    let vr = re[b] * c + im[b] * s;
                    let vi = im[b] * c - re[b] * s;
                    re[b] = re[a] - vr;
                    im[b] = im[a] - vi;
                    re[a] += vr;
                    im[a] += vi;
                }
            }
            len *= 2;
        }
    }

    /// The `n/2 + 1` non-redundant bins of a real frame's transform (`frame` shorter than `n`
    /// is zero-padded, as `np.fft.rfft(frame, n)` does).
    pub fn real_spectrum(&self, frame: &[f64], re: &mut Vec<f64>, im: &mut Vec<f64>) {
        assert!(frame.len() <= self.n);
        re.clear();
        re.extend_from_slice(frame);
        re.resize(self.n, 0.0);
        im.clear();
        im.resize(self.n, 0.0);
        self.forward(re, im);
        re.truncate(self.n / 2 + 1);
        im.truncate(self.n / 2 + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the O(n²) definition on a deterministic non-symmetric signal.
    #[test]
    fn matches_naive_dft() {
        for n in [2usize, 8, 64, 512] {
            let x: Vec<f64> = (0..n)
                .map(|i| ((i * 7919) % 113) as f64 / 50.0 - 1.0)
                .collect();
            let fft = Fft::new(n);
            let (mut re, mut im) = (Vec::new(), Vec::new());
            fft.real_spectrum(&x, &mut re, &mut im);
            for k in 0..=n / 2 {
                let (mut er, mut ei) = (0.0, 0.0);
                for (j, v) in x.iter().enumerate() {
                    let a = -2.0 * PI * ((j * k) % n) as f64 / n as f64;
                    er += v * a.cos();
                    ei += v * a.sin();
                }
                // Both sides are f64 sums of ≤ 512 terms of size ≤ 1.
                assert!(
                    (re[k] - er).abs() < 1e-10,
                    "n={n} k={k} re {} vs {er}",
                    re[k]
                );
                assert!(
                    (im[k] - ei).abs() < 1e-10,
                    "n={n} k={k} im {} vs {ei}",
                    im[k]
                );
            }
        }
    }
}
