//! Arguments several commands share, flattened into each command's `Args`.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use cace_net::device::parse_device;

/// `--device`.
#[derive(clap::Args)]
pub struct DeviceArg {
    /// `cpu`, `cuda[:N]`, `wgpu[:ADAPTER]` or `vulkan[:ADAPTER]` (each GPU kind needs its cargo
    /// feature; README, GPU).
    #[arg(long = "device", default_value = "cpu")]
    pub name: String,
}

impl DeviceArg {
    pub fn get(&self) -> Result<Device> {
        parse_device(&self.name)
    }
}

/// `--checkpoint` of the commands that run a trained model.
#[derive(clap::Args)]
pub struct CheckpointArg {
    /// Checkpoint: official `.pth.tar` or native directory (`best/` or `last/` of a run).
    #[arg(long = "checkpoint")]
    pub path: PathBuf,
}

/// `--precision`.
#[derive(clap::Args)]
pub struct PrecisionArg {
    /// `f32` (the default and the parity standard) or `bf16`: the large multiplies with bf16
    /// operands and f32 sums (a CPU with AVX512-BF16, or a CUDA GPU; README, "bf16").
    #[arg(long = "precision", value_name = "f32|bf16")]
    pub value: Option<cace_net::precision::Precision>,
}

impl PrecisionArg {
    /// Checks the precision against `device` and sets it on this thread while the guard lives.
    pub fn enter(&self, device: &Device) -> Result<cace_net::precision::Scope> {
        let p = self.value.unwrap_or_default();
        cace_net::precision::check(p, device)?;
        Ok(cace_net::precision::scope(p))
    }
}
