//! Reading and making burn-flex tensors, for our own CPU kernels (`model/batch_norm_flex.rs`,
//! `encoders/conv2d_flex.rs`, `encoders/residual_flex.rs`).

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
