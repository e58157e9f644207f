//! The UnAV data layer's error type: every message names the file (and the video id, where
//! one is concerned) and the problem. Nothing in `dense::data` panics on bad input.

use std::path::PathBuf;

/// Errors of the UnAV-100 data layer.
#[derive(Debug, thiserror::Error)]
pub enum DenseDataError {
    /// A required file or folder does not exist.
    #[error("{}: missing{}: {what}", path.display(), video_suffix(video))]
    Missing {
        path: PathBuf,
        video: Option<String>,
        what: String,
    },
    /// Operating-system I/O failure.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// The annotation file is not valid JSON or not the UnAV layout.
    #[error("{}: {msg}", path.display())]
    Json { path: PathBuf, msg: String },
    /// A `.npy` file cannot be read (bad header, unsupported dtype, truncated, not 2-D).
    #[error("{} (video {video}): {msg}", path.display())]
    Npy {
        path: PathBuf,
        video: String,
        msg: String,
    },
    /// A feature file has another number of channels than configured.
    #[error("{} (video {video}): {expected} channels expected, the file has {found}", path.display())]
    Width {
        path: PathBuf,
        video: String,
        expected: usize,
        found: usize,
    },
    /// The RGB and flow files of a video have different numbers of snippets (the official
    /// `np.hstack` fails on them too).
    #[error("{} (video {video}): {rgb} RGB snippets but {flow} flow snippets", path.display())]
    Length {
        path: PathBuf,
        video: String,
        rgb: usize,
        flow: usize,
    },
    /// A feature value is NaN or infinite.
    #[error("{} (video {video}): non-finite value {value} at snippet {row}, channel {col}", path.display())]
    NonFinite {
        path: PathBuf,
        video: String,
        row: usize,
        col: usize,
        value: f32,
    },
    /// An annotated segment is malformed: end before start, outside `[0, duration]`, not finite.
    #[error("{} (video {video}): annotation {index}: {msg}", path.display())]
    Segment {
        path: PathBuf,
        video: String,
        index: usize,
        msg: String,
    },
    /// A label that the label dictionary does not know, or a `label_id` outside the classes.
    #[error("{} (video {video}): annotation {index}: {msg}", path.display())]
    Label {
        path: PathBuf,
        video: String,
        index: usize,
        msg: String,
    },
    /// A video entry lacks what the loader needs (fps, subset) or holds wrong types.
    #[error("{} (video {video}): {msg}", path.display())]
    Video {
        path: PathBuf,
        video: String,
        msg: String,
    },
    /// No video of the annotation file belongs to the requested subsets.
    #[error("{}: no video in subset(s) {}", path.display(), split.join(", "))]
    EmptySplit { path: PathBuf, split: Vec<String> },
    /// A configuration value the official code would reject (assertions) or could not use.
    #[error("dense data config: {0}")]
    Config(String),
}

fn video_suffix(video: &Option<String>) -> String {
    match video {
        Some(v) => format!(" (video {v})"),
        None => String::new(),
    }
}
