//! `cace predict --video`: CACE-Net on a user's clip — decode, encode, run the model per
//! ten-second window, per-second events with absolute times.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use super::{ClipPlan, Timings, WINDOW, encode_clip};
use crate::config::ModelConfig;
use crate::data::annotations::{BACKGROUND, CATEGORIES};
use crate::encoders::{AudioEncoder, FrameEncoder, RgbFrame};
use crate::inference::label_name;
use crate::metric::{event_prob, predict};
use crate::model::{CaceNet, ForwardOptions, SpatialMaps};
use crate::plot::{TimelineRow, timeline};
use crate::{T, to_vec};

/// One second of a clip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// Start of the second in the clip (absolute, across windows).
    pub t: usize,
    /// σ(event logit): probability that an audio-visual event happens in this second.
    pub event_prob: f32,
    /// Category name, or `"background"`.
    pub label: String,
    /// Category index `0..28`, 28 = background.
    pub class: usize,
    /// This second is padding after the end of the clip.
    pub padded: bool,
}

/// One ten-second window as the model saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowResult {
    pub start: usize,
    pub content_seconds: usize,
    pub padded_seconds: usize,
    /// The window's 28 category scores (`event_scores`).
    pub class_logits: Vec<f32>,
    /// Event/background logits of its ten seconds.
    pub event_logits: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EncoderNames {
    pub visual: String,
    pub audio: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictTimings {
    #[serde(flatten)]
    pub stages: Timings,
    pub model: f64,
    pub total: f64,
}

/// The result for one clip, as `cace predict --video` writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoResult {
    pub video: String,
    pub duration_s: f64,
    /// Whole seconds of content.
    pub seconds: usize,
    /// Seconds of padding added to fill the last window (see [`crate::extract`]).
    pub padded_seconds: usize,
    /// Every second the model labelled: `10 · windows`, the last `padded_seconds` marked.
    pub segments: Vec<Segment>,
    /// Category scores: the window's for a clip of up to 10 s, the mean over windows otherwise.
    pub class_logits: Vec<f32>,
    pub windows: Vec<WindowResult>,
    pub encoders: EncoderNames,
    /// Seconds of wall-clock time per stage.
    pub timings_s: PredictTimings,
    /// Problems with the input that did not stop the prediction (e.g. a truncated file whose
    /// last seconds repeat its last frame).
    pub warnings: Vec<String>,
}

/// Checks that the model takes the encoders' features: `[7,7,C]` maps with `C` its visual
/// width and audio of its audio width.
pub fn check_model_inputs(
    config: &ModelConfig,
    frames: &dyn FrameEncoder,
    audio: &dyn AudioEncoder,
) -> Result<()> {
    let shape = frames.output_shape();
    if shape.len() != 3 || shape[0] != 7 || shape[1] != 7 {
        bail!(
            "CACE-Net needs [7,7,C] visual maps; frame encoder {} gives {shape:?}",
            frames.name()
        );
    }
    if shape[2] != config.visual_dim || audio.dim() != config.audio_dim {
        bail!(
            "the checkpoint expects {}-d visual and {}-d audio features, but {} + {} give {} and {} (pick the --encoders the checkpoint was trained with)",
            config.visual_dim,
            config.audio_dim,
            frames.name(),
            audio.name(),
            shape[2],
            audio.dim()
        );
    }
    Ok(())
}

/// Runs `model` on the clip at `path`, window by window (evaluation mode, as `cace predict`).
pub fn predict_video(
    model: &CaceNet,
    config: &ModelConfig,
    path: &Path,
    frames: &dyn FrameEncoder,
    audio: &dyn AudioEncoder,
    device: &Device,
) -> Result<VideoResult> {
    predict_video_with(model, config, path, frames, audio, device, None)
}

/// [`predict_video`], and with `attention = Some(dir)` two PNGs per second of content in `dir`:
/// AVCA's audio-guided and self-calibration attention over the 7×7 grid laid over that
/// second's middle frame (the paper's Figure 5), see [`attention_figures`].
pub fn predict_video_with(
    model: &CaceNet,
    config: &ModelConfig,
    path: &Path,
    frames: &dyn FrameEncoder,
    audio: &dyn AudioEncoder,
    device: &Device,
    attention: Option<&Path>,
) -> Result<VideoResult> {
    check_model_inputs(config, frames, audio)?;
    let start = Instant::now();
    let shape = frames.output_shape();
    let mut windows = Vec::new();
    let mut model_s = 0.0;
    let summary = encode_clip(path, frames, audio, &mut |w| {
        let t = Instant::now();
        let visual = Tensor::<5>::from_data(
            TensorData::new(w.visual, [1, T, shape[0], shape[1], shape[2]]),
            device,
        );
        let sound = Tensor::<3>::from_data(TensorData::new(w.audio, [1, T, audio.dim()]), device);
        let out = model.forward(visual, sound, ForwardOptions::bece_on());
        if let Some(dir) = attention {
            let Some(maps) = out.spatial_maps else {
                bail!(
                    "this model has no spatial attention (its guide has no audio-guided visual branch)"
                );
            };
            attention_figures(dir, path, &w.key_frames, w.start, maps)?;
        }
        windows.push(WindowResult {
            start: w.start,
            content_seconds: w.content_seconds,
            padded_seconds: WINDOW - w.content_seconds,
            event_logits: to_vec(out.is_event),
            class_logits: to_vec(out.event_scores),
        });
        model_s += t.elapsed().as_secs_f64();
        Ok(())
    })?;
    Ok(assemble(
        &summary.plan,
        windows,
        &summary,
        model_s,
        start.elapsed().as_secs_f64(),
    ))
}

/// Writes AVCA's two spatial attentions over the 7×7 grid (audio-guided, and the
/// self-calibration attention of the visual map) for each content second, laid over that
/// second's middle frame: `<video stem>_<kind>_t<second>.png`.
fn attention_figures(
    dir: &Path,
    video: &Path,
    key_frames: &[RgbFrame],
    start: usize,
    maps: SpatialMaps,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = video
        .file_stem()
        .map_or("video".into(), |s| s.to_string_lossy().into_owned());
    for (kind, w) in maps.named() {
        for (s, frame) in key_frames.iter().enumerate() {
            let grid: [f32; 49] = std::array::from_fn(|i| w[s * 49 + i]);
            let t = start + s;
            crate::plot::attention_grid(
                &dir.join(format!("{stem}_{kind}_t{t}.png")),
                &format!("{stem}: {kind} attention, second {t}"),
                &grid,
                Some((frame.width as u32, frame.height as u32, &frame.data)),
            )?;
        }
    }
    Ok(())
}

fn assemble(
    plan: &ClipPlan,
    windows: Vec<WindowResult>,
    summary: &super::ClipSummary,
    model_s: f64,
    total_s: f64,
) -> VideoResult {
    let mut segments = Vec::with_capacity(windows.len() * T);
    for w in &windows {
        let pred = predict(&w.event_logits, &w.class_logits, 1);
        for (s, (&logit, &class)) in w.event_logits.iter().zip(&pred).enumerate() {
            segments.push(Segment {
                t: w.start + s,
                event_prob: event_prob(logit),
                label: label_name(class),
                class,
                padded: s >= w.content_seconds,
            });
        }
    }
    let classes = windows.first().map_or(0, |w| w.class_logits.len());
    let class_logits = (0..classes)
        .map(|c| windows.iter().map(|w| w.class_logits[c]).sum::<f32>() / windows.len() as f32)
        .collect();
    VideoResult {
        video: plan.video.to_string_lossy().into_owned(),
        duration_s: plan.duration,
        seconds: plan.seconds,
        padded_seconds: plan.padded_seconds,
        segments,
        class_logits,
        windows,
        encoders: EncoderNames {
            visual: summary.visual_encoder.clone(),
            audio: summary.audio_encoder.clone(),
        },
        warnings: summary
            .frames_end_early
            .map(|t| {
                format!(
                    "the video frames end at {t:.2} s although the file declares {:.2} s \
                     (truncated or damaged?); the last frame is repeated after that",
                    plan.duration
                )
            })
            .into_iter()
            .collect(),
        timings_s: PredictTimings {
            stages: summary.timings.clone(),
            model: model_s,
            total: total_s,
        },
    }
}

/// A readable per-second table of a result.
pub fn table(r: &VideoResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}  ({:.1} s, {} + {}{})",
        r.video,
        r.duration_s,
        r.encoders.visual,
        r.encoders.audio,
        if r.padded_seconds > 0 {
            format!(", last {} s padded", r.padded_seconds)
        } else {
            String::new()
        }
    );
    let _ = writeln!(s, "{:>6}  {:>10}  label", "t (s)", "event_prob");
    for seg in &r.segments {
        let _ = writeln!(
            s,
            "{:>6}  {:>10.3}  {}{}",
            seg.t,
            seg.event_prob,
            seg.label,
            if seg.padded { "  (padding)" } else { "" }
        );
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

/// The timeline figure (paper Figure 4 style): one row of ten seconds per window, labelled
/// with its time span; padded seconds are named in the title.
pub fn timeline_figure(r: &VideoResult, path: &Path) -> Result<()> {
    let labels: Vec<[usize; T]> = r
        .segments
        .chunks(T)
        .map(|c| std::array::from_fn(|i| c[i].class))
        .collect();
    let probs: Vec<[f32; T]> = r
        .segments
        .chunks(T)
        .map(|c| std::array::from_fn(|i| c[i].event_prob))
        .collect();
    let names: Vec<String> = r
        .windows
        .iter()
        .map(|w| {
            if r.windows.len() == 1 {
                "prediction".to_string()
            } else {
                format!("{}–{} s", w.start, w.start + T)
            }
        })
        .collect();
    let rows: Vec<TimelineRow> = (0..labels.len())
        .map(|i| TimelineRow {
            name: &names[i],
            labels: &labels[i],
            probs: Some(&probs[i]),
        })
        .collect();
    let file = Path::new(&r.video)
        .file_name()
        .map_or(r.video.clone(), |n| n.to_string_lossy().into_owned());
    let title = if r.padded_seconds > 0 {
        format!("{file} (last {} s padded)", r.padded_seconds)
    } else {
        file
    };
    let mut class_names: Vec<&str> = CATEGORIES.to_vec();
    class_names.push("background");
    debug_assert_eq!(class_names.len(), BACKGROUND + 1);
    timeline(path, &title, &rows, &class_names)
}
