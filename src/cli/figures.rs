//! `cace figures`: the paper's Figure 4 (per-segment prediction timeline against the ground
//! truth) and Figure 5 (AVCA's spatial attention over the 7×7 grid) for chosen videos of a split.

use std::path::PathBuf;

use super::args::{CheckpointArg, DeviceArg};
use anyhow::{Context, Result, bail};
use burn::tensor::{Tensor, TensorData};
use cace_net::checkpoint;
use cace_net::data::annotations::CATEGORIES;
use cace_net::data::ave::{AveDir, Split};
use cace_net::loss::Targets;
use cace_net::metric::{event_prob, predict};
use cace_net::model::ForwardOptions;
use cace_net::plot::{TimelineRow, attention_grid, timeline};
use cace_net::{T, to_vec};

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
    let mut names: Vec<&str> = CATEGORIES.to_vec();
    names.push("background");
    let dims = data.visual_shape();
    if dims.len() != 4 {
        bail!(
            "{}: the model needs visual maps [N, 10, 7, 7, C]; found per-row shape {dims:?}",
            data.dir().display()
        );
    }
    for &pos in &a.videos {
        let Some(&row) = order.get(pos) else {
            bail!(
                "video {pos} out of range: the {} split has {} videos",
                a.split.as_str(),
                order.len()
            );
        };
        let (mut v, mut au) = (vec![], vec![]);
        data.read_visual(&[row], &mut v)?;
        data.read_audio(&[row], &mut au)?;
        let visual = Tensor::<5>::from_data(
            TensorData::new(v, [1, T, dims[1], dims[2], dims[3]]),
            &device,
        );
        let audio = Tensor::<3>::from_data(TensorData::new(au, [1, T, data.audio_dim()]), &device);
        let out = loaded
            .model
            .forward(visual, audio, ForwardOptions::bece_on());
        let is_event = to_vec(out.is_event);
        let pred = predict(&is_event, &to_vec(out.event_scores), 1);
        let probs: [f32; T] = std::array::from_fn(|t| event_prob(is_event[t]));
        let pred: [usize; T] = std::array::from_fn(|t| pred[t]);
        let mut rows = vec![TimelineRow {
            name: "prediction",
            labels: &pred,
            probs: Some(&probs),
        }];
        let truth: Option<[usize; T]> = if data.has_labels() {
            let mut l = vec![];
            data.read_labels(&[row], &mut l)?;
            let segment = Targets::from_onehot(&l, 1).segment;
            Some(std::array::from_fn(|t| segment[t]))
        } else {
            None
        };
        if let Some(truth) = &truth {
            rows.push(TimelineRow {
                name: "ground truth",
                labels: truth,
                probs: None,
            });
        }
        let title = format!("{} video {pos} (row {row})", a.split.as_str());
        let path = a
            .out
            .join(format!("timeline_{}_{pos}.png", a.split.as_str()));
        timeline(&path, &title, &rows, &names)?;
        println!("{}", path.display());

        let Some(maps) = out.spatial_maps else {
            eprintln!(
                "no spatial attention in this model (guide {:?})",
                loaded.config.guide
            );
            continue;
        };
        for (kind, w) in maps.named() {
            for &t in &segments {
                let grid: [f32; 49] = std::array::from_fn(|i| w[t * 49 + i]);
                let label = names[pred[t]];
                let path = a.out.join(format!(
                    "attention_{kind}_{}_{pos}_t{t}.png",
                    a.split.as_str()
                ));
                attention_grid(
                    &path,
                    &format!("{kind} attention, second {t} (predicted: {label})"),
                    &grid,
                    None,
                )?;
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}
