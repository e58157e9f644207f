//! Portable random numbers for the generator (ChaCha8, integer/IEEE-basic arithmetic only).

use rand::rngs::ChaCha8Rng;
use rand::{Rng as _, SeedableRng};

pub(super) struct Rng(ChaCha8Rng);

impl Rng {
    pub(super) fn new(seed: u64, stream: u64) -> Rng {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(stream);
        Rng(r)
    }
    /// Uniform in `[0, 1)` with 53 random bits.
    pub(super) fn u01(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    pub(super) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.u01()
    }
    /// Uniform integer in `0..n` (`n > 0`).
    pub(super) fn below(&mut self, n: usize) -> usize {
        (((self.0.next_u64() >> 32) * n as u64) >> 32) as usize
    }
    /// Approximately standard normal: Irwin–Hall sum of four 16-bit uniforms, scaled to unit
    /// variance.
    pub(super) fn normal(&mut self) -> f32 {
        let x = self.0.next_u64();
        let s = (x & 0xFFFF) + ((x >> 16) & 0xFFFF) + ((x >> 32) & 0xFFFF) + (x >> 48);
        ((s as f32 + 2.0) * (1.0 / 65536.0) - 2.0) * 1.732_050_8
    }
}
