//! Synthetic UnAV-layout datasets with overlapping events of known boundaries
//! (`cace synth --kind unav`).
//!
//! [`generate`] writes `OUT/annotations/unav100_annotations.json` and
//! `OUT/av_features/<id>_{rgb,flow,vggish}.npy` (float32, `T × C`, C order), the tree the
//! official config points at and [`super::data::UnavPaths::in_dir`] reads.
//!
//! * Videos `synth_00000…`: duration uniform in `[min_duration, max_duration]` s (0.01 s
//!   steps), fps 25, subsets `train` / `validation` / `test` in proportion 70/15/15 (at least one
//!   video each), in id order.
//! * Events: 1 to `max_events` per video, class uniform among `classes` (ids `0..classes` of
//!   the 100, named `synthetic event NN`), length uniform in `[2 s, duration/2]`, start uniform;
//!   so events often overlap, also within a class.
//! * Features on the I3D grid: `T = ⌊(duration·fps − num_frames)/feat_stride⌋ + 1` snippets;
//!   snippet `t` stands at `(t·feat_stride + num_frames/2)/fps` s, the time the official
//!   loader maps grid point `t` to. Every class has a unit visual prototype (RGB ⊕ flow) and a
//!   unit audio prototype (orthonormal across classes when the width allows). A snippet holds
//!   `noise · N(0, 1)` in every channel plus `amplitude · U(0.8, 1.2) ·` prototype of each event
//!   whose span `[start, end]` contains its time, in both modalities; elsewhere only noise.
//!
//! # Determinism
//! ChaCha8 streams (stream 0 for the prototypes, `i + 1` for video `i`) and IEEE basic
//! arithmetic only, so a seed gives the same bytes everywhere; video `i` depends only on
//! `(seed, config, i)`.

mod plan;
mod signal;

use std::path::{Path, PathBuf};

pub use plan::{SynthEvent, SynthVideo, plan_videos};
pub use signal::{Prototypes, snippet_count, snippet_time, video_features};

use super::data::features::write_npy;
use super::data::{ANNOTATION_FILE, DenseDataError};

/// Settings of the generator.
#[derive(Debug, Clone, PartialEq)]
pub struct UnavSynthConfig {
    pub videos: usize,
    pub seed: u64,
    /// Classes used (ids `0..classes`, at most 100).
    pub classes: usize,
    pub min_duration: f64,
    pub max_duration: f64,
    pub max_events: usize,
    pub fps: f64,
    pub feat_stride: usize,
    pub num_frames: usize,
    pub rgb_dim: usize,
    pub flow_dim: usize,
    pub audio_dim: usize,
    /// Standard deviation of the background noise.
    pub noise: f32,
    /// Strength of an event's prototype.
    pub amplitude: f32,
}

impl Default for UnavSynthConfig {
    fn default() -> Self {
        UnavSynthConfig {
            videos: 100,
            seed: 0,
            classes: 10,
            min_duration: 20.0,
            max_duration: 60.0,
            max_events: 4,
            fps: 25.0,
            feat_stride: 8,
            num_frames: 24,
            rgb_dim: 1024,
            flow_dim: 1024,
            audio_dim: 128,
            noise: 1.0,
            amplitude: 3.0,
        }
    }
}

impl UnavSynthConfig {
    fn check(&self) -> Result<(), String> {
        if self.videos < 3 {
            return Err("need at least 3 videos (one per subset)".into());
        }
        if self.classes == 0 || self.classes > 100 {
            return Err(format!("classes = {} must be in 1..=100", self.classes));
        }
        let d = (self.min_duration, self.max_duration);
        let min_len = (self.num_frames as f64 / self.fps).max(4.0);
        if !(d.0.is_finite() && d.1.is_finite() && min_len <= d.0 && d.0 <= d.1) {
            return Err(format!(
                "durations {d:?} must satisfy {min_len} <= min <= max"
            ));
        }
        if self.max_events == 0 || self.feat_stride == 0 || !(self.fps > 0.0) {
            return Err("max_events, feat_stride and fps must be positive".into());
        }
        if self.rgb_dim + self.flow_dim == 0 || self.audio_dim == 0 {
            return Err("channel counts must be positive".into());
        }
        if !(self.noise >= 0.0 && self.amplitude > 0.0) {
            return Err("noise must be >= 0 and amplitude > 0".into());
        }
        Ok(())
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct UnavSynthSummary {
    pub videos: usize,
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    pub events: usize,
    /// Events that overlap another event of their video.
    pub overlapping: usize,
}

/// Writes the dataset into `out` (created if needed; refuses a folder that already holds the
/// annotation file or the feature folder).
pub fn generate(out: &Path, cfg: &UnavSynthConfig) -> Result<UnavSynthSummary, DenseDataError> {
    cfg.check()
        .map_err(|m| DenseDataError::Config(format!("synthetic UnAV set: {m}")))?;
    let ann_dir = out.join("annotations");
    let feat_dir = out.join("av_features");
    for p in [ann_dir.join(ANNOTATION_FILE), feat_dir.clone()] {
        if p.exists() {
            return Err(DenseDataError::Video {
                path: p,
                video: "-".into(),
                msg: "already exists; the generator never overwrites a dataset".into(),
            });
        }
    }
    for d in [&ann_dir, &feat_dir] {
        std::fs::create_dir_all(d).map_err(|e| io_err(d, "creating the output folder", e))?;
    }
    let videos = plan_videos(cfg);
    let protos = Prototypes::new(cfg);
    for (i, v) in videos.iter().enumerate() {
        let [rgb, flow, audio] = video_features(cfg, &protos, v, i);
        for (kind, m) in [("rgb", &rgb), ("flow", &flow), ("vggish", &audio)] {
            let p = feat_dir.join(format!("{}_{kind}.npy", v.id));
            write_npy(&p, m).map_err(|e| io_err(&p, "writing a feature file", e))?;
        }
    }
    let json_path = ann_dir.join(ANNOTATION_FILE);
    let text = serde_json::to_string_pretty(&plan::annotation_json(&videos)).expect("json");
    std::fs::write(&json_path, text)
        .map_err(|e| io_err(&json_path, "writing the annotations", e))?;
    Ok(plan::summary(&videos))
}

fn io_err(path: &Path, what: &'static str, source: std::io::Error) -> DenseDataError {
    DenseDataError::Io {
        path: PathBuf::from(path),
        what,
        source,
    }
}
