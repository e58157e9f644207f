//! From a video file to CACE-Net's inputs: decode ([`crate::encoders::decode`]), encode each
//! second with a [`FrameEncoder`] and an [`AudioEncoder`], in windows of ten seconds.
//!
//! ## Clip length policy
//!
//! AVE (and so CACE-Net) works on exactly `T = 10` one-second segments. A clip has `S` whole
//! seconds ([`decode::whole_seconds`]: `floor(duration + 0.1)`), cut into `ceil(S / 10)`
//! consecutive **windows** of ten seconds: seconds `0..10`, `10..20`, …. The last window is
//! **padded** to ten seconds when `S` is not a multiple of 10:
//!
//! * picture: every padded second shows the clip's last sampled frame (its visual feature is the
//!   frame encoder's output for that one frame — the mean over 16 identical frames);
//! * sound: silence (zero samples) after the end of the audio.
//!
//! A 3 s clip is therefore one window with 7 padded seconds, a 25 s clip three windows (the last
//! with 5 padded seconds). Every output says how many seconds were padded (`padded_seconds`,
//! and per window), and per-second outputs mark padded seconds. A clip shorter than one second is
//! an error. Results of several windows are concatenated with absolute times.
//!
//! The submodules build on [`encode_clip`]: [`dataset`] writes AVE-layout feature files for a
//! collection (`cace extract`), [`predict`] runs CACE-Net on a clip (`cace predict --video`).

pub mod dataset;
pub mod predict;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::T;
use crate::encoders::decode::{self, AudioSamples, MediaInfo, VideoFrames};
use crate::encoders::{AudioEncoder, FrameEncoder, RgbFrame};

/// Seconds per window (the model's `T`).
pub const WINDOW: usize = T;

/// How a clip is cut into windows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipPlan {
    pub video: PathBuf,
    /// Container duration in seconds.
    pub duration: f64,
    /// Whole seconds of content.
    pub seconds: usize,
    /// Ten-second windows, `ceil(seconds / 10)`.
    pub windows: usize,
    /// Seconds of padding in the last window.
    pub padded_seconds: usize,
}

impl ClipPlan {
    pub fn new(info: &MediaInfo) -> Self {
        let windows = info.seconds.div_ceil(WINDOW);
        Self {
            video: info.path.clone(),
            duration: info.duration,
            seconds: info.seconds,
            windows,
            padded_seconds: windows * WINDOW - info.seconds,
        }
    }

    /// Seconds of content in window `w` (the rest is padding).
    pub fn content_seconds(&self, w: usize) -> usize {
        self.seconds.saturating_sub(w * WINDOW).min(WINDOW)
    }
}

/// The features of one ten-second window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowFeatures {
    /// Window number, `0..plan.windows`.
    pub index: usize,
    /// First second of the window in the clip (`10 · index`).
    pub start: usize,
    /// Seconds of content; `10 - content_seconds` are padding.
    pub content_seconds: usize,
    /// `[10, ..frame encoder output shape]` row-major.
    pub visual: Vec<f32>,
    /// `[10, audio dim]` row-major.
    pub audio: Vec<f32>,
    /// The middle frame (the 9th of 16) of each content second, for figures that overlay the
    /// model's spatial attention on the picture; empty for padded seconds.
    pub key_frames: Vec<RgbFrame>,
}

/// Wall-clock seconds spent per stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Demuxing, decoding, RGB conversion and resampling.
    pub decode: f64,
    pub visual: f64,
    pub audio: f64,
}

/// What [`encode_clip`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipSummary {
    pub plan: ClipPlan,
    pub info: MediaInfo,
    pub visual_encoder: String,
    pub audio_encoder: String,
    pub timings: Timings,
    /// Time (s) of the last video frame when the file's frames ended more than a second before
    /// its declared duration (truncated or damaged data): later seconds repeat that frame.
    pub frames_end_early: Option<f64>,
}

/// Checks the encoders' declared shapes; returns `(values per second of the frame encoder,
/// audio dim)`.
pub fn encoder_shapes(
    frames: &dyn FrameEncoder,
    audio: &dyn AudioEncoder,
) -> Result<(usize, usize)> {
    let shape = frames.output_shape();
    let visual_len: usize = shape.iter().product();
    if shape.is_empty() || visual_len == 0 {
        bail!(
            "frame encoder {} declares an empty output shape {shape:?}",
            frames.name()
        );
    }
    if audio.dim() == 0 || audio.sample_rate() == 0 {
        bail!(
            "audio encoder {} declares dim {} at {} Hz",
            audio.name(),
            audio.dim(),
            audio.sample_rate()
        );
    }
    Ok((visual_len, audio.dim()))
}

/// Decodes and encodes `path` window by window (see the module doc), calling `on_window` with
/// each window's features as soon as it is ready, so a long video never sits in memory. Errors
/// name the file (and the second, for encoder failures).
pub fn encode_clip(
    path: &Path,
    frames: &dyn FrameEncoder,
    audio: &dyn AudioEncoder,
    on_window: &mut dyn FnMut(WindowFeatures) -> Result<()>,
) -> Result<ClipSummary> {
    let (visual_len, dim) = encoder_shapes(frames, audio)?;
    let info = decode::open_clip(path)?;
    let plan = ClipPlan::new(&info);
    let mut timings = Timings::default();
    let t0 = Instant::now();
    let mut video = VideoFrames::open(path)?;
    let rate = audio.sample_rate();
    let mut sound = AudioSamples::open(path, rate)?;
    timings.decode += t0.elapsed().as_secs_f64();

    let p = path.display();
    let mut last_frame: Option<RgbFrame> = None;
    // The feature of a padded second, computed once.
    let mut pad_feature: Option<Vec<f32>> = None;
    for w in 0..plan.windows {
        let content = plan.content_seconds(w);
        let mut visual = Vec::with_capacity(WINDOW * visual_len);
        let mut key_frames = Vec::with_capacity(content);
        for s in 0..WINDOW {
            let second = w * WINDOW + s;
            let feature = if s < content {
                let t = Instant::now();
                let sampled = video
                    .next_second()?
                    .with_context(|| format!("{p}: video ended before second {second}"))?;
                timings.decode += t.elapsed().as_secs_f64();
                let t = Instant::now();
                let f = frames.encode_second(&sampled).with_context(|| {
                    format!(
                        "{p}: frame encoder {} failed at second {second}",
                        frames.name()
                    )
                })?;
                timings.visual += t.elapsed().as_secs_f64();
                if let Some(mid) = sampled.get(sampled.len() / 2) {
                    key_frames.push(mid.clone());
                }
                last_frame = sampled.into_iter().last();
                f
            } else {
                if pad_feature.is_none() {
                    let last = last_frame
                        .as_ref()
                        .with_context(|| format!("{p}: no frame to pad with"))?;
                    let t = Instant::now();
                    pad_feature = Some(
                        frames
                            .encode_second(std::slice::from_ref(last))
                            .with_context(|| {
                                format!(
                                    "{p}: frame encoder {} failed on the padding frame",
                                    frames.name()
                                )
                            })?,
                    );
                    timings.visual += t.elapsed().as_secs_f64();
                }
                pad_feature.clone().unwrap()
            };
            if feature.len() != visual_len {
                bail!(
                    "frame encoder {} returned {} values for second {second} of {p}; its shape {:?} has {visual_len}",
                    frames.name(),
                    feature.len(),
                    frames.output_shape()
                );
            }
            visual.extend_from_slice(&feature);
        }

        let t = Instant::now();
        let mut samples = sound.read_seconds(content)?;
        samples.resize(WINDOW * rate as usize, 0.0);
        timings.decode += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let emb = audio.encode(&samples, WINDOW).with_context(|| {
            format!(
                "{p}: audio encoder {} failed on seconds {}..{}",
                audio.name(),
                w * WINDOW,
                (w + 1) * WINDOW
            )
        })?;
        timings.audio += t.elapsed().as_secs_f64();
        if emb.len() != WINDOW * dim {
            bail!(
                "audio encoder {} returned {} values for {WINDOW} s of {p}; expected {WINDOW}·{dim}",
                audio.name(),
                emb.len()
            );
        }
        on_window(WindowFeatures {
            index: w,
            start: w * WINDOW,
            content_seconds: content,
            visual,
            audio: emb,
            key_frames,
        })?;
    }
    Ok(ClipSummary {
        plan,
        info,
        visual_encoder: frames.name().to_string(),
        audio_encoder: audio.name().to_string(),
        timings,
        frames_end_early: video.frames_end_early(),
    })
}
