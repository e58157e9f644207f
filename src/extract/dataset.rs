//! `cace extract`: features of a collection of videos in the AVE HDF5 layout, resumable and
//! shardable.
//!
//! ## Output directory
//!
//! | file | content |
//! |---|---|
//! | `visual_feature.h5` | key `avadataset`, float32 `[N,10,7,7,C]` (C = 512 VGG19, 2048 ResNet50) |
//! | `audio_feature.h5` | key `avadataset`, float32 `[N,10,D]` (D = 128 VGGish, 2048 Cnn14) |
//! | `test_order.h5` | key `order`, int64 `0..N`: every row, so `cace predict --data DIR` runs on it |
//! | `index.tsv` | one line per row (and per failed video): which video and seconds it holds |
//! | `extract.json` | encoders, shapes, counts; written last, it marks the directory complete |
//!
//! **One row per ten-second window** (see [`crate::extract`]): a 10 s video (an AVE video) is one
//! row, a 3 s video one row with 7 padded seconds, a 25 s video three rows. Rows follow the video
//! list order, a video's windows consecutively. `index.tsv` columns: `row` (or `-` for a failed
//! video), `list_index` (position in the full video list, before sharding), `video`, `start_s`
//! (first second of the window), `content_s`, `padded_s`, `status` (`ok` / `failed`), `error`.
//!
//! The directory is an AVE-layout dataset as [`crate::data::ave::AveDir`] reads it. It has no
//! labels: for `cace train`, add an `Annotations.txt` (one `Category&id&quality&start&end` line
//! per row, in row order) or a `labels.h5`, and `train_order.h5` / `val_order.h5` (README).
//!
//! ## Video list
//!
//! `--videos DIR`: every file with a video extension ([`VIDEO_EXTENSIONS`]) under `DIR`
//! (recursively), sorted by path. `--videos LIST`: a text file with one path per line (relative
//! paths are relative to the list's folder; blank lines and `#` comments ignored), in file order.
//!
//! ## Resuming
//!
//! Each video's features are written to `OUT/.staging/<key>.feat` through a temporary file and a
//! rename, so a video is either completely staged or not at all; a video that cannot be decoded
//! gets a `<key>.failed` note instead. A restarted run skips every staged or failed video and
//! extracts the rest. Once all are done the HDF5 files are assembled from the staging folder in
//! list order (each through a temporary file and a rename), `extract.json` is written, and the
//! staging folder is removed. An interrupted and restarted run therefore writes byte-identical
//! files to an uninterrupted one. Running again on a complete directory with the same videos does
//! nothing. To retry failed videos, delete the directory's `.staging/*.failed` before it
//! completes, or extract them into a new directory.
//!
//! ## Sharding
//!
//! `--shard i/n` (`0 <= i < n`) takes the videos at list positions `p` with `p mod n = i` and
//! writes a complete, valid dataset of its own to its `--out`. `cace extract --merge SHARD_DIR...
//! --out DIR` combines the `n` shard directories into one whose files are byte-identical to an
//! unsharded run over the whole list.
//!
//! ## Files
//!
//! This file holds the vocabulary (options, report, manifest) and small helpers;
//! `videos.rs` lists and shards the videos, `staging.rs` is the resumable per-video staging
//! folder, `run.rs` runs an extraction, `assemble.rs` writes the HDF5 files from the staging
//! folder, `index.rs` reads and writes `index.tsv`, `merge.rs` combines shards.

mod assemble;
mod index;
mod merge;
mod run;
mod staging;
mod videos;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::encoder_shapes;
use crate::encoders::{AudioEncoder, FrameEncoder};

pub use index::{IndexEntry, read_index};
pub use merge::merge_shards;
pub use run::{LoadEncoders, extract_dataset};
pub use videos::{list_videos, select};

/// File extensions taken from a `--videos DIR` (lower case).
pub const VIDEO_EXTENSIONS: [&str; 14] = [
    "mp4", "m4v", "mkv", "webm", "avi", "mov", "mpg", "mpeg", "flv", "wmv", "ogv", "3gp", "ts",
    "mts",
];
pub const INDEX_FILE: &str = "index.tsv";
pub const MANIFEST_FILE: &str = "extract.json";
const STAGING_DIR: &str = ".staging";

/// `--shard i/n`: the videos at list positions `p` with `p % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || anyhow!("shard {s:?}: expected i/n with 0 <= i < n, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What to extract and where.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// A folder of videos or a list file.
    pub videos: PathBuf,
    pub out: PathBuf,
    /// The encoder pair's name as recorded in `extract.json` (e.g. `vgg`); a restart must use
    /// the same.
    pub encoders: String,
    pub shard: Option<Shard>,
    /// Show a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExtractReport {
    pub out: PathBuf,
    /// Videos in this run's list (after sharding).
    pub videos: usize,
    /// Videos decoded and encoded by this process.
    pub extracted_now: usize,
    /// Videos found already staged (or failed) by an earlier, interrupted run.
    pub resumed: usize,
    /// Rows of the written HDF5 files.
    pub rows: usize,
    /// Videos that could not be decoded or encoded, with the reason.
    pub failed: Vec<(String, String)>,
    /// The directory was already complete; nothing was done.
    pub already_complete: bool,
}

/// The encoders a directory was extracted with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderSettings {
    pub visual_encoder: String,
    pub audio_encoder: String,
    /// Per-second visual feature shape, `[7, 7, C]` (or pooled `[C]`).
    pub visual_shape: Vec<usize>,
    pub audio_dim: usize,
}

impl EncoderSettings {
    fn of(frames: &dyn FrameEncoder, audio: &dyn AudioEncoder) -> Result<Self> {
        let (_, audio_dim) = encoder_shapes(frames, audio)?;
        let shape = frames.output_shape();
        if !(shape.len() == 1 || (shape.len() == 3 && shape[0] == 7 && shape[1] == 7)) {
            bail!(
                "frame encoder {} gives {shape:?} per second; the AVE layout stores [7,7,C] maps or pooled [C]",
                frames.name()
            );
        }
        Ok(Self {
            visual_encoder: frames.name().to_string(),
            audio_encoder: audio.name().to_string(),
            visual_shape: shape,
            audio_dim,
        })
    }
}

/// `extract.json`: what the directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `--encoders` as given.
    pub encoders: String,
    #[serde(flatten)]
    pub encoder: EncoderSettings,
    /// `--videos` as given.
    pub videos_source: String,
    /// Length of the full video list (before sharding).
    pub list_len: usize,
    pub shard: Option<Shard>,
    /// Videos of this directory (after sharding), rows, failed videos.
    pub videos: usize,
    pub rows: usize,
    pub failed: usize,
    /// FNV-1a of the directory's video paths, one per line, to recognise a rerun.
    pub videos_fingerprint: String,
}

impl Manifest {
    /// Writes `DIR/extract.json`, which marks `dir` complete.
    fn write(&self, dir: &Path) -> Result<()> {
        write_file_atomic(&dir.join(MANIFEST_FILE), &serde_json::to_vec_pretty(self)?)
    }
}

/// FNV-1a, 64 bits: a stable name for a video path and a fingerprint of a video list.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn fingerprint<'a>(videos: impl Iterator<Item = &'a str>) -> String {
    let mut text = String::new();
    for v in videos {
        text.push_str(v);
        text.push('\n');
    }
    format!("{:016x}", fnv1a(text.as_bytes()))
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

use crate::fsutil::write_file as write_file_atomic;

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{}: not a valid file", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parsing() {
        assert_eq!(
            "1/4".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 4 }
        );
        for bad in ["4/4", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
