//! `--precision f32|bf16`: the large multiplies in bf16 with f32 accumulation.
//!
//! In bf16 the linear layers run on `[rows, C]` ([`crate::model::nn::flat`],
//! [`crate::model::nn::fused_linear`]: AVCA's projections, the relation modules' and attention
//! blocks' linears, the LSTM's input projection) multiply bf16-rounded operands and sum in f32,
//! forward and backward ([`linear_parts`]; `precision/matmul.rs`, which runs them in f32 on the
//! CPU too); everything else — master weights, optimiser state, activations, the LSTM's
//! recurrence, the attention products, normalisation, softmax, losses — stays f32. f32 is the
//! default and the parity standard.
//!
//! Like PyTorch's `autocast`, the choice is per thread: a command enters [`scope`] on the thread
//! that runs the model, and concurrent tests on other threads are unaffected. bf16 runs on the
//! CPU (`flex`) device with AVX512-BF16 ([`gemm_bf16`]) and, through burn's bf16 tensors, on CUDA
//! and ROCm GPUs (`linear_cast`: there the products' outputs are rounded to bf16 too; not yet
//! run on a GPU); [`check`] refuses it elsewhere (wgpu, a CPU without AVX512-BF16).

pub mod gemm_bf16;
mod matmul;

use std::cell::Cell;
use std::str::FromStr;

use anyhow::{Result, bail};
use burn::tensor::{Device, FloatDType, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl FromStr for Precision {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            _ => bail!("unknown precision {s:?}: expected f32 or bf16"),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

/// Whether `precision` can run on `device` here: bf16 needs AVX512-BF16 on the CPU device, or
/// a CUDA or ROCm GPU (wgpu's shading languages have no bf16 type).
pub fn check(precision: Precision, device: &Device) -> Result<()> {
    if precision == Precision::F32 {
        return Ok(());
    }
    if crate::device::is_flex(device) {
        if !gemm_bf16::available() {
            bail!("--precision bf16 needs a CPU with AVX512-BF16 (vdpbf16ps); this one has none");
        }
        return Ok(());
    }
    if !crate::device::has_bf16(device) {
        bail!(
            "--precision bf16 runs on the CPU (with AVX512-BF16) or a CUDA / ROCm GPU; {device:?} \
             (wgpu, Vulkan) has no bf16 type in its shaders"
        );
    }
    Ok(())
}

thread_local! {
    static CURRENT: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// The precision of this thread's multiplies.
pub fn current() -> Precision {
    CURRENT.with(Cell::get)
}

/// Sets this thread's precision until the guard drops (then the previous one comes back).
#[must_use = "the precision holds while the guard lives"]
pub fn scope(precision: Precision) -> Scope {
    Scope(CURRENT.with(|c| c.replace(precision)))
}

pub struct Scope(Precision);

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// `x [rows, d_in] · weight [d_in, d_out] + bias` in this thread's precision; on the CPU
/// device through `precision/matmul.rs` (f32 or bf16), elsewhere burn's product (bf16:
/// `linear_cast`).
pub fn linear_parts(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    match (crate::device::is_flex(&x.device()), current()) {
        (true, precision) => matmul::linear(x, weight, bias, precision),
        (false, Precision::F32) => burn::tensor::module::linear(x, weight, bias),
        (false, Precision::Bf16) => linear_cast(x, weight, bias),
    }
}

/// bf16 on a GPU: the operands cast to bf16 tensors and multiplied by burn (on CUDA its
/// tensor-core kernels: bf16 multiplies, f32 sums, the output rounded to bf16, as PyTorch's
/// autocast leaves it), the result cast back to f32. burn's autodiff casts each gradient back
/// to its input's dtype, so weights, their gradients and Adam's state stay f32. Not yet run on
/// a GPU: `tools/gpu-check.sh` runs it (tests/device.rs) where one is lent.
fn linear_cast(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    let (x, weight) = (x.cast(FloatDType::BF16), weight.cast(FloatDType::BF16));
    let bias = bias.map(|b| b.cast(FloatDType::BF16));
    burn::tensor::module::linear(x, weight, bias).cast(FloatDType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_is_per_thread_and_restored() {
        assert_eq!(current(), Precision::F32);
        {
            let _g = scope(Precision::Bf16);
            assert_eq!(current(), Precision::Bf16);
            std::thread::spawn(|| assert_eq!(current(), Precision::F32))
                .join()
                .unwrap();
        }
        assert_eq!(current(), Precision::F32);
        assert!("bf17".parse::<Precision>().is_err());
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
    }

    /// The GPUs' bf16 path, run here on the CPU device (burn-flex has bf16 tensors too: its
    /// products convert them to f32 and round the output back).
    #[test]
    fn the_gpu_path_rounds_operands_and_output_to_bf16_and_keeps_gradients_f32() {
        use burn::tensor::{DType, Distribution::Normal, TensorData};
        let dev = Device::flex().autodiff();
        let normal = |s: [usize; 2]| Tensor::<2>::random(s, Normal(0.0, 1.0), &dev);
        let (x, w, r) = (normal([20, 45]), normal([45, 30]), normal([20, 30]));
        let (x, w) = (x.require_grad(), w.require_grad());
        let b = Tensor::<1>::random([30], Normal(0.0, 1.0), &dev).require_grad();

        let y = linear_cast(x.clone(), w.clone(), Some(b.clone()));
        let grads = (y.clone() * r.clone()).sum().backward();
        let (gx, gw) = (x.grad(&grads).unwrap(), w.grad(&grads).unwrap());
        assert_eq!([y.dtype(), gx.dtype(), gw.dtype()], [DType::F32; 3]);
        let values = crate::to_vec(y.clone());
        assert!(
            values.iter().all(|&v| gemm_bf16::round_bf16(v) == v),
            "the output was not rounded to bf16"
        );
        // References: f32 products of the rounded operands; the tolerance is the bf16 rounding
        // of the product and of the sum with the bias (2⁻⁹ relative each), with room.
        let rounded = |t: Tensor<2>| {
            let v = crate::to_vec(t.clone())
                .into_iter()
                .map(gemm_bf16::round_bf16);
            Tensor::<2>::from_data(TensorData::new(v.collect(), t.dims()), &t.device())
        };
        let (xi, wi, ri) = (x.inner(), w.inner(), r.inner());
        let bias = rounded(b.inner().unsqueeze::<2>());
        let close = |got: Tensor<2>, want: Tensor<2>, what: &str| {
            for (g, w) in crate::to_vec(got).iter().zip(crate::to_vec(want)) {
                assert!(
                    (g - w).abs() <= 8e-3 * (1.0 + w.abs()),
                    "{what}: {g} vs {w}"
                );
            }
        };
        close(
            y.inner(),
            rounded(xi.clone()).matmul(rounded(wi.clone())) + bias,
            "y",
        );
        close(
            gx,
            rounded(ri.clone()).matmul(rounded(wi).transpose()),
            "dx",
        );
        close(gw, rounded(xi).transpose().matmul(rounded(ri)), "dW");
    }
}
