//! Which videos a fine-tuning trains on, and the frozen audio vectors of each (REFERENCE §6.3:
//! the mean of the video's 10 pre-computed audio vectors is the audio side; no audio network is
//! trained).
//!
//! `--features` is an AVE-layout directory whose `audio_feature.h5` rows are matched to videos
//! by id: through `index.tsv` (a `cace extract` output; the first window of each video) or else
//! through `Annotations.txt` (row `i` is line `i`, as the official code looks ids up). A video's
//! id is its file name without extension (the YouTube id for AVE). In the `Annotations.txt` case
//! the rows of `test_order.h5` are left out, as the official run trains on train + val only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::T;
use crate::data::annotations::load_annotations;
use crate::data::ave::{ANNOTATIONS_FILE, AveDir, Split};
use crate::extract::dataset::{list_videos, read_index};

/// One video with its audio vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Video {
    pub id: String,
    pub path: PathBuf,
    /// `[T, audio_dim]` row-major.
    pub audio: Vec<f32>,
}

/// The videos to train on, and what was left out.
pub struct Videos {
    pub videos: Vec<Video>,
    pub audio_dim: usize,
    /// `(video, reason)` of every listed video not used.
    pub skipped: Vec<(String, String)>,
}

/// The id of a video file: its name without extension.
pub fn video_id(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Lists `videos` (a folder or a list file, as `cace extract`) and pairs each with its audio row
/// in `features`. A video without a row, or whose row is a test row, is skipped with a reason.
pub fn load(videos: &Path, features: &Path) -> Result<Videos> {
    let list = list_videos(videos)?;
    let ave = AveDir::open(features)
        .with_context(|| format!("reading the audio features in {}", features.display()))?;
    let rows = audio_rows(&ave, features)?;
    let mut test_rows = std::collections::HashSet::new();
    if rows.excludes_test {
        test_rows.extend(ave.order(Split::Test).unwrap_or_default());
    }
    let mut out = Videos {
        videos: Vec::new(),
        audio_dim: ave.audio_dim(),
        skipped: Vec::new(),
    };
    for path in list {
        let id = video_id(&path);
        match rows.by_id.get(&id) {
            None => out
                .skipped
                .push((id, "no audio row in the features".into())),
            Some(r) if test_rows.contains(r) => out
                .skipped
                .push((id, "a test video (test_order.h5)".into())),
            Some(&r) => {
                let mut audio = Vec::with_capacity(T * ave.audio_dim());
                ave.read_audio(&[r], &mut audio)?;
                out.videos.push(Video { id, path, audio });
            }
        }
    }
    if out.videos.is_empty() {
        bail!(
            "none of the {} videos listed by {} has an audio row in {} (ids are file names \
             without extension)",
            out.skipped.len(),
            videos.display(),
            features.display()
        );
    }
    Ok(out)
}

struct AudioRows {
    by_id: HashMap<String, usize>,
    excludes_test: bool,
}

/// The row of each video id: from `index.tsv` when present, else from `Annotations.txt`.
fn audio_rows(ave: &AveDir, dir: &Path) -> Result<AudioRows> {
    let mut by_id = HashMap::new();
    if dir.join("index.tsv").exists() {
        for e in read_index(dir)? {
            if let (Some(row), Some((0, _))) = (e.row, e.window) {
                by_id.entry(video_id(Path::new(&e.video))).or_insert(row);
            }
        }
        return Ok(AudioRows {
            by_id,
            excludes_test: false,
        });
    }
    let path = dir.join(ANNOTATIONS_FILE);
    if !path.exists() {
        bail!(
            "{}: neither index.tsv (a cace extract folder) nor {ANNOTATIONS_FILE} to match videos \
             to audio rows",
            dir.display()
        );
    }
    let anns = load_annotations(&path)?;
    if anns.len() != ave.num_rows() {
        bail!(
            "{}: {} lines but the audio features have {} rows",
            path.display(),
            anns.len(),
            ave.num_rows()
        );
    }
    for (row, a) in anns.iter().enumerate() {
        by_id.entry(a.youtube_id.clone()).or_insert(row);
    }
    Ok(AudioRows {
        by_id,
        excludes_test: true,
    })
}
