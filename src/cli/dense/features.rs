//! `cace dense features --videos DIR|LIST --encoders E --weights W --out DIR`: per-second
//! features of one's own videos in the UnAV layout, for `cace dense train` and
//! `cace predict --video --dense`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use cace_net::dense::video::write_unav_features;
use cace_net::encoders::decode;
use cace_net::encoders::registry::{EncoderKind, load_encoders};
use cace_net::extract::dataset::list_videos;

use super::super::args::DeviceArg;

#[derive(clap::Args)]
pub struct Args {
    /// A folder of videos or a text file with one path per line.
    #[arg(long)]
    videos: PathBuf,
    /// Encoder pair: `vgg` (VGG19 + VGGish) or `resnet-cnn14`.
    #[arg(long, value_enum, default_value_t = EncoderKind::Vgg)]
    encoders: EncoderKind,
    /// Folder with the encoders' weight files.
    #[arg(long)]
    weights: PathBuf,
    /// Output folder: `av_features/` and `dense_config.json`; add
    /// `annotations/unav100_annotations.json` (README) to train on it.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArg,
}

pub fn run(a: Args) -> Result<()> {
    if !decode::available() {
        bail!(decode::NOT_BUILT);
    }
    let videos = list_videos(&a.videos)?;
    let device = a.device.get()?;
    let (frames, audio) = load_encoders(a.encoders, &a.weights, &device)?;
    let r = write_unav_features(&videos, &a.out, frames.as_ref(), audio.as_ref(), true)?;
    println!(
        "{} videos → {} (data settings for training: {})",
        r.written.len(),
        a.out.join("av_features").display(),
        a.out.join("dense_config.json").display()
    );
    if !r.failed.is_empty() {
        bail!(
            "{} of {} videos failed (listed above); the others are written",
            r.failed.len(),
            videos.len()
        );
    }
    Ok(())
}
