use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use cace_net::checkpoint;
use cace_net::config::ModelConfig;
use cace_net::model::CaceNet;
use cace_net::model::state::ParamList;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint (official `.pth.tar` or native directory); the default model without it.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// List every state-dict key with its shape and whether forward uses it.
    #[arg(long)]
    keys: bool,
}

pub fn run(a: Args) -> Result<()> {
    let device = Device::flex();
    let (mut model, config) = match &a.checkpoint {
        Some(path) => {
            let l = checkpoint::load(path, None, &device)?;
            println!("checkpoint: {} ({:?} format)", path.display(), l.format);
            (l.model, l.config)
        }
        None => {
            let c = ModelConfig::default();
            (CaceNet::new(&c, &device)?, c)
        }
    };
    let list = ParamList::of(&mut model);
    println!(
        "parameters: {} total, {} used by forward, {} unused (built by the official code, never read)",
        list.total(),
        list.used(),
        list.total() - list.used()
    );
    println!("tensors: {}", list.entries.len());
    if a.keys {
        for (key, used, shape) in &list.entries {
            println!("  {key} {shape:?}{}", if *used { "" } else { " (unused)" });
        }
    }
    println!("config:\n{}", serde_json::to_string_pretty(&config)?);
    Ok(())
}
