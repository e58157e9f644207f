//! `C = A·B` with bf16 multiplies and f32 accumulation, on x86-64 CPUs with AVX512-BF16
//! (`vdpbf16ps`): the multiply behind `--precision bf16`.
//!
//! Written here because no crate does it: burn-flex 0.22 multiplies bf16 tensors by converting
//! them to f32 (no faster than f32), and the GEMM crates (gemm 0.19, matrixmultiply, faer) have no
//! bf16 kernel. The operands arrive as strided f32 views (master weights and activations stay
//! f32); packing rounds them to bf16 (to nearest, ties to even) and puts two consecutive `k` in
//! one 32-bit lane, as `vdpbf16ps` reads them; the micro-kernel keeps a 12×32 block of C in 24
//! f32 registers. Blocking after Goto's GEMM: up to KS rows of B packed (in KC-deep blocks of
//! 32-column panels, 16 KB a panel) and shared by the threads; each thread takes a few rows of C
//! and runs them through every block, packing its rows of A per block, so its rows of C stay
//! in its L2 until they are done.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// A strided f32 matrix: element `(i, j)` at `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "view: data length");
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

/// Rows of C per micro-kernel call (24 accumulators + 2 panels of B + 1 broadcast ≤ 32 zmm).
const MR: usize = 12;
/// Columns of C per micro-kernel call: two zmm of f32.
const NR: usize = 32;
/// Depth of a packed block (even: `k` goes in pairs).
const KC: usize = 256;
/// Lanes per packed row of A: its stride in the kernel.
const KP: usize = KC / 2;
/// Depth of B packed before the threads sweep their rows: all of it for the model's products
/// (`k` ≤ 1536), 4096 rows at a time for a weight gradient over 31,360 rows (4 MB of bf16
/// per 512 columns).
const KS: usize = 16 * KC;
/// Rows of A a thread packs at once: 8 micro-panels, 48 KB of bf16 (L2).
const MC: usize = 8 * MR;
/// Columns of B packed at once.
const NC: usize = 2048;

/// Whether this CPU runs the kernels (AVX512-F, -BW, -VL and -BF16; every CPU with the last
/// has the others).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The bits of `x` rounded so that their upper half is `x` in bf16 (nearest, ties to even; a
/// NaN stays a NaN): the reference rounding, and the packing of operands with neither stride 1.
#[inline(always)]
fn rounded(b: u32) -> u32 {
    if b & 0x7FFF_FFFF > 0x7F80_0000 {
        b | 0x0040_0000
    } else {
        b.wrapping_add(0x7FFF + ((b >> 16) & 1))
    }
}

/// `x` rounded to bf16, as its 16 bits.
pub fn bf16_bits(x: f32) -> u16 {
    (rounded(x.to_bits()) >> 16) as u16
}

/// `x` rounded to bf16 and widened back to f32 (what the kernel multiplies).
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

/// Two values for one 32-bit lane: `lo` in the low half.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    (rounded(hi.to_bits()) & 0xFFFF_0000) | (rounded(lo.to_bits()) >> 16)
}

/// `dst[p] = pair(lo[p], hi[p])` (`hi` missing: zeros), 16 lanes per step in hardware
/// (`vcvtne2ps2bf16`, round to nearest even; like `vdpbf16ps` it reads denormals as zero).
fn pairs(dst: &mut [u32], lo: &[f32], hi: Option<&[f32]>) {
    assert!(lo.len() >= dst.len() && hi.is_none_or(|h| h.len() >= dst.len()));
    // SAFETY: `matmul` checked the CPU; lengths asserted above.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        simd::pairs(dst, lo, hi)
    }
}

/// A contiguous run `src` of `k` values as `⌈k/2⌉` lanes `(src[2p], src[2p+1])`: the bf16
/// values in order, read as 32-bit lanes (little-endian).
fn row_pairs(dst: &mut [u32], src: &[f32]) {
    assert_eq!(dst.len(), src.len().div_ceil(2));
    // SAFETY: as in `pairs`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        simd::row_pairs(dst, src)
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;
    use std::mem::transmute;

    /// Mask of the first `n` (≤ 16) lanes.
    fn first(n: usize) -> u16 {
        if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn pairs(dst: &mut [u32], lo: &[f32], hi: Option<&[f32]>) {
        // SAFETY: masked loads and stores stay within `dst.len()` lanes of each slice.
        unsafe {
            // Interleaves the low 16 bf16 (from `lo`) with the high 16 (from `hi`).
            let idx: [u16; 32] = std::array::from_fn(|i| (i / 2 + 16 * (i % 2)) as u16);
            let idx = _mm512_loadu_si512(idx.as_ptr() as *const __m512i);
            for j in (0..dst.len()).step_by(16) {
                let m = first(dst.len() - j);
                let l = _mm512_maskz_loadu_ps(m, lo.as_ptr().add(j));
                let h = match hi {
                    Some(hi) => _mm512_maskz_loadu_ps(m, hi.as_ptr().add(j)),
                    None => _mm512_setzero_ps(),
                };
                let v: __m512i = transmute(_mm512_cvtne2ps_pbh(h, l));
                let v = _mm512_permutexvar_epi16(idx, v);
                _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(j) as *mut i32, m, v);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn row_pairs(dst: &mut [u32], src: &[f32]) {
        // SAFETY: masked loads and stores stay within `src.len()` halves of `dst`.
        unsafe {
            let halves = dst.as_mut_ptr() as *mut u16;
            for i in (0..src.len()).step_by(16) {
                let m = first(src.len() - i);
                let v = _mm512_maskz_loadu_ps(m, src.as_ptr().add(i));
                let h: __m256i = transmute(_mm512_cvtneps_pbh(v));
                _mm256_mask_storeu_epi16(halves.add(i) as *mut i16, m, h);
            }
            if src.len() % 2 == 1 {
                *halves.add(src.len()) = 0;
            }
        }
    }
}

/// `A·B` (`[m, k] × [k, n]` → row-major `[m, n]`), plus `bias [n]` on every row when given.
/// Panics where [`available`] is false.
pub fn matmul(a: View, b: View, bias: Option<&[f32]>) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "bf16 matmul: inner dimensions");
    assert!(available(), "bf16 matmul: this CPU has no AVX512-BF16");
    assert!(
        bias.is_none_or(|v| v.len() == b.cols),
        "bf16 matmul: bias width"
    );
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 || k == 0 {
        return crate::flex::rows(m, n, bias);
    }
    // C is not filled first: the first block of `k` stores `bias + A·B` (a pass over C that
    // would also take it to memory and back: 190 MB for AVCA's six projections at batch 64),
    // and the later blocks add to it.
    let mut c = Vec::<f32>::with_capacity(m * n);
    let out = &mut c.spare_capacity_mut()[..m * n];
    // Rows per task: MC, or fewer where C has few rows (a weight gradient's 512), so that the
    // threads get even shares.
    let threads = rayon::current_num_threads();
    let rows = (m.div_ceil(16 * threads).div_ceil(MR) * MR).clamp(MR, MC);
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        for s0 in (0..k).step_by(KS) {
            let ks = KS.min(k - s0);
            // B's rows s0..s0+ks, one packed block per KC rows.
            let starts: Vec<usize> = (s0..s0 + ks).step_by(KC).collect();
            let depth = |p0: usize| KC.min(s0 + ks - p0);
            let bps: Vec<Vec<u32>> = starts
                .iter()
                .map(|&p0| pack_b(b, p0, depth(p0), j0, nc))
                .collect();
            // Each thread takes MC rows of C and runs them through all of the blocks, so the
            // rows stay in its L2 between blocks.
            out.par_chunks_mut(rows * n)
                .enumerate()
                .for_each(|(blk, c)| {
                    let (i0, mc) = (blk * rows, c.len() / n);
                    // One packing buffer for all of the blocks, cleared once: rows past `mc`
                    // are multiplied but never stored, so what a block leaves there is harmless.
                    let mut ap = vec![0u32; mc.div_ceil(MR) * MR * KP];
                    for (s, (&p0, bp)) in starts.iter().zip(&bps).enumerate() {
                        let layout = pack_a(a, (i0, mc), (p0, depth(p0)), &mut ap);
                        let start = (p0 == 0).then_some(bias.map(|b| &b[j0..j0 + nc]));
                        let shape = (mc, nc, depth(p0).div_ceil(2));
                        // What the next packing reads: this task's next block of k, or the
                        // next task's rows (rayon hands a thread neighbouring tasks).
                        let next = match starts.get(s + 1) {
                            Some(&p1) => Prefetch::rows(a, (i0, mc), (p1, depth(p1))),
                            None => Prefetch::rows(
                                a,
                                (i0 + mc, rows.min(m - (i0 + mc).min(m))),
                                (s0, depth(s0)),
                            ),
                        };
                        block((&ap, layout), bp, (c, n, j0), start, shape, next);
                    }
                });
        }
    }
    // SAFETY: the first block of `k` (`p0 == 0`) stored every element of every column block.
    unsafe { c.set_len(m * n) };
    c
}

/// Rows `p0..p0+kc` × columns `j0..j0+nc` of B as 32-column panels: per panel, per pair of
/// rows, 32 lanes `(B[k, j], B[k+1, j])`; zeros past the edges.
fn pack_b(b: View, p0: usize, kc: usize, j0: usize, nc: usize) -> Vec<u32> {
    let kp = kc.div_ceil(2);
    let panels = nc.div_ceil(NR);
    let mut out = vec![0u32; panels * kp * NR];
    if b.cs == 1 {
        // Rows of B are contiguous: each pair of rows is read once, whole, and spread over the
        // panels (read panel by panel, 128 bytes a row, the packing of a weight gradient's
        // 31,360 rows was bound by memory latency). The threads take runs of pairs.
        const RUN: usize = 8;
        let mut runs: Vec<Vec<&mut [u32]>> = (0..kp.div_ceil(RUN)).map(|_| Vec::new()).collect();
        for panel in out.chunks_mut(kp * NR) {
            for (run, part) in runs.iter_mut().zip(panel.chunks_mut(RUN * NR)) {
                run.push(part);
            }
        }
        let row = |k: usize| &b.data[k * b.rs + j0..][..nc];
        runs.into_par_iter().enumerate().for_each(|(r, mut parts)| {
            for q in 0..parts[0].len() / NR {
                let p = r * RUN + q;
                let (lo, hi) = (
                    row(p0 + 2 * p),
                    (2 * p + 1 < kc).then(|| row(p0 + 2 * p + 1)),
                );
                for (jp, part) in parts.iter_mut().enumerate() {
                    let (jb, nr) = (jp * NR, NR.min(nc - jp * NR));
                    pairs(&mut part[q * NR..][..nr], &lo[jb..], hi.map(|h| &h[jb..]));
                }
            }
        });
        return out;
    }
    out.par_chunks_mut(kp * NR)
        .enumerate()
        .for_each(|(jp, panel)| {
            let jb = j0 + jp * NR;
            let nr = NR.min(j0 + nc - jb);
            let mut column = vec![0u32; kp];
            for j in 0..nr {
                if b.rs == 1 {
                    // Columns of B are contiguous (a transposed operand).
                    row_pairs(&mut column, &b.data[p0 + (jb + j) * b.cs..][..kc]);
                } else {
                    for (p, c) in column.iter_mut().enumerate() {
                        let k = p0 + 2 * p;
                        let hi = if 2 * p + 1 < kc {
                            b.at(k + 1, jb + j)
                        } else {
                            0.0
                        };
                        *c = pair(b.at(k, jb + j), hi);
                    }
                }
                for (p, &c) in column.iter().enumerate() {
                    panel[p * NR + j] = c;
                }
            }
        });
    out
}

/// Rows `i0..i0+mc` × columns `p0..p0+kc` of A into `out` as 12-row panels of `MR × KP` lanes
/// `(A[i, k], A[i, k+1])` (a zero in the high half of an odd `kc`'s last lane; lanes past `kc`
/// and rows past `mc` are left as they are: never stored), in one of two orders (both with
/// constant strides, so the kernel addresses them by immediates):
/// - [`ALayout::RowMajor`] `[i][p]` where A's rows are contiguous: a row converts in place;
/// - [`ALayout::PairMajor`] `[p][i]` otherwise (A transposed: the weight gradient `xᵀ·dY`),
///   where two columns of A give the 12 lanes of step `p` in one go.
fn pack_a(a: View, (i0, mc): (usize, usize), (p0, kc): (usize, usize), out: &mut [u32]) -> ALayout {
    let kp = kc.div_ceil(2);
    assert!(out.len() >= mc.div_ceil(MR) * MR * KP, "pack_a: buffer");
    if a.cs == 1 {
        for (r, lanes) in out.chunks_mut(KP).take(mc).enumerate() {
            row_pairs(&mut lanes[..kp], &a.data[(i0 + r) * a.rs + p0..][..kc]);
        }
        return ALayout::RowMajor;
    }
    for (ip, panel) in out.chunks_mut(MR * KP).enumerate() {
        let ib = i0 + ip * MR;
        let mr = MR.min(i0 + mc - ib);
        for (p, lanes) in panel.chunks_mut(MR).take(kp).enumerate() {
            let k = p0 + 2 * p;
            let has_hi = 2 * p + 1 < kc;
            if a.rs == 1 {
                let col = |k: usize| &a.data[k * a.cs + ib..][..mr];
                pairs(&mut lanes[..mr], col(k), has_hi.then(|| col(k + 1)));
            } else {
                for (i, lane) in lanes[..mr].iter_mut().enumerate() {
                    let hi = if has_hi { a.at(ib + i, k + 1) } else { 0.0 };
                    *lane = pair(a.at(ib + i, k), hi);
                }
            }
        }
    }
    ALayout::PairMajor
}

#[derive(Clone, Copy, PartialEq)]
enum ALayout {
    RowMajor,
    PairMajor,
}

/// The packed `A` block times the packed `B` block into `c` (rows of width `ldc`, the block's
/// columns from `j0`): added to it, or stored as `start + A·B` (`start`: the bias's columns of
/// the block, or none for zeros) by the first block of `k`, which finds `c` unwritten. The
/// rows of A that the next packing reads (`next`) are prefetched a few lines per kernel call.
fn block(
    (ap, layout): (&[u32], ALayout),
    bp: &[u32],
    (c, ldc, j0): (&mut [MaybeUninit<f32>], usize, usize),
    start: Option<Option<&[f32]>>,
    (mc, nc, kp): (usize, usize, usize),
    next: Prefetch,
) {
    let calls = nc.div_ceil(NR) * mc.div_ceil(MR);
    let per_call = next.lines().div_ceil(calls.max(1));
    let mut call = 0;
    for jp in 0..nc.div_ceil(NR) {
        let nr = NR.min(nc - jp * NR);
        let b = &bp[jp * kp * NR..][..kp * NR];
        let init = match start {
            None => Init::Add,
            Some(None) => Init::Store(std::ptr::null()),
            Some(Some(bias)) => Init::Store(bias[jp * NR..][..nr].as_ptr()),
        };
        for ip in 0..mc.div_ceil(MR) {
            let mr = MR.min(mc - ip * MR);
            let a = &ap[ip * MR * KP..][..MR * KP];
            let c = &mut c[ip * MR * ldc + j0 + jp * NR..];
            assert!(c.len() >= (mr - 1) * ldc + nr);
            // SAFETY: `matmul` checked the CPU; `a` holds a panel of `MR × KP` lanes, `b` `kp`
            // steps of `NR` lanes, `c` the `mr × nr` block (asserted above), written before it
            // is read (`Init::Add` only after a first block's `Init::Store`), and the bias `nr`
            // columns.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr() as *mut f32);
                match layout {
                    ALayout::RowMajor => kernel::<KP, 1>(kp, a, b, (c, ldc, init), mr, nr),
                    ALayout::PairMajor => kernel::<1, MR>(kp, a, b, (c, ldc, init), mr, nr),
                }
                next.fetch(call * per_call..(call + 1) * per_call);
            };
            call += 1;
        }
    }
}

/// Rows of A (contiguous ones: `cs` = 1) that the next [`pack_a`] will read, prefetched into
/// L2 a few cache lines per kernel call. A is read once, from memory (AVCA's projections read
/// 64 MB at batch 64), and the conversion waited on those reads: 8–10 % of the bf16 products'
/// time in the evaluation's profile.
struct Prefetch {
    base: *const f32,
    rs: usize,
    rows: usize,
    lines_per_row: usize,
}

impl Prefetch {
    /// Rows `i0..i0+mc`, columns `p0..p0+kc` of `a`; nothing where A's rows are not contiguous.
    fn rows(a: View, (i0, mc): (usize, usize), (p0, kc): (usize, usize)) -> Self {
        let none = Self {
            base: std::ptr::null(),
            rs: 0,
            rows: 0,
            lines_per_row: 0,
        };
        if a.cs != 1 || mc == 0 || kc == 0 || i0 + mc > a.rows || p0 + kc > a.cols {
            return none;
        }
        Self {
            base: a.data[i0 * a.rs + p0..].as_ptr(),
            rs: a.rs,
            rows: mc,
            // 16 f32 to a 64-byte line; a run that starts mid-line touches one more.
            lines_per_row: kc.div_ceil(16) + 1,
        }
    }

    fn lines(&self) -> usize {
        self.rows * self.lines_per_row
    }

    /// Prefetches lines `range` (of [`Self::lines`]).
    #[cfg(target_arch = "x86_64")]
    fn fetch(&self, range: std::ops::Range<usize>) {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        for line in range.start..range.end.min(self.lines()) {
            let (r, l) = (line / self.lines_per_row, line % self.lines_per_row);
            // A prefetch never faults; the address is only computed (wrapping) and hinted.
            let at = self.base.wrapping_add(r * self.rs + l * 16);
            // SAFETY: `_mm_prefetch` reads nothing architecturally; SSE is baseline on x86-64.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(at as *const i8) };
        }
    }
}

/// What the kernel does with its block of C.
#[derive(Clone, Copy)]
enum Init {
    /// `C += A·B`.
    Add,
    /// `C = row + A·B` on every row, `row` the block's `nr` columns of the bias (null: zeros).
    Store(*const f32),
}

/// `C[mr × nr] += A_panel · B_panel` (or `=` with [`Init::Store`]) over `kp` pairs of `k`; lane
/// `(i, p)` of the A panel at `a[i·RS + p·PS]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel<const RS: usize, const PS: usize>(
    kp: usize,
    a: *const u32,
    b: *const u32,
    (c, ldc, init): (*mut f32, usize, Init),
    mr: usize,
    nr: usize,
) {
    use std::arch::x86_64::*;
    use std::mem::transmute;
    // SAFETY: the caller's bounds; masked loads and stores touch only the `nr` columns.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for p in 0..kp {
            let b0: __m512bh = transmute(_mm512_loadu_si512(b.add(p * NR) as *const __m512i));
            let b1: __m512bh = transmute(_mm512_loadu_si512(b.add(p * NR + 16) as *const __m512i));
            for (i, acc) in acc.iter_mut().enumerate() {
                let ai: __m512bh = transmute(_mm512_set1_epi32(*a.add(i * RS + p * PS) as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], ai, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], ai, b1);
            }
        }
        let mask = |n: usize| -> u16 { if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 } };
        let ms = [mask(nr), mask(nr.saturating_sub(16))];
        // What the product is added to: C's own rows, or the bias (zeros) on every row.
        let start = match init {
            Init::Store(row) if !row.is_null() => Some([
                _mm512_maskz_loadu_ps(ms[0], row),
                // (a zero mask reads nothing; the address may be past the bias)
                _mm512_maskz_loadu_ps(ms[1], row.wrapping_add(16)),
            ]),
            Init::Store(_) => Some([_mm512_setzero_ps(); 2]),
            Init::Add => None,
        };
        // All MR rows with a test, not `take(mr)`: a loop of fixed length unrolls and keeps the
        // accumulators in registers; a variable one kept them in a stack array that every call
        // cleared first (a 1.5 KB memset per call: 8 % of the bf16 products' time).
        for (i, acc) in acc.iter().enumerate() {
            if i >= mr {
                break;
            }
            for (h, (&acc, &m)) in acc.iter().zip(&ms).enumerate() {
                if m == 0 {
                    continue;
                }
                let at = c.add(i * ldc + 16 * h);
                let base = match start {
                    Some(row) => row[h],
                    None => _mm512_maskz_loadu_ps(m, at),
                };
                _mm512_mask_storeu_ps(at, m, _mm512_add_ps(base, acc));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `A·B` in f64 over bf16-rounded operands: what the kernel computes, but for the f32
    /// accumulation's rounding.
    fn reference(a: View, b: View) -> Vec<f64> {
        let mut c = vec![0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for p in 0..a.cols {
                let x = round_bf16(a.at(i, p)) as f64;
                for j in 0..b.cols {
                    c[i * b.cols + j] += x * round_bf16(b.at(p, j)) as f64;
                }
            }
        }
        c
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let r = crate::model::dropout::mix(seed ^ i as u64);
                (r >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2⁻⁸ is half-way between 1 and 1 + 2⁻⁷: ties go to the even 1.
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(round_bf16(1.0 + 1.5 / 256.0), 1.0 + 2.0 / 256.0);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn products_match_the_rounded_operands_in_every_layout_and_edge() {
        if !available() {
            eprintln!("skipped: no AVX512-BF16 on this CPU");
            return;
        }
        // Shapes cross every block edge: m past MC and not a multiple of MR, odd k past KC,
        // n not a multiple of NR; the transposed views exercise the strided packing.
        for &(m, k, n) in &[(1, 1, 1), (13, 3, 33), (101, 517, 70), (200, 256, 16)] {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
            let want = reference(View::row_major(&a, m, k), View::row_major(&b, k, n));
            // Every other element of a buffer twice as long: neither stride is 1.
            let spread = |x: &[f32]| x.iter().flat_map(|&v| [v, f32::NAN]).collect::<Vec<_>>();
            let (a2, b2) = (spread(&a), spread(&b));
            let sparse = |data, rows, cols| View {
                data,
                rows,
                cols,
                rs: 2 * cols,
                cs: 2,
            };
            let views = [
                (View::row_major(&a, m, k), View::row_major(&b, k, n)),
                (
                    View::row_major(&at, k, m).t(),
                    View::row_major(&bt, n, k).t(),
                ),
                (sparse(&a2, m, k), sparse(&b2, k, n)),
            ];
            for (va, vb) in views {
                let got = matmul(va, vb, None);
                for (g, w) in got.iter().zip(&want) {
                    // f32 sums of k products of size ≤ 1: error ≤ k·2⁻²⁴·Σ|terms| ≈ 1e-4 at k 517.
                    assert!((*g as f64 - w).abs() < 2e-4, "{m}×{k}×{n}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn the_first_block_of_k_stores_the_bias_and_the_others_add() {
        if !available() {
            return;
        }
        // C is never pre-filled: the bias must reach every column block (n past NC, the last
        // panel narrower than 16 lanes) and be stored by the first block of `k` only (k past KC
        // and past KS, where B is packed in two goes).
        for &(m, k, n) in &[(13, 300, NC + 40), (25, KS + 300, 20), (12, 7, 5)] {
            let (a, b, bias) = (values(m * k, 3), values(k * n, 4), values(n, 5));
            let (va, vb) = (View::row_major(&a, m, k), View::row_major(&b, k, n));
            let want = reference(va, vb);
            for with_bias in [true, false] {
                let got = matmul(va, vb, with_bias.then_some(&bias[..]));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let w = w + if with_bias { bias[i % n] as f64 } else { 0.0 };
                    // As above, scaled to k: 2⁻²⁴·k·Σ|terms| ≤ 2e-3 at k 4396.
                    assert!(
                        (*g as f64 - w).abs() < 1e-6 * k as f64,
                        "{m}×{k}×{n}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn bf16_differs_from_f32_by_the_rounding_of_the_operands() {
        if !available() {
            return;
        }
        // The kernel must round: a product of values that bf16 cannot hold is not the f32 one.
        let a = [1.0 + 1.0 / 1024.0];
        let b = [3.0];
        let c = matmul(
            View::row_major(&a, 1, 1),
            View::row_major(&b, 1, 1),
            Some(&[0.5]),
        );
        assert_eq!(c, vec![3.5]);
    }

    fn transpose(x: &[f32], r: usize, c: usize) -> Vec<f32> {
        (0..c * r).map(|i| x[(i % r) * c + i / r]).collect()
    }
}
