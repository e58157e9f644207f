use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::Device;
use cace_net::checkpoint::{self, Format, native};

#[derive(clap::Args)]
pub struct Args {
    /// Official checkpoint (`torch.save` state dict, float64 or float32).
    checkpoint: PathBuf,
    /// Output directory (gets `model.safetensors` and `config.json`).
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing checkpoint in `--out`.
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> Result<()> {
    if checkpoint::detect_format(&a.checkpoint)? != Format::Official {
        bail!("{} is already a native checkpoint", a.checkpoint.display());
    }
    let weights = a.out.join(native::WEIGHTS_FILE);
    if weights.exists() && !a.force {
        bail!(
            "{} already exists; pass --force to replace it",
            weights.display()
        );
    }
    // Loading onto the model validates every key and shape before anything is written.
    let loaded = checkpoint::load(&a.checkpoint, None, &Device::flex())?;
    native::write(&a.out, &loaded.state, &loaded.config)?;
    println!(
        "imported {} tensors ({} values) from {} into {}",
        loaded.state.entries.len(),
        loaded.state.numel(),
        a.checkpoint.display(),
        a.out.display()
    );
    Ok(())
}
