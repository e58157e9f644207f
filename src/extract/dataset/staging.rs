//! The staging folder of a resumable run: per video, its features in one `.feat` file (f32
//! payload, then a JSON trailer) written under a temporary name and renamed when complete, or
//! a `.failed` note; `run.json` holds the settings a restart must share.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::{EncoderSettings, Shard, fnv1a, read_json};
use crate::extract::WindowFeatures;

const RUN_FILE: &str = "run.json";
const FEAT_MAGIC: &[u8; 8] = b"CACEFEAT";

/// `.staging/run.json`: the settings a restart must share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RunSettings {
    pub(super) encoders: String,
    pub(super) shard: Option<Shard>,
    /// Set once encoders were loaded.
    pub(super) encoder: Option<EncoderSettings>,
}

/// Trailer of a staged `.feat` file (the f32 payload comes first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Staged {
    pub(super) video: String,
    pub(super) windows: usize,
    /// Content seconds per window.
    pub(super) content: Vec<usize>,
    /// f32 values per window: visual (`10·prod(shape)`) and audio (`10·dim`).
    pub(super) visual_len: usize,
    pub(super) audio_len: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Failed {
    pub(super) video: String,
    pub(super) error: String,
}

pub(super) enum Status {
    Ok(Staged),
    Failed(String),
}

fn video_key(video: &str) -> String {
    format!("{:016x}", fnv1a(video.as_bytes()))
}

/// Staged files' temporary name (`.NAME.tmp`: cleaned up on resume).
fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// The staging folder `OUT/.staging`: one `.feat` or `.failed` file per handled video, and
/// `run.json`.
pub(super) struct Staging {
    pub(super) dir: PathBuf,
}

impl Staging {
    pub(super) fn feat(&self, video: &str) -> PathBuf {
        self.dir.join(format!("{}.feat", video_key(video)))
    }
    pub(super) fn failed(&self, video: &str) -> PathBuf {
        self.dir.join(format!("{}.failed", video_key(video)))
    }
    pub(super) fn run_file(&self) -> PathBuf {
        self.dir.join(RUN_FILE)
    }

    /// Removes temporary files a killed run left behind.
    pub(super) fn clean(&self) -> Result<()> {
        for e in
            fs::read_dir(&self.dir).with_context(|| format!("listing {}", self.dir.display()))?
        {
            let p = e?.path();
            if p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".tmp"))
            {
                fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        Ok(())
    }

    /// The staged result of `video`, if any.
    pub(super) fn status(&self, video: &str) -> Result<Option<Status>> {
        let feat = self.feat(video);
        if feat.exists() {
            let staged = read_trailer(&feat)?;
            if staged.video != video {
                bail!(
                    "{}: holds {} instead of {video} (hash collision); delete the output folder",
                    feat.display(),
                    staged.video
                );
            }
            return Ok(Some(Status::Ok(staged)));
        }
        let failed = self.failed(video);
        if failed.exists() {
            let f: Failed = read_json(&failed)?;
            return Ok(Some(Status::Failed(f.error)));
        }
        Ok(None)
    }
}

fn read_trailer(path: &Path) -> Result<Staged> {
    let bad = || {
        anyhow!(
            "{}: not a complete staged feature file; delete it",
            path.display()
        )
    };
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    if len < 12 {
        return Err(bad());
    }
    let mut tail = [0u8; 12];
    f.seek(SeekFrom::End(-12))?;
    f.read_exact(&mut tail)?;
    if &tail[4..] != FEAT_MAGIC {
        return Err(bad());
    }
    let n = u32::from_le_bytes(tail[..4].try_into().unwrap()) as u64;
    if n + 12 > len {
        return Err(bad());
    }
    let mut json = vec![0u8; n as usize];
    f.seek(SeekFrom::End(-12 - n as i64))?;
    f.read_exact(&mut json)?;
    let staged: Staged = serde_json::from_slice(&json).map_err(|_| bad())?;
    let payload = (staged.windows * (staged.visual_len + staged.audio_len) * 4) as u64;
    if payload + n + 12 != len || staged.content.len() != staged.windows {
        return Err(bad());
    }
    Ok(staged)
}

/// Reads window `w` of a staged file: `(visual, audio)`.
pub(super) fn read_window(
    f: &mut fs::File,
    staged: &Staged,
    w: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let per = staged.visual_len + staged.audio_len;
    f.seek(SeekFrom::Start((w * per * 4) as u64))?;
    let mut bytes = vec![0u8; per * 4];
    f.read_exact(&mut bytes)?;
    let vals: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (v, a) = vals.split_at(staged.visual_len);
    Ok((v.to_vec(), a.to_vec()))
}

/// Streams a video's windows into `<key>.feat.tmp`; `finish` appends the trailer and renames.
pub(super) struct StageWriter {
    tmp: PathBuf,
    dest: PathBuf,
    file: std::io::BufWriter<fs::File>,
    content: Vec<usize>,
    visual_len: usize,
    audio_len: usize,
}

impl StageWriter {
    pub(super) fn create(dest: PathBuf, visual_len: usize, audio_len: usize) -> Result<Self> {
        let tmp = tmp_name(&dest);
        let file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self {
            tmp,
            dest,
            file: std::io::BufWriter::new(file),
            content: Vec::new(),
            visual_len,
            audio_len,
        })
    }

    pub(super) fn push(&mut self, w: &WindowFeatures) -> Result<()> {
        let mut bytes = Vec::with_capacity((w.visual.len() + w.audio.len()) * 4);
        for x in w.visual.iter().chain(&w.audio) {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        self.file
            .write_all(&bytes)
            .with_context(|| format!("writing {}", self.tmp.display()))?;
        self.content.push(w.content_seconds);
        Ok(())
    }

    /// Appends the trailer and moves the file into place: the video is staged.
    pub(super) fn finish(mut self, video: &str) -> Result<()> {
        let staged = Staged {
            video: video.to_string(),
            windows: self.content.len(),
            content: std::mem::take(&mut self.content),
            visual_len: self.visual_len,
            audio_len: self.audio_len,
        };
        let json = serde_json::to_vec(&staged)?;
        self.file.write_all(&json)?;
        self.file.write_all(&(json.len() as u32).to_le_bytes())?;
        self.file.write_all(FEAT_MAGIC)?;
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
            .with_context(|| format!("writing {}", self.tmp.display()))?;
        crate::fsutil::rename_durable(&self.tmp, &self.dest)
            .with_context(|| format!("renaming {} into place", self.tmp.display()))
    }

    /// Removes the temporary file of a video that failed.
    pub(super) fn discard(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}
