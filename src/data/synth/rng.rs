//! Random numbers (portable: ChaCha8 + integer/IEEE-basic arithmetic only), so that the same
//! seed gives the same bytes on every machine.

use rand::rngs::ChaCha8Rng;
use rand::{Rng as _, SeedableRng};

pub(crate) struct Rng(ChaCha8Rng);

impl Rng {
    pub(crate) fn new(seed: u64, stream: u64) -> Rng {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(stream);
        Rng(r)
    }
    /// Uniform in `[0, 1)` with 24 random bits.
    pub(crate) fn u01(&mut self) -> f32 {
        (self.0.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
    pub(crate) fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.u01()
    }
    /// Uniform in `[lo, hi)` with 53 random bits (the UnAV generator's times).
    pub(crate) fn uniform_f64(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        lo + (hi - lo) * u
    }
    /// Uniform integer in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (((self.0.next_u64() >> 32) * n as u64) >> 32) as usize
    }
    /// Approximately standard normal: Irwin–Hall sum of four 16-bit uniforms, centred and
    /// scaled to unit variance (support ±3.46).
    pub(crate) fn normal(&mut self) -> f32 {
        let x = self.0.next_u64();
        let s = (x & 0xFFFF) + ((x >> 16) & 0xFFFF) + ((x >> 32) & 0xFFFF) + (x >> 48);
        ((s as f32 + 2.0) * (1.0 / 65536.0) - 2.0) * 1.732_050_8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_draws_have_unit_variance() {
        let mut r = Rng::new(5, 9);
        let n = 200_000;
        let xs: Vec<f32> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
        let mut r = Rng::new(5, 9);
        let us: Vec<f32> = (0..n).map(|_| r.u01()).collect();
        assert!(us.iter().all(|&u| (0.0..1.0).contains(&u)));
        let counts = (0..n).fold([0usize; 7], |mut c, _| {
            c[r.below(7)] += 1;
            c
        });
        assert!(
            counts
                .iter()
                .all(|&c| (c as f64 - n as f64 / 7.0).abs() < 1000.0)
        );
    }
}
