use std::path::{Path, PathBuf};

use super::args::{CheckpointArg, DeviceArg, PrecisionArg};
use anyhow::{Context, Result, bail};
use cace_net::checkpoint;
use cace_net::data::ave::{AveDir, Split};
use cace_net::encoders::decode::{self, open_clip};
use cace_net::encoders::registry::{EncoderKind, load_encoders};
use cace_net::extract::dataset::list_videos;
use cace_net::extract::predict::{VideoResult, predict_video_with, table, timeline_figure};
use cace_net::inference::{check_feature_widths, predict_split};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    checkpoint: CheckpointArg,
    /// Dataset directory in the AVE layout.
    #[arg(long, required_unless_present = "video", conflicts_with = "video")]
    data: Option<PathBuf>,
    /// Split to predict (with `--data`): train, val or test.
    #[arg(long, default_value = "test")]
    split: Split,
    /// A video file, or a folder of videos (one result each), to run end to end: decode,
    /// extract features with `--encoders`, run the model.
    #[arg(long, requires = "weights")]
    video: Option<PathBuf>,
    /// Folder with the encoders' weight files (for `--video`).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Encoder pair for `--video`: `vgg` (VGG19 + VGGish) or `resnet-cnn14`.
    #[arg(long, value_enum, default_value_t = EncoderKind::Vgg)]
    encoders: EncoderKind,
    /// Output JSON file (required with `--data`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Timeline PNG for `--video` (with a folder of videos: a folder, one `<name>.png` each).
    #[arg(long, requires = "video")]
    figure: Option<PathBuf>,
    /// Folder for AVCA's audio-guided and self-calibration attention over each second's middle
    /// frame (paper Figure 5), `<video>_<kind>_t<second>.png`, for `--video`.
    #[arg(long, requires = "video")]
    attention: Option<PathBuf>,
    /// Dense localization with a `cace dense train` checkpoint (its model trained on
    /// `cace dense features` of the same `--encoders`): every event with start, end, label and
    /// score, overlapping allowed, instead of one label per second.
    #[arg(long, requires = "video")]
    dense: bool,
    /// With --dense: events below this score are left out of the figure (all are in the JSON).
    #[arg(long, default_value_t = 0.3, requires = "dense")]
    min_score: f64,
    /// Videos per forward pass (memory vs speed; results do not change).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    precision: PrecisionArg,
}

pub fn run(a: Args) -> Result<()> {
    if let Some(video) = a.video.clone() {
        if a.dense {
            return run_video_dense(a, &video);
        }
        return run_video(a, &video);
    }
    let (Some(data), Some(out)) = (&a.data, &a.out) else {
        bail!("--data needs --out (the JSON file to write)");
    };
    anyhow::ensure!(a.batch_size > 0, "--batch-size must be at least 1");
    let device = a.device.get()?;
    let _precision = a.precision.enter(&device)?;
    let data = AveDir::open(data)?;
    let loaded = checkpoint::load(&a.checkpoint.path, None, &device)?;
    check_feature_widths(&loaded.config, &data)?;
    let result = predict_split(&loaded.model, &data, a.split, a.batch_size, &device)?;
    let json = serde_json::to_vec_pretty(&result)?;
    checkpoint::native::write_atomic(out, &json)
        .with_context(|| format!("writing {}", out.display()))?;
    match result.accuracy {
        Some(acc) => println!(
            "{} videos, accuracy: {acc:.2} %  → {}",
            result.videos.len(),
            out.display()
        ),
        None => println!(
            "{} videos (no labels) → {}",
            result.videos.len(),
            out.display()
        ),
    }
    Ok(())
}

fn figure_path(dir: &Path, video: &Path, used: &mut Vec<PathBuf>) -> PathBuf {
    let stem = video
        .file_stem()
        .map_or("video".into(), |s| s.to_string_lossy().into_owned());
    let mut p = dir.join(format!("{stem}.png"));
    let mut k = 2;
    while used.contains(&p) {
        p = dir.join(format!("{stem}-{k}.png"));
        k += 1;
    }
    used.push(p.clone());
    p
}

fn run_video(a: Args, video: &Path) -> Result<()> {
    if !decode::available() {
        bail!(decode::NOT_BUILT);
    }
    let weights = a.weights.as_deref().expect("clap requires --weights");
    let device = a.device.get()?;
    let _precision = a.precision.enter(&device)?;
    let folder = video.is_dir();
    // Cheap checks first: the clips, the checkpoint, the weight files.
    let (usable, mut failed) = openable_clips(video, folder)?;
    let loaded = checkpoint::load(&a.checkpoint.path, None, &device)?;
    let (vd, ad) = a.encoders.dims();
    if (vd, ad) != (loaded.config.visual_dim, loaded.config.audio_dim) {
        bail!(
            "checkpoint {} expects {}-d visual and {}-d audio features; --encoders {} gives {vd} and {ad}",
            a.checkpoint.path.display(),
            loaded.config.visual_dim,
            loaded.config.audio_dim,
            a.encoders
        );
    }
    let (frames, audio) = load_encoders(a.encoders, weights, &device)?;
    if let Some(dir) = a.figure.as_ref().filter(|_| folder) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let mut results: Vec<VideoResult> = Vec::new();
    let mut figures = Vec::new();
    for v in &usable {
        let r = match predict_video_with(
            &loaded.model,
            &loaded.config,
            v,
            frames.as_ref(),
            audio.as_ref(),
            &device,
            a.attention.as_deref(),
        ) {
            Ok(r) => r,
            Err(e) if folder => {
                eprintln!("skipped: {e:#}");
                failed.push((v.clone(), format!("{e:#}")));
                continue;
            }
            Err(e) => return Err(e),
        };
        println!("{}", table(&r));
        if let Some(dir) = &a.attention {
            println!("attention maps → {}", dir.display());
        }
        if let Some(fig) = &a.figure {
            let path = if folder {
                figure_path(fig, v, &mut figures)
            } else {
                fig.clone()
            };
            timeline_figure(&r, &path)?;
            println!("timeline → {}", path.display());
        }
        results.push(r);
    }
    if let Some(out) = &a.out {
        write_video_results(out, folder, &results, &failed)?;
    }
    if !failed.is_empty() {
        for (v, e) in &failed {
            eprintln!("failed: {}: {e}", v.display());
        }
        bail!(
            "{} of {} videos failed",
            failed.len(),
            failed.len() + results.len()
        );
    }
    Ok(())
}

type Failed = Vec<(PathBuf, String)>;

/// The clips of `video` (a file, or every video in a folder) that open; in a folder the others
/// are returned as failed, a single file that does not open is an error.
fn openable_clips(video: &Path, folder: bool) -> Result<(Vec<PathBuf>, Failed)> {
    let videos = if folder {
        list_videos(video)?
    } else {
        vec![video.to_path_buf()]
    };
    let (mut usable, mut failed) = (Vec::new(), Vec::new());
    for v in videos {
        match open_clip(&v) {
            Ok(_) => usable.push(v),
            Err(e) if folder => failed.push((v, format!("{e:#}"))),
            Err(e) => return Err(e),
        }
    }
    Ok((usable, failed))
}

/// `--out`: one video's result, or for a folder `{"videos": [...], "failed": [...]}`.
fn write_video_results(
    out: &Path,
    folder: bool,
    results: &[VideoResult],
    failed: &Failed,
) -> Result<()> {
    let json = if folder {
        let failed: Vec<serde_json::Value> = failed
            .iter()
            .map(|(v, e)| serde_json::json!({"video": v.to_string_lossy(), "error": e}))
            .collect();
        serde_json::to_vec_pretty(&serde_json::json!({"videos": results, "failed": failed}))?
    } else {
        serde_json::to_vec_pretty(&results[0])?
    };
    checkpoint::native::write_atomic(out, &json)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("results → {}", out.display());
    Ok(())
}

/// `--video FILE --dense`: per-second features with the AVE encoders, the dense model over the
/// whole clip, `{"events": [...]}` and a lanes figure.
fn run_video_dense(a: Args, video: &Path) -> Result<()> {
    use cace_net::dense::{checkpoint as dense_ckpt, video as dense_video};
    if !decode::available() {
        bail!(decode::NOT_BUILT);
    }
    if video.is_dir() {
        bail!(
            "--dense takes one video file (got the folder {})",
            video.display()
        );
    }
    let device = a.device.get()?;
    let _precision = a.precision.enter(&device)?;
    open_clip(video)?;
    let path = &a.checkpoint.path;
    let (model, cfg) = dense_ckpt::load(path, dense_ckpt::Weights::Ema, None, &device)?;
    let names = dense_ckpt::class_names(path)?;
    let weights = a.weights.as_deref().expect("clap requires --weights");
    let (frames, audio) = load_encoders(a.encoders, weights, &device)?;
    let r = dense_video::predict_video_dense(
        &model,
        &cfg.model,
        &names,
        video,
        frames.as_ref(),
        audio.as_ref(),
        &device,
    )?;
    println!(
        "{}: {} seconds, {} detections; the best:",
        r.video,
        r.seconds,
        r.events.len()
    );
    for e in r.events.iter().take(10) {
        println!(
            "  {:>7.1} – {:>7.1} s  {:<32} {:.3}",
            e.start, e.end, e.label, e.score
        );
    }
    if let Some(out) = &a.out {
        checkpoint::native::write_atomic(out, &serde_json::to_vec_pretty(&r)?)?;
        println!("events → {}", out.display());
    }
    if let Some(fig) = &a.figure {
        dense_video::lanes_figure(&r, fig, a.min_score)?;
        println!("timeline → {}", fig.display());
    }
    Ok(())
}
