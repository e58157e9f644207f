//! `--precision f32|bf16`: the large multiplies in bf16 with f32 accumulation.
//!
//! In bf16 the linear layers that carry the model's work (those run on `[rows, C]`:
//! [`crate::model::nn::flat`], [`crate::model::nn::fused_linear`]) multiply bf16-rounded operands
//! and sum in f32, forward and backward ([`linear_parts`]; `precision/matmul.rs`, which runs them
//! in f32 on the CPU too); everything else — master weights, optimiser state, activations,
//! normalisation, softmax, losses — stays f32. f32 is the default and the parity standard.
//!
//! Like PyTorch's `autocast`, the choice is per thread: a command enters [`scope`] on the thread
//! that runs the model, and concurrent tests on other threads are unaffected. bf16 runs on the
//! CPU (`flex`) device with AVX512-BF16 ([`gemm_bf16`]); elsewhere [`check`] refuses it.

pub mod gemm_bf16;
mod matmul;

use std::cell::Cell;
use std::str::FromStr;

use anyhow::{Result, bail};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

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

/// Whether `precision` can run on `device` here: bf16 needs the CPU device and AVX512-BF16.
pub fn check(precision: Precision, device: &Device) -> Result<()> {
    if precision == Precision::F32 {
        return Ok(());
    }
    if !crate::device::is_flex(device) {
        bail!(
            "--precision bf16 runs on the CPU device (cpu) only; {device:?} has no bf16 kernel here"
        );
    }
    if !gemm_bf16::available() {
        bail!("--precision bf16 needs a CPU with AVX512-BF16 (vdpbf16ps); this one has none");
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
/// device through [`matmul`] (f32 or bf16), elsewhere burn's f32 product.
pub fn linear_parts(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    if !crate::device::is_flex(&x.device()) {
        return burn::tensor::module::linear(x, weight, bias);
    }
    matmul::linear(x, weight, bias, current())
}

/// `l.forward(x)` for `x [rows, d_in]`, in this thread's precision.
pub fn linear(l: &Linear, x: Tensor<2>) -> Tensor<2> {
    linear_parts(x, l.weight.val(), l.bias.as_ref().map(|b| b.val()))
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
}
