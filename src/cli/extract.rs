use std::path::PathBuf;

use super::args::DeviceArg;
use anyhow::{Result, bail};
use cace_net::encoders::decode;
use cace_net::encoders::registry::{EncoderKind, check_weights, load_encoders};
use cace_net::extract::dataset::{
    ExtractOptions, ExtractReport, INDEX_FILE, Shard, extract_dataset, merge_shards,
};

#[derive(clap::Args)]
pub struct Args {
    /// A folder of videos (searched recursively, sorted) or a text file listing one per line.
    #[arg(long, required_unless_present = "merge")]
    videos: Option<PathBuf>,
    /// Output folder: visual_feature.h5, audio_feature.h5, test_order.h5, index.tsv.
    #[arg(long)]
    out: PathBuf,
    /// Encoder pair: `vgg` (VGG19 + VGGish, the AVE features), `resnet-cnn14` or
    /// `vgg19bn-vggish` (Table S5).
    #[arg(long, value_enum, default_value_t = EncoderKind::Vgg)]
    encoders: EncoderKind,
    /// Folder with the encoders' weight files (vgg19.pth, vggish.pth / resnet50.pth, cnn14.pth /
    /// vgg19_bn.pth, vggish.pth).
    #[arg(long, required_unless_present = "merge")]
    weights: Option<PathBuf>,
    /// Extract only every n-th video, starting at the i-th (0-based): `i/n`.
    #[arg(long)]
    shard: Option<Shard>,
    /// Combine finished shard folders into `--out` instead of extracting.
    #[arg(long, num_args = 1.., conflicts_with_all = ["videos", "weights", "shard"])]
    merge: Vec<PathBuf>,
    #[command(flatten)]
    device: DeviceArg,
}

fn print_report(r: &ExtractReport) {
    if r.already_complete {
        println!(
            "{} is already complete: {} videos, {} rows",
            r.out.display(),
            r.videos,
            r.rows
        );
    } else {
        println!(
            "{} videos ({} extracted now, {} from an earlier run) → {} rows in {}",
            r.videos,
            r.extracted_now,
            r.resumed,
            r.rows,
            r.out.display()
        );
    }
    if !r.failed.is_empty() {
        println!(
            "{} video(s) failed and were skipped (listed in {}):",
            r.failed.len(),
            r.out.join(INDEX_FILE).display()
        );
        for (video, error) in &r.failed {
            println!("  {video}: {error}");
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    if !a.merge.is_empty() {
        let report = merge_shards(&a.merge, &a.out)?;
        print_report(&report);
        return fail_if_any_failed(&report);
    }
    let (Some(videos), Some(weights)) = (a.videos, a.weights) else {
        bail!("--videos and --weights are required");
    };
    if !decode::available() {
        bail!(decode::NOT_BUILT);
    }
    let device = a.device.get()?;
    // Fail on a missing weight file before any decoding.
    check_weights(a.encoders, &weights)?;
    let opts = ExtractOptions {
        videos,
        out: a.out,
        encoders: a.encoders.to_string(),
        shard: a.shard,
        progress: true,
    };
    let report = extract_dataset(&opts, &mut || load_encoders(a.encoders, &weights, &device))?;
    print_report(&report);
    fail_if_any_failed(&report)
}

/// The rule `extract` and `predict --video` share: what succeeded is written, and the exit
/// status is 1 when any video failed, so scripts notice partial results.
fn fail_if_any_failed(r: &cace_net::extract::dataset::ExtractReport) -> Result<()> {
    if !r.failed.is_empty() {
        bail!(
            "{} of {} videos failed (listed above and in {}); the others are in {}",
            r.failed.len(),
            r.videos,
            r.out.join(INDEX_FILE).display(),
            r.out.display()
        );
    }
    Ok(())
}
