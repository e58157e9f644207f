use std::path::PathBuf;

use anyhow::{Context, Result};
use cace_net::checkpoint;
use cace_net::data::ave::{AveDir, Split};
use cace_net::device::parse_device;
use cace_net::inference::predict_split;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint: official `.pth.tar` or native directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset directory in the AVE layout.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "test")]
    split: Split,
    /// Output JSON file.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// `cpu` or `cuda[:N]`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(a: Args) -> Result<()> {
    let device = parse_device(&a.device)?;
    let data = AveDir::open(&a.data)?;
    let loaded = checkpoint::load(&a.checkpoint, None, &device)?;
    let result = predict_split(&loaded.model, &data, a.split, a.batch_size, &device)?;
    let json = serde_json::to_vec_pretty(&result)?;
    cace_net::checkpoint::native::write_atomic(&a.out, &json)
        .with_context(|| format!("writing {}", a.out.display()))?;
    match result.accuracy {
        Some(acc) => println!(
            "{} videos, accuracy: {acc:.2} %  → {}",
            result.videos.len(),
            a.out.display()
        ),
        None => println!(
            "{} videos (no labels) → {}",
            result.videos.len(),
            a.out.display()
        ),
    }
    Ok(())
}
