//! `cace figures`: the paper's Figure 4 (per-segment prediction timeline against the ground
//! truth) and Figure 5 (AVCA's spatial attention over the 7×7 grid) for chosen videos of a split.

use std::path::PathBuf;

use super::args::{CheckpointArg, DeviceArg};
use anyhow::{Context, Result, bail};
use cace_net::T;
use cace_net::checkpoint;
use cace_net::data::annotations::CATEGORIES;
use cace_net::data::ave::{AveDir, Split};
use cace_net::inference::{label_name, run_row};
use cace_net::plot::{TimelineRow, attention_grid, timeline};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    checkpoint: CheckpointArg,
    /// Dataset directory in the AVE layout.
    #[arg(long)]
    data: PathBuf,
    /// Split the `--videos` positions refer to: train, val or test.
    #[arg(long, default_value = "test")]
    split: Split,
    /// Positions in the split's order (0 = its first video), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    videos: Vec<usize>,
    /// Segments whose attention maps are drawn (default: all ten).
    #[arg(long, value_delimiter = ',')]
    segments: Vec<usize>,
    /// Output directory for the PNG files.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArg,
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device.get()?;
    let data = AveDir::open(&a.data)?;
    let loaded = checkpoint::load(&a.checkpoint.path, None, &device)?;
    let order = data.order(a.split)?;
    let segments: Vec<usize> = if a.segments.is_empty() {
        (0..T).collect()
    } else {
        a.segments.clone()
    };
    if let Some(&s) = segments.iter().find(|&&s| s >= T) {
        bail!("segment {s} out of range: segments are 0..{}", T - 1);
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let split = a.split.as_str();
    for &pos in &a.videos {
        let Some(&row) = order.get(pos) else {
            bail!(
                "video {pos} out of range: the {split} split has {} videos",
                order.len()
            );
        };
        let r = run_row(&loaded.model, &data, row, &device)?;
        let mut rows = vec![TimelineRow {
            name: "prediction",
            labels: &r.pred,
            probs: Some(&r.event_prob),
        }];
        if let Some(truth) = &r.truth {
            rows.push(TimelineRow {
                name: "ground truth",
                labels: truth,
                probs: None,
            });
        }
        let path = a.out.join(format!("timeline_{split}_{pos}.png"));
        let title = format!("{split} video {pos} (row {row})");
        timeline(&path, &title, &rows, &label_names())?;
        println!("{}", path.display());

        let Some(maps) = r.maps else {
            eprintln!(
                "no spatial attention in this model (guide {:?})",
                loaded.config.guide
            );
            continue;
        };
        for (kind, w) in maps {
            for &t in &segments {
                let grid: [f32; 49] = std::array::from_fn(|i| w[t * 49 + i]);
                let path = a
                    .out
                    .join(format!("attention_{kind}_{split}_{pos}_t{t}.png"));
                let label = label_name(r.pred[t]);
                let title = format!("{kind} attention, second {t} (predicted: {label})");
                attention_grid(&path, &title, &grid, None)?;
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}

/// The 28 category names and "background".
fn label_names() -> Vec<&'static str> {
    let mut names = CATEGORIES.to_vec();
    names.push("background");
    names
}
