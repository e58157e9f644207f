//! Reading and making burn-flex tensors, for our own CPU kernels (`model/batch_norm_flex.rs`,
//! `encoders/conv2d_flex.rs`, `encoders/residual_flex.rs`, the products in `precision/` and
//! `model/bmm_flex.rs`, ...).

use burn::tensor::{Shape, TensorData};
use burn_flex::FlexTensor;

/// The f32 values of `t`, which must be tight and contiguous (`FlexTensor::to_contiguous`
/// makes it so, copying only when it is not).
pub fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

/// A tensor of `shape` holding `values` (row-major).
pub fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// The values of a small tensor (a per-channel vector), copied.
pub fn to_vec(t: &FlexTensor) -> Vec<f32> {
    values(&t.to_contiguous()).to_vec()
}

/// `n` zeros, written by the rayon threads: an output buffer for a kernel that then fills it
/// in parallel. `vec![0f32; n]` has the allocator clear reused memory on the calling thread
/// (mimalloc's `alloc_zeroed`), a single-threaded pass over 64 MB for an AVCA activation at
/// batch 64.
pub fn zeros(n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v = Vec::<f32>::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(1 << 16)
        .for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: all `n` slots were written above.
    unsafe { v.set_len(n) };
    v
}

/// `m` rows of `bias` (zeros without one), written by the rayon threads: the starting value of
/// a product that adds into it.
pub fn rows(m: usize, n: usize, bias: Option<&[f32]>) -> Vec<f32> {
    use rayon::prelude::*;
    let Some(bias) = bias else {
        return zeros(m * n);
    };
    assert_eq!(bias.len(), n, "bias width");
    let mut v = Vec::<f32>::with_capacity(m * n);
    if n > 0 {
        v.spare_capacity_mut()[..m * n]
            .par_chunks_mut(n)
            .for_each(|row| {
                row.iter_mut().zip(bias).for_each(|(r, &b)| {
                    r.write(b);
                })
            });
    }
    // SAFETY: all `m·n` slots were written above.
    unsafe { v.set_len(m * n) };
    v
}

/// `t` with non-negative strides, so that it can be read through a strided view (copied to
/// contiguous only when a stride is negative).
pub fn non_negative_strides(t: &FlexTensor) -> FlexTensor {
    if t.layout().has_positive_strides() {
        t.clone()
    } else {
        t.to_contiguous()
    }
}
