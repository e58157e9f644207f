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
    let mut pictures = Pictures {
        path,
        video: VideoFrames::open(path)?,
        frames,
        visual_len,
        last_frame: None,
        pad_feature: None,
    };
    let mut sound = AudioSamples::open(path, audio.sample_rate())?;
    timings.decode += t0.elapsed().as_secs_f64();

    for w in 0..plan.windows {
        let content = plan.content_seconds(w);
        let (visual, key_frames) = pictures.window(w, content, &mut timings)?;
        let emb = sound_window(path, &mut sound, audio, dim, w, content, &mut timings)?;
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
        frames_end_early: pictures.video.frames_end_early(),
    })
}

/// The picture side of [`encode_clip`]: decoded seconds through the frame encoder, and the
/// padding seconds after the end.
struct Pictures<'a> {
    path: &'a Path,
    video: VideoFrames,
    frames: &'a dyn FrameEncoder,
    /// Values per second of the frame encoder.
    visual_len: usize,
    last_frame: Option<RgbFrame>,
    /// The feature of a padded second, computed once.
    pad_feature: Option<Vec<f32>>,
}

impl Pictures<'_> {
    /// Window `w`'s visual features (`content` seconds decoded, the rest padding) and the key
    /// frames of its content seconds.
    fn window(
        &mut self,
        w: usize,
        content: usize,
        timings: &mut Timings,
    ) -> Result<(Vec<f32>, Vec<RgbFrame>)> {
        let mut visual = Vec::with_capacity(WINDOW * self.visual_len);
        let mut key_frames = Vec::with_capacity(content);
        for s in 0..WINDOW {
            let second = w * WINDOW + s;
            let feature = if s < content {
                self.content_second(second, &mut key_frames, timings)?
            } else {
                self.padding_second(timings)?
            };
            if feature.len() != self.visual_len {
                bail!(
                    "frame encoder {} returned {} values for second {second} of {}; its shape {:?} has {}",
                    self.frames.name(),
                    feature.len(),
                    self.path.display(),
                    self.frames.output_shape(),
                    self.visual_len
                );
            }
            visual.extend_from_slice(&feature);
        }
        Ok((visual, key_frames))
    }

    /// The feature of decoded second `second`; its middle frame goes to `key_frames`.
    fn content_second(
        &mut self,
        second: usize,
        key_frames: &mut Vec<RgbFrame>,
        timings: &mut Timings,
    ) -> Result<Vec<f32>> {
        let p = self.path.display();
        let t = Instant::now();
        let sampled = self
            .video
            .next_second()?
            .with_context(|| format!("{p}: video ended before second {second}"))?;
        timings.decode += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let f = self.frames.encode_second(&sampled).with_context(|| {
            format!(
                "{p}: frame encoder {} failed at second {second}",
                self.frames.name()
            )
        })?;
        timings.visual += t.elapsed().as_secs_f64();
        if let Some(mid) = sampled.get(sampled.len() / 2) {
            key_frames.push(mid.clone());
        }
        self.last_frame = sampled.into_iter().last();
        Ok(f)
    }

    /// The feature of a padded second: the clip's last frame alone, encoded once.
    fn padding_second(&mut self, timings: &mut Timings) -> Result<Vec<f32>> {
        if self.pad_feature.is_none() {
            let p = self.path.display();
            let last = self
                .last_frame
                .as_ref()
                .with_context(|| format!("{p}: no frame to pad with"))?;
            let t = Instant::now();
            self.pad_feature = Some(
                self.frames
                    .encode_second(std::slice::from_ref(last))
                    .with_context(|| {
                        format!(
                            "{p}: frame encoder {} failed on the padding frame",
                            self.frames.name()
                        )
                    })?,
            );
            timings.visual += t.elapsed().as_secs_f64();
        }
        Ok(self.pad_feature.clone().unwrap())
    }
}

/// Window `w`'s audio embedding: `content` seconds of sound, then silence.
fn sound_window(
    path: &Path,
    sound: &mut AudioSamples,
    audio: &dyn AudioEncoder,
    dim: usize,
    w: usize,
    content: usize,
    timings: &mut Timings,
) -> Result<Vec<f32>> {
    let p = path.display();
    let t = Instant::now();
    let mut samples = sound.read_seconds(content)?;
    samples.resize(WINDOW * audio.sample_rate() as usize, 0.0);
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
    Ok(emb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoders::decode::whole_seconds;

    fn plan(duration: f64) -> ClipPlan {
        ClipPlan::new(&MediaInfo {
            path: PathBuf::from("clip.mp4"),
            container: String::new(),
            duration,
            seconds: whole_seconds(duration),
            video: None,
            audio: None,
        })
    }

    /// `(first second, content seconds)` of each window.
    fn windows(p: &ClipPlan) -> Vec<(usize, usize)> {
        (0..p.windows)
            .map(|w| (w * WINDOW, p.content_seconds(w)))
            .collect()
    }

    #[test]
    fn clips_are_cut_into_ten_second_windows_the_last_one_padded() {
        let p = plan(23.0);
        assert_eq!(windows(&p), [(0, 10), (10, 10), (20, 3)]);
        assert_eq!((p.seconds, p.padded_seconds), (23, 7));
        let p = plan(9.95);
        assert_eq!(windows(&p), [(0, 10)]);
        assert_eq!((p.seconds, p.padded_seconds), (10, 0));
        let p = plan(3.0);
        assert_eq!(windows(&p), [(0, 3)]);
        assert_eq!(p.padded_seconds, 7);
        let p = plan(25.4);
        assert_eq!(windows(&p), [(0, 10), (10, 10), (20, 5)]);
        assert_eq!(p.padded_seconds, 5);
        assert_eq!(windows(&plan(20.0)), [(0, 10), (10, 10)]);
        // Under a second there is nothing to cut (`decode::open_clip` refuses such a clip).
        assert_eq!(plan(0.5).windows, 0);
    }
}
