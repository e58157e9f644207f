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
