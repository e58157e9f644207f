//! f32 matrix products on strided views through the `gemm` crate (the multiply burn-flex itself
//! calls), with every view checked to lie inside its slice: the one place the crate is called.
//! Used by our CPU kernels (`encoders/conv2d_shifted.rs`, `encoders/conv2d_flex.rs`,
//! `encoders/conv1x1_flex.rs`, `precision/matmul.rs`, `model/bmm_flex.rs`); [`products`] writes
//! new outputs without clearing them first.

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;

/// A read-only strided matrix view: element `(r, c)` at `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    pub fn new(data: &'a [f32], rs: usize, cs: usize) -> Self {
        View { data, rs, cs }
    }
}

/// A writable strided matrix view.
pub struct Mat<'a> {
    data: &'a mut [f32],
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    pub fn new(data: &'a mut [f32], rs: usize, cs: usize) -> Self {
        Mat { data, rs, cs }
    }
}

/// burn-flex's rule for one product `[m, k] × [k, n]`: all threads from 192³ multiply-adds,
/// else one (so that our products split their work, and round, as burn's own do).
pub fn parallelism([m, n, k]: [usize; 3]) -> Parallelism {
    if m * n * k >= 192 * 192 * 192 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}

/// Whether an `rows × cols` matrix with strides `rs`, `cs` lies inside `len` values.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
}

fn check_operands(lhs: &View, rhs: &View, [m, n, k]: [usize; 3]) {
    assert!(
        fits(lhs.data.len(), m, k, lhs.rs, lhs.cs),
        "gemm: left operand out of bounds"
    );
    assert!(
        fits(rhs.data.len(), k, n, rhs.rs, rhs.cs),
        "gemm: right operand out of bounds"
    );
}

/// `gemm::gemm` into `dst` (strides `dst_rs`, `dst_cs`), read first when `accumulate`.
///
/// A threaded product with a long inner dimension is split here, not by gemm: the output
/// columns (or rows, when there are more of them) in one contiguous range per thread, each a
/// single-threaded gemm. gemm threads each `k` block of ~512 separately, two fork-joins per
/// block (packing, then the multiply): 120 for a weight gradient over AVCA's 31,360 rows, each
/// leaving a core idle while the other is woken or finishes its share. The values are the
/// same: an output's sum is split into `k` blocks by `k` alone, whichever part computes it.
///
/// # Safety
/// The operands were checked by [`check_operands`]; `dst` addresses `m × n` writable values
/// that alias neither operand, initialised when `accumulate`.
unsafe fn call(
    dst: *mut f32,
    dst_strides: [usize; 2],
    lhs: View,
    rhs: View,
    [m, n, k]: [usize; 3],
    accumulate: bool,
    par: Parallelism,
) {
    let threads = rayon::current_num_threads();
    let split = matches!(par, Parallelism::Rayon(_)) && threads > 1 && k >= SPLIT_K;
    // Parts stay above gemm's small-matrix path (both sides ≤ 64), whose blocks differ.
    let (long, other) = (m.max(n), m.min(n));
    if !split || (long / threads <= 64 && other <= 64) {
        // SAFETY: as promised by the caller.
        unsafe { call_gemm(dst, dst_strides, lhs, rhs, [m, n, k], accumulate, par) };
        return;
    }
    let by_rows = m > n;
    let dst = SendPtr(dst);
    (0..threads).into_par_iter().for_each(|t| {
        let (start, end) = (long * t / threads, long * (t + 1) / threads);
        let [dst_rs, dst_cs] = dst_strides;
        let dst = &dst;
        let (lhs, rhs, offset, dims) = if by_rows {
            let lhs = View::new(&lhs.data[start * lhs.rs..], lhs.rs, lhs.cs);
            (lhs, rhs, start * dst_rs, [end - start, n, k])
        } else {
            let rhs = View::new(&rhs.data[start * rhs.cs..], rhs.rs, rhs.cs);
            (lhs, rhs, start * dst_cs, [m, end - start, k])
        };
        // SAFETY: part `t` is rows (or columns) `start..end` of the checked views and of
        // `dst`; the parts' destinations are disjoint.
        unsafe {
            let at = dst.0.add(offset);
            call_gemm(
                at,
                dst_strides,
                lhs,
                rhs,
                dims,
                accumulate,
                Parallelism::None,
            )
        }
    });
}

/// Inner dimensions from which [`call`] splits a threaded product itself (four of gemm's `k`
/// blocks).
const SPLIT_K: usize = 2048;

/// A destination pointer shared by the threads of [`call`], which write disjoint parts.
struct SendPtr(*mut f32);
// SAFETY: only used for disjoint writes, each part by one thread.
unsafe impl Sync for SendPtr {}

/// # Safety
/// As [`call`].
unsafe fn call_gemm(
    dst: *mut f32,
    [dst_rs, dst_cs]: [usize; 2],
    lhs: View,
    rhs: View,
    [m, n, k]: [usize; 3],
    accumulate: bool,
    par: Parallelism,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `dst [m, n] (+)= lhs [m, k] × rhs [k, n]` (added to `dst` when `accumulate`).
pub fn gemm_into(
    dst: Mat,
    lhs: View,
    rhs: View,
    dims: [usize; 3],
    accumulate: bool,
    par: Parallelism,
) {
    let [m, n, _] = dims;
    assert!(
        fits(dst.data.len(), m, n, dst.rs, dst.cs),
        "gemm: destination out of bounds"
    );
    check_operands(&lhs, &rhs, dims);
    // SAFETY: the three views were just checked to lie inside their slices; `dst` is borrowed
    // mutably, so it aliases neither operand, and it is initialised.
    unsafe {
        call(
            dst.data.as_mut_ptr(),
            [dst.rs, dst.cs],
            lhs,
            rhs,
            dims,
            accumulate,
            par,
        )
    }
}

/// One product `lhs [m, k] × rhs [k, n]` into a new row-major vector, split over threads by
/// [`parallelism`] (burn-flex's `matmul` zero-fills its output and then copies it to a
/// realigned buffer: two more passes over it).
pub fn product(lhs: View, rhs: View, [m, n, k]: [usize; 3]) -> Vec<f32> {
    products(1, [m, n, k], |_| (lhs, rhs), parallelism([m, n, k]))
}

/// `batch` products `lhs × rhs` (`[m, k] × [k, n]`, item `i`'s operands from `operands(i)`)
/// into a new row-major `[batch, m, n]` vector. Items run as rayon tasks, each one
/// single-threaded product, when there are at least four per thread; otherwise one after the
/// other, each with `par`. gemm writes every output without reading it (`accumulate` false),
/// so the vector is not cleared first.
pub fn products<'a>(
    batch: usize,
    dims: [usize; 3],
    operands: impl Fn(usize) -> (View<'a>, View<'a>) + Sync,
    par: Parallelism,
) -> Vec<f32> {
    let [m, n, k] = dims;
    if m * n == 0 || k == 0 {
        return vec![0.0; batch * m * n];
    }
    let item = |i: usize, out: &mut [MaybeUninit<f32>], par| {
        let (lhs, rhs) = operands(i);
        check_operands(&lhs, &rhs, dims);
        // SAFETY: operands checked; `out` holds exactly this item's `m·n` slots (row-major,
        // stride n), a fresh buffer aliasing nothing, which gemm writes without reading.
        unsafe { call(out.as_mut_ptr().cast(), [n, 1], lhs, rhs, dims, false, par) }
    };
    let mut c = Vec::<f32>::with_capacity(batch * m * n);
    let out = &mut c.spare_capacity_mut()[..batch * m * n];
    if k == 1 {
        outer_products(out, dims, &operands);
    } else if batch >= 4 * rayon::current_num_threads() {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, out)| item(i, out, Parallelism::None));
    } else {
        out.chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, out)| item(i, out, par));
    }
    // SAFETY: every item wrote its `m·n` outputs.
    unsafe { c.set_len(batch * m * n) };
    c
}

/// [`products`] with `k = 1`: `out[i][r][c] = lhs[r]·rhs[c]`, rows split over threads. gemm
/// hands these to a single-threaded routine that writes the row-major output column by column
/// (a `[31360, 1] × [1, 256]` input gradient of a `Linear(256 → 1)` took 10–20 ms on the calling
/// thread). One product per output, so the values are gemm's exactly.
fn outer_products<'a>(
    out: &mut [MaybeUninit<f32>],
    [m, n, k]: [usize; 3],
    operands: &(impl Fn(usize) -> (View<'a>, View<'a>) + Sync),
) {
    debug_assert_eq!(k, 1);
    let rows_per_task = (1 << 14) / n.max(1) + 1;
    out.par_chunks_mut(m * n).enumerate().for_each(|(i, out)| {
        let (lhs, rhs) = operands(i);
        check_operands(&lhs, &rhs, [m, n, 1]);
        out.par_chunks_mut(rows_per_task * n)
            .enumerate()
            .for_each(|(t, rows)| {
                for (r, row) in rows.chunks_mut(n).enumerate() {
                    let a = lhs.data[(t * rows_per_task + r) * lhs.rs];
                    for (c, o) in row.iter_mut().enumerate() {
                        o.write(a * rhs.data[c * rhs.cs]);
                    }
                }
            });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `k = 1` products (ours) equal gemm's own, on strided operands and several items.
    #[test]
    fn outer_products_are_gemms() {
        let (m, n, batch) = (1000, 37, 3);
        let lhs: Vec<f32> = (0..batch * m * 3)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let rhs: Vec<f32> = (0..batch * n * 2 * 5)
            .map(|i| (i as f32 * 0.11).cos())
            .collect();
        // Item i: lhs column 1 of a [m, 3] block (row stride 3), rhs every second value.
        let operands = |i: usize| {
            (
                View::new(&lhs[i * m * 3 + 1..], 3, 1),
                View::new(&rhs[i * n * 2..], 1, 2),
            )
        };
        let ours = products(batch, [m, n, 1], operands, Parallelism::Rayon(0));
        let mut theirs = vec![f32::NAN; batch * m * n];
        for (i, dst) in theirs.chunks_mut(m * n).enumerate() {
            let (a, b) = operands(i);
            gemm_into(
                Mat::new(dst, n, 1),
                a,
                b,
                [m, n, 1],
                false,
                Parallelism::None,
            );
        }
        assert_eq!(ours, theirs);
        assert!(ours.iter().any(|&v| v != 0.0));
    }

    /// Threaded products with a long inner dimension (split by rows or by columns in [`call`])
    /// equal gemm's single-threaded ones bit for bit, fresh or accumulated, on strided views.
    #[test]
    fn split_products_are_gemms() {
        let k = SPLIT_K + 77;
        for (m, n) in [(300, 70), (66, 530), (40, 40)] {
            let lhs: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.013).sin()).collect();
            let rhs: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.007).cos()).collect();
            // lhs read transposed (column-major), rhs row-major.
            let (a, b) = (View::new(&lhs, 1, m), View::new(&rhs, n, 1));
            let fresh = products(1, [m, n, k], |_| (a, b), Parallelism::Rayon(0));
            let mut reference = vec![0.5f32; m * n];
            let mut accumulated = reference.clone();
            gemm_into(
                Mat::new(&mut accumulated, n, 1),
                a,
                b,
                [m, n, k],
                true,
                Parallelism::Rayon(0),
            );
            let mut single = vec![0f32; m * n];
            gemm_into(
                Mat::new(&mut single, n, 1),
                a,
                b,
                [m, n, k],
                false,
                Parallelism::None,
            );
            gemm_into(
                Mat::new(&mut reference, n, 1),
                a,
                b,
                [m, n, k],
                true,
                Parallelism::None,
            );
            assert_eq!(fresh, single, "[{m}, {n}] fresh");
            assert_eq!(accumulated, reference, "[{m}, {n}] accumulated");
            assert!(single.iter().all(|v| v.is_finite()) && single.iter().any(|&v| v != 0.0));
        }
    }
}
