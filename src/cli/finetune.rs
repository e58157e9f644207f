use std::path::PathBuf;

use super::args::DeviceArg;
use super::train::run_config;
use anyhow::Result;
use cace_net::finetune::backbone::BackboneKind;
use cace_net::finetune::{self, FinetuneConfig, FinetuneOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Videos: a folder (every video file under it) or a text file with one path per line.
    /// A video's id is its file name without extension.
    #[arg(long)]
    videos: PathBuf,
    /// AVE-layout folder holding the frozen audio vectors (`audio_feature.h5`), matched to the
    /// videos by `index.tsv` (a `cace extract` output) or `Annotations.txt` (AVE; its test
    /// rows are left out).
    #[arg(long)]
    features: PathBuf,
    /// Image encoder to fine-tune.
    #[arg(long, value_enum)]
    encoder: BackboneKind,
    /// Folder with the pretrained encoder: `resnet50.pth` or `vgg19_bn.pth` (torchvision
    /// state dicts; a fine-tuned `I_state_dict` file under that name works too).
    #[arg(long)]
    weights: PathBuf,
    /// Run directory (metrics.jsonl, curves.png, best/, last/, frames/, and the fine-tuned
    /// `resnet50.pth`/`vgg19_bn.pth` and `I_state_dict.pth.tar`).
    #[arg(long)]
    out: PathBuf,
    /// Epochs [default: 50].
    #[arg(long)]
    epochs: Option<usize>,
    /// Videos per step [default: 128]; a last partial batch of an epoch is dropped, as the
    /// official loader does (`drop_last`).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Videos per forward pass and per contrastive set; the batch is split into shares of this
    /// size whose gradients are averaged, as over the GPUs of the official run [default: 16].
    #[arg(long)]
    local_batch: Option<usize>,
    /// Videos held out of training for the retrieval accuracy [default: 128]; their ids are
    /// written to RUN/held_out.tsv.
    #[arg(long)]
    held_out: Option<usize>,
    /// Settings as JSON (fields of `FinetuneConfig`; the options above override them).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seed of the frame picks, the held-out set and the shuffles [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    device: DeviceArg,
    /// Continue the run saved in `--out`.
    #[arg(long)]
    resume: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut config = run_config(
        a.config.as_ref(),
        &a.out,
        a.resume,
        "fine-tuning config",
        || FinetuneConfig::new(a.encoder),
    )?;
    config.encoder = a.encoder;
    config.epochs = a.epochs.unwrap_or(config.epochs);
    config.batch_size = a.batch_size.unwrap_or(config.batch_size);
    config.local_batch = a
        .local_batch
        .unwrap_or(config.local_batch.min(config.batch_size));
    config.held_out = a.held_out.unwrap_or(config.held_out);
    config.seed = a.seed.unwrap_or(config.seed);
    config.validate()?;
    let epochs = finetune::finetune(&FinetuneOptions {
        videos: a.videos,
        features: a.features,
        weights: a.weights,
        out: a.out.clone(),
        config,
        resume: a.resume,
        device: a.device.get()?,
        verbose: true,
        backbone: None,
    })?;
    println!(
        "fine-tuned {epochs} epochs; encoder: {} (cace extract --weights {} with cnn14.pth or vggish.pth beside it)",
        a.out.join(a.encoder.weights_file()).display(),
        a.out.display()
    );
    Ok(())
}
