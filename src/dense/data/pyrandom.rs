//! Python's `random` module as far as `truncate_feats` uses it: `random.seed(n)` for an integer
//! `n` and `random.randint(a, b)` (CPython: MT19937 seeded by `init_by_array` with the 32-bit
//! words of `|n|`; `randint` = `a + _randbelow(b − a + 1)`, rejection sampling on the top
//! `bit_length` bits of 32-bit outputs, so even `randint(k, k)` consumes outputs).
//!
//! With [`PyRandom`] our truncation picks the windows the official code picks in a single
//! process after `random.seed(n)`; the official training loop instead reseeds each data
//! loader worker from torch's seed (`worker_init_reset_seed`), so its windows also depend on
//! the worker count and on which worker loads which video.

use super::truncate::RandInt;

const N: usize = 624;
const M: usize = 397;

/// CPython's Mersenne Twister.
pub struct PyRandom {
    mt: Box<[u32; N]>,
    index: usize,
}

impl PyRandom {
    /// `random.seed(seed)`.
    pub fn seed(seed: u64) -> PyRandom {
        let key: Vec<u32> = if seed >> 32 == 0 {
            vec![seed as u32]
        } else {
            vec![seed as u32, (seed >> 32) as u32]
        };
        let mut mt = Box::new([0u32; N]);
        mt[0] = 19_650_218;
        for i in 1..N {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1_664_525);
            mt[i] = (mt[i] ^ prev).wrapping_add(key[j]).wrapping_add(j as u32);
            (i, j) = (i + 1, (j + 1) % key.len());
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        for _ in 0..N - 1 {
            let prev = (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1_566_083_941);
            mt[i] = (mt[i] ^ prev).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        PyRandom { mt, index: N }
    }

    fn twist(&mut self) {
        let mt = &mut self.mt;
        for k in 0..N {
            let y = (mt[k] & 0x8000_0000) | (mt[(k + 1) % N] & 0x7fff_ffff);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            mt[k] = mt[(k + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// `genrand_uint32`.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `_randbelow_with_getrandbits(n)` for `0 < n < 2³²`.
    fn below(&mut self, n: u64) -> u64 {
        let k = 64 - n.leading_zeros();
        assert!(k <= 32, "randint ranges wider than 2^32 are not supported");
        loop {
            let r = (self.next_u32() >> (32 - k)) as u64;
            if r < n {
                return r;
            }
        }
    }
}

impl RandInt for PyRandom {
    fn randint(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by CPython 3.11 after `random.seed(s)`.
    #[test]
    fn randint_equals_cpython() {
        let mut r = PyRandom::seed(1234);
        let v: Vec<usize> = (0..6).map(|_| r.randint(0, 10)).collect();
        assert_eq!(v, [7, 1, 0, 1, 9, 0]);
        assert_eq!(r.randint(3, 3), 3);
        assert_eq!(r.randint(0, 1 << 20), 206405);
        assert_eq!(r.randint(32, 36), 34);
        let mut r = PyRandom::seed(0);
        let v: Vec<usize> = (0..4).map(|_| r.randint(0, 29)).collect();
        assert_eq!(v, [27, 12, 24, 28]);
        let mut r = PyRandom::seed((1 << 40) + 7);
        let v: Vec<usize> = (0..4).map(|_| r.randint(0, 1000)).collect();
        assert_eq!(v, [628, 765, 834, 960]);
    }
}
