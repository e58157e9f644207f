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

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::{WINDOW, WindowFeatures, encode_clip, encoder_shapes};
use crate::data::ave::{AUDIO_FILE, FEATURE_KEY, ORDER_KEY, Split, VISUAL_FILE};
use crate::data::h5;
use crate::encoders::{AudioEncoder, FrameEncoder};

/// File extensions taken from a `--videos DIR` (lower case).
pub const VIDEO_EXTENSIONS: [&str; 14] = [
    "mp4", "m4v", "mkv", "webm", "avi", "mov", "mpg", "mpeg", "flv", "wmv", "ogv", "3gp", "ts",
    "mts",
];
pub const INDEX_FILE: &str = "index.tsv";
pub const MANIFEST_FILE: &str = "extract.json";
const STAGING_DIR: &str = ".staging";
const RUN_FILE: &str = "run.json";
const FEAT_MAGIC: &[u8; 8] = b"CACEFEAT";

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

/// `.staging/run.json`: the settings a restart must share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunSettings {
    encoders: String,
    shard: Option<Shard>,
    /// Set once encoders were loaded.
    encoder: Option<EncoderSettings>,
}

/// Trailer of a staged `.feat` file (the f32 payload comes first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Staged {
    video: String,
    windows: usize,
    /// Content seconds per window.
    content: Vec<usize>,
    /// f32 values per window: visual (`10·prod(shape)`) and audio (`10·dim`).
    visual_len: usize,
    audio_len: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Failed {
    video: String,
    error: String,
}

enum Status {
    Ok(Staged),
    Failed(String),
}

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

fn video_key(video: &str) -> String {
    format!("{:016x}", fnv1a(video.as_bytes()))
}

fn is_video_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for e in entries {
        let path = e
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_video_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// The video list of `--videos` (a folder or a list file), see the module doc.
pub fn list_videos(source: &Path) -> Result<Vec<PathBuf>> {
    let list = if source.is_dir() {
        let mut files = Vec::new();
        walk(source, &mut files)?;
        files.sort();
        if files.is_empty() {
            bail!(
                "{}: no video files (extensions {})",
                source.display(),
                VIDEO_EXTENSIONS.join(", ")
            );
        }
        files
    } else if source.is_file() {
        let text = fs::read_to_string(source)
            .with_context(|| format!("reading the video list {}", source.display()))?;
        let base = source.parent().unwrap_or(Path::new("."));
        let mut seen = HashSet::new();
        let mut files = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let p = Path::new(line);
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            };
            if !seen.insert(p.clone()) {
                bail!(
                    "{}: line {}: {} is listed twice",
                    source.display(),
                    i + 1,
                    p.display()
                );
            }
            files.push(p);
        }
        if files.is_empty() {
            bail!("{}: the video list is empty", source.display());
        }
        files
    } else {
        bail!("{}: no such folder or video list", source.display());
    };
    Ok(list)
}

/// The videos of a shard: `(list position, path)`.
pub fn select(list: &[PathBuf], shard: Option<Shard>) -> Vec<(usize, PathBuf)> {
    list.iter()
        .enumerate()
        .filter(|(p, _)| shard.is_none_or(|s| p % s.count == s.index))
        .map(|(p, v)| (p, v.clone()))
        .collect()
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsutil::write_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Staged files' temporary name (`.NAME.tmp`: cleaned up on resume).
fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{}: not a valid file", path.display()))
}

// ------------------------------------------------------------------------------------------------
// Staging

struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn feat(&self, video: &str) -> PathBuf {
        self.dir.join(format!("{}.feat", video_key(video)))
    }
    fn failed(&self, video: &str) -> PathBuf {
        self.dir.join(format!("{}.failed", video_key(video)))
    }
    fn run_file(&self) -> PathBuf {
        self.dir.join(RUN_FILE)
    }

    /// Removes temporary files a killed run left behind.
    fn clean(&self) -> Result<()> {
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
    fn status(&self, video: &str) -> Result<Option<Status>> {
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
fn read_window(f: &mut fs::File, staged: &Staged, w: usize) -> Result<(Vec<f32>, Vec<f32>)> {
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
struct StageWriter {
    tmp: PathBuf,
    dest: PathBuf,
    file: std::io::BufWriter<fs::File>,
    content: Vec<usize>,
    visual_len: usize,
    audio_len: usize,
}

impl StageWriter {
    fn create(dest: PathBuf, visual_len: usize, audio_len: usize) -> Result<Self> {
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

    fn push(&mut self, w: &WindowFeatures) -> Result<()> {
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

    fn finish(mut self, video: &str) -> Result<()> {
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
}

// ------------------------------------------------------------------------------------------------
// HDF5 assembly

/// Writes `visual_feature.h5` and `audio_feature.h5` row by row (float32, contiguous) under
/// temporary names; `finish` moves them into place.
struct FeatureWriter {
    visual: h5::RowWriter<f32>,
    audio: h5::RowWriter<f32>,
}

impl FeatureWriter {
    fn create(dir: &Path, rows: usize, visual_shape: &[usize], audio_dim: usize) -> Result<Self> {
        let mut vshape = vec![rows, WINDOW];
        vshape.extend_from_slice(visual_shape);
        Ok(Self {
            visual: h5::RowWriter::create(&dir.join(VISUAL_FILE), FEATURE_KEY, &vshape)?,
            audio: h5::RowWriter::create(
                &dir.join(AUDIO_FILE),
                FEATURE_KEY,
                &[rows, WINDOW, audio_dim],
            )?,
        })
    }

    fn push(&mut self, visual: &[f32], audio: &[f32]) -> Result<()> {
        self.visual.write_rows(visual)?;
        self.audio.write_rows(audio)?;
        Ok(())
    }

    fn finish(self) -> Result<()> {
        self.visual.finish()?;
        self.audio.finish()?;
        Ok(())
    }
}

fn write_order(dir: &Path, rows: usize) -> Result<()> {
    let order: Vec<i64> = (0..rows as i64).collect();
    h5::write(
        &dir.join(Split::Test.order_file()),
        ORDER_KEY,
        &[rows],
        &order,
    )?;
    Ok(())
}

/// One line of `index.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub row: Option<usize>,
    pub list_index: usize,
    pub video: String,
    /// `(start_s, content_s)` of the window; `None` for a failed video.
    pub window: Option<(usize, usize)>,
    pub error: Option<String>,
}

const INDEX_HEADER: &str = "row\tlist_index\tvideo\tstart_s\tcontent_s\tpadded_s\tstatus\terror";

fn clean_field(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

fn index_text(entries: &[IndexEntry]) -> String {
    let mut out = String::from(INDEX_HEADER);
    out.push('\n');
    for e in entries {
        let row = e.row.map_or("-".to_string(), |r| r.to_string());
        let (start, content, padded) = match e.window {
            Some((s, c)) => (s.to_string(), c.to_string(), (WINDOW - c).to_string()),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let status = if e.error.is_some() { "failed" } else { "ok" };
        let error = e.error.as_deref().map(clean_field).unwrap_or_default();
        out.push_str(&format!(
            "{row}\t{}\t{}\t{start}\t{content}\t{padded}\t{status}\t{error}\n",
            e.list_index,
            clean_field(&e.video)
        ));
    }
    out
}

/// Reads the `index.tsv` of an extracted directory.
pub fn read_index(dir: &Path) -> Result<Vec<IndexEntry>> {
    let path = dir.join(INDEX_FILE);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some(INDEX_HEADER) {
        bail!("{}: not an index written by cace extract", path.display());
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let bad = || anyhow!("{}: line {}: malformed", path.display(), i + 2);
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 8 {
                return Err(bad());
            }
            let num = |s: &str| s.parse::<usize>().map_err(|_| bad());
            let failed = f[6] == "failed";
            Ok(IndexEntry {
                row: if failed { None } else { Some(num(f[0])?) },
                list_index: num(f[1])?,
                video: f[2].to_string(),
                window: if failed {
                    None
                } else {
                    Some((num(f[3])?, num(f[4])?))
                },
                error: failed.then(|| f[7].to_string()),
            })
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Extraction

/// Loads the encoders (only called when some video still needs extracting).
pub type LoadEncoders<'a> =
    dyn FnMut() -> Result<(Box<dyn FrameEncoder>, Box<dyn AudioEncoder>)> + 'a;

/// Refuses to write into a directory holding something else.
fn check_out_dir(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("{}: exists and is not a folder", out.display());
    }
    if out.join(VISUAL_FILE).exists()
        && !out.join(MANIFEST_FILE).exists()
        && !out.join(STAGING_DIR).exists()
    {
        bail!(
            "{}: holds an AVE dataset not written by cace extract; choose another --out",
            out.display()
        );
    }
    Ok(())
}

/// Runs (or resumes) an extraction, see the module doc. Videos that fail are reported in the
/// result and `index.tsv`, never fatal; it is an error only when no video at all succeeds.
pub fn extract_dataset(opts: &ExtractOptions, load: &mut LoadEncoders) -> Result<ExtractReport> {
    let list = list_videos(&opts.videos)?;
    let selected = select(&list, opts.shard);
    if selected.is_empty() {
        bail!(
            "shard {} of {} videos is empty",
            opts.shard.map(|s| s.to_string()).unwrap_or_default(),
            list.len()
        );
    }
    let names: Vec<String> = selected.iter().map(|(_, p)| path_str(p)).collect();
    let fp = fingerprint(names.iter().map(String::as_str));
    check_out_dir(&opts.out)?;
    if let Some(done) = completed(opts, &fp)? {
        return Ok(done);
    }

    let staging = Staging {
        dir: opts.out.join(STAGING_DIR),
    };
    let mut run = open_run(opts, &staging)?;
    let mut pending = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if staging.status(name)?.is_none() {
            pending.push(i);
        }
    }
    let mut report = ExtractReport {
        out: opts.out.clone(),
        videos: selected.len(),
        resumed: selected.len() - pending.len(),
        ..Default::default()
    };
    if !pending.is_empty() {
        let (frames, audio) = load()?;
        let settings = EncoderSettings::of(frames.as_ref(), audio.as_ref())?;
        match &run.encoder {
            None => {
                run.encoder = Some(settings.clone());
                write_file_atomic(&staging.run_file(), &serde_json::to_vec_pretty(&run)?)?;
            }
            Some(staged) if *staged != settings => bail!(
                "{}: the staged videos were extracted with {staged:?}, the encoders now give {settings:?}; rerun with the same encoders or choose another --out",
                opts.out.display()
            ),
            Some(_) => {}
        }
        let jobs: Vec<(&str, &Path)> = pending
            .iter()
            .map(|&i| (names[i].as_str(), selected[i].1.as_path()))
            .collect();
        report.extracted_now = stage_videos(
            &jobs,
            &staging,
            &settings,
            frames.as_ref(),
            audio.as_ref(),
            opts.progress,
        )?;
    }
    let Some(settings) = run.encoder else {
        bail!(
            "{}: staging has no encoder settings; delete the folder and rerun",
            opts.out.display()
        );
    };
    assemble(opts, &selected, &names, &staging, &settings, &mut report)?;
    let manifest = Manifest {
        encoders: opts.encoders.clone(),
        encoder: settings,
        videos_source: path_str(&opts.videos),
        list_len: list.len(),
        shard: opts.shard,
        videos: selected.len(),
        rows: report.rows,
        failed: report.failed.len(),
        videos_fingerprint: fp,
    };
    write_file_atomic(
        &opts.out.join(MANIFEST_FILE),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    fs::remove_dir_all(&staging.dir)
        .with_context(|| format!("removing {}", staging.dir.display()))?;
    Ok(report)
}

/// The report of an already complete `opts.out` with the same videos and settings, or an error
/// if it holds another extraction; `None` if it is not complete.
fn completed(opts: &ExtractOptions, fp: &str) -> Result<Option<ExtractReport>> {
    let path = opts.out.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let m: Manifest = read_json(&path)?;
    if m.videos_fingerprint != fp || m.encoders != opts.encoders || m.shard != opts.shard {
        bail!(
            "{}: already holds a finished extraction of other videos or encoders ({}, {} videos); choose another --out",
            opts.out.display(),
            m.encoders,
            m.videos
        );
    }
    Ok(Some(ExtractReport {
        out: opts.out.clone(),
        videos: m.videos,
        rows: m.rows,
        failed: read_index(&opts.out)?
            .into_iter()
            .filter_map(|e| e.error.map(|err| (e.video, err)))
            .collect(),
        already_complete: true,
        ..Default::default()
    }))
}

/// Creates the staging folder, or checks that an interrupted run staged there used the same
/// settings; removes temporary files a killed run left.
fn open_run(opts: &ExtractOptions, staging: &Staging) -> Result<RunSettings> {
    fs::create_dir_all(&staging.dir)
        .with_context(|| format!("creating {}", staging.dir.display()))?;
    staging.clean()?;
    let path = staging.run_file();
    if path.exists() {
        let r: RunSettings = read_json(&path)?;
        if r.encoders != opts.encoders || r.shard != opts.shard {
            bail!(
                "{}: an interrupted run with --encoders {}{} is staged here; rerun with the same settings or choose another --out",
                opts.out.display(),
                r.encoders,
                r.shard.map(|s| format!(" --shard {s}")).unwrap_or_default()
            );
        }
        return Ok(r);
    }
    let r = RunSettings {
        encoders: opts.encoders.clone(),
        shard: opts.shard,
        encoder: None,
    };
    write_file_atomic(&path, &serde_json::to_vec_pretty(&r)?)?;
    Ok(r)
}

/// Decodes and encodes `jobs` (`(name, path)`) into the staging folder, one atomic file each;
/// a video that fails gets a `.failed` note. Returns how many were handled.
fn stage_videos(
    jobs: &[(&str, &Path)],
    staging: &Staging,
    settings: &EncoderSettings,
    frames: &dyn FrameEncoder,
    audio: &dyn AudioEncoder,
    progress: bool,
) -> Result<usize> {
    let bar = if progress {
        ProgressBar::new(jobs.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} videos  {elapsed}<{eta}  {msg}")
            .unwrap(),
    );
    let visual_len: usize = settings.visual_shape.iter().product();
    for &(name, path) in jobs {
        bar.set_message(
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let mut writer = StageWriter::create(
            staging.feat(name),
            WINDOW * visual_len,
            WINDOW * settings.audio_dim,
        )?;
        match encode_clip(path, frames, audio, &mut |w| writer.push(&w)) {
            Ok(summary) => {
                if let Some(t) = summary.frames_end_early {
                    bar.suspend(|| {
                        eprintln!(
                            "warning: {}: the video frames end at {t:.2} s although the file \
                             declares {:.2} s; the last frame is repeated after that",
                            path.display(),
                            summary.info.duration
                        )
                    });
                }
                writer.finish(name)?
            }
            Err(e) => {
                let _ = fs::remove_file(&writer.tmp);
                let error = format!("{e:#}");
                bar.suspend(|| eprintln!("skipped: {error}"));
                let note = Failed {
                    video: name.to_string(),
                    error,
                };
                write_file_atomic(&staging.failed(name), &serde_json::to_vec(&note)?)?;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(jobs.len())
}

/// Writes `index.tsv` and the HDF5 files from the staging folder, in list order.
fn assemble(
    opts: &ExtractOptions,
    selected: &[(usize, PathBuf)],
    names: &[String],
    staging: &Staging,
    settings: &EncoderSettings,
    report: &mut ExtractReport,
) -> Result<()> {
    let out = &opts.out;
    let mut entries = Vec::new();
    let mut ok: Vec<(&str, Staged)> = Vec::new();
    let mut rows = 0;
    for ((list_index, _), name) in selected.iter().zip(names) {
        match staging.status(name)?.expect("every video is staged") {
            Status::Ok(s) => {
                for (w, &c) in s.content.iter().enumerate() {
                    entries.push(IndexEntry {
                        row: Some(rows),
                        list_index: *list_index,
                        video: name.clone(),
                        window: Some((w * WINDOW, c)),
                        error: None,
                    });
                    rows += 1;
                }
                ok.push((name, s));
            }
            Status::Failed(error) => {
                report.failed.push((name.clone(), error.clone()));
                entries.push(IndexEntry {
                    row: None,
                    list_index: *list_index,
                    video: name.clone(),
                    window: None,
                    error: Some(error),
                });
            }
        }
    }
    report.rows = rows;
    write_file_atomic(&out.join(INDEX_FILE), index_text(&entries).as_bytes())?;
    if rows == 0 {
        bail!(
            "no video of {} could be extracted (see {}); first error: {}",
            opts.videos.display(),
            out.join(INDEX_FILE).display(),
            report.failed.first().map(|f| f.1.as_str()).unwrap_or("-")
        );
    }
    let mut writer = FeatureWriter::create(out, rows, &settings.visual_shape, settings.audio_dim)?;
    for (name, staged) in &ok {
        let path = staging.feat(name);
        let mut f = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        for w in 0..staged.windows {
            let (v, a) = read_window(&mut f, staged, w)
                .with_context(|| format!("reading {}", path.display()))?;
            writer.push(&v, &a)?;
        }
    }
    writer.finish()?;
    write_order(out, rows)
}

// ------------------------------------------------------------------------------------------------
// Merging shards

/// Combines complete shard directories (`--shard i/n` for every `i` of one `n`) into `out`,
/// rows in full-list order: the same files an unsharded run writes.
pub fn merge_shards(shards: &[PathBuf], out: &Path) -> Result<ExtractReport> {
    if shards.is_empty() {
        bail!("--merge needs the shard directories");
    }
    let mut manifests = Vec::new();
    for dir in shards {
        let path = dir.join(MANIFEST_FILE);
        if !path.exists() {
            bail!(
                "{}: not a complete cace extract directory (no {MANIFEST_FILE}; finish that shard first)",
                dir.display()
            );
        }
        manifests.push(read_json::<Manifest>(&path)?);
    }
    let first = &manifests[0];
    let Some(count) = first.shard.map(|s| s.count) else {
        bail!("{}: was not extracted with --shard", shards[0].display());
    };
    let mut seen = BTreeMap::new();
    for (dir, m) in shards.iter().zip(&manifests) {
        let same = m.encoders == first.encoders
            && m.encoder == first.encoder
            && m.list_len == first.list_len
            && m.videos_source == first.videos_source;
        if !same {
            bail!(
                "{}: extracted from other videos or with other encoders than {}",
                dir.display(),
                shards[0].display()
            );
        }
        let Some(s) = m.shard.filter(|s| s.count == count) else {
            bail!(
                "{}: is not one of the {count} shards of {}",
                dir.display(),
                shards[0].display()
            );
        };
        if let Some(other) = seen.insert(s.index, dir) {
            bail!(
                "{} and {} are both shard {s}",
                other.display(),
                dir.display()
            );
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|i| !seen.contains_key(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        bail!("shards {} are missing", missing.join(", "));
    }
    check_out_dir(out)?;
    if out.join(MANIFEST_FILE).exists() {
        bail!(
            "{}: already holds an extraction; choose another --out",
            out.display()
        );
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    // (list_index, shard, entry) in list order; windows of one video stay in order.
    let mut all = Vec::new();
    for (k, dir) in shards.iter().enumerate() {
        for e in read_index(dir)? {
            all.push((e.list_index, k, e));
        }
    }
    all.sort_by_key(|(li, _, e)| (*li, e.window.map(|w| w.0)));
    let mut entries = Vec::with_capacity(all.len());
    let mut sources = Vec::new();
    let mut report = ExtractReport {
        out: out.to_path_buf(),
        ..Default::default()
    };
    let mut videos = Vec::new();
    for (_, k, e) in &all {
        if videos.last() != Some(&e.video) {
            videos.push(e.video.clone());
        }
        let mut e = e.clone();
        if let Some(r) = e.row {
            sources.push((*k, r));
            e.row = Some(sources.len() - 1);
        } else {
            report
                .failed
                .push((e.video.clone(), e.error.clone().unwrap_or_default()));
        }
        entries.push(e);
    }
    let rows = sources.len();
    report.rows = rows;
    report.videos = videos.len();
    if videos.len() != first.list_len {
        bail!(
            "the shards hold {} videos but the list had {}",
            videos.len(),
            first.list_len
        );
    }
    write_file_atomic(&out.join(INDEX_FILE), index_text(&entries).as_bytes())?;
    if rows == 0 {
        bail!("no video in the shards was extracted");
    }
    let open = |dir: &Path, file: &str| -> Result<h5::Dataset> {
        let ds = h5::Dataset::open(&dir.join(file), FEATURE_KEY, "shard features")?;
        if ds.stored != h5::StoredType::Float(4) {
            bail!(
                "{}: features stored as {}, expected float32",
                ds.path.display(),
                ds.stored
            );
        }
        Ok(ds)
    };
    let files: Vec<_> = shards
        .iter()
        .map(|d| Ok((open(d, VISUAL_FILE)?, open(d, AUDIO_FILE)?)))
        .collect::<Result<_>>()?;
    let mut writer = FeatureWriter::create(
        out,
        rows,
        &first.encoder.visual_shape,
        first.encoder.audio_dim,
    )?;
    for (k, r) in sources {
        let (vds, ads) = &files[k];
        writer.push(&vds.read_rows::<f32>(r, 1)?, &ads.read_rows::<f32>(r, 1)?)?;
    }
    writer.finish()?;
    write_order(out, rows)?;
    let manifest = Manifest {
        shard: None,
        videos: videos.len(),
        rows,
        failed: report.failed.len(),
        videos_fingerprint: fingerprint(videos.iter().map(String::as_str)),
        ..first.clone()
    };
    write_file_atomic(
        &out.join(MANIFEST_FILE),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(report)
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

    #[test]
    fn shards_partition_the_list() {
        let list: Vec<PathBuf> = (0..7).map(|i| PathBuf::from(format!("v{i}.mp4"))).collect();
        let mut all: Vec<usize> = (0..3)
            .flat_map(|i| select(&list, Some(Shard { index: i, count: 3 })))
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            select(&list, Some(Shard { index: 1, count: 3 }))
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>(),
            vec![1, 4]
        );
        all.sort();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn index_round_trip() {
        let entries = vec![
            IndexEntry {
                row: Some(0),
                list_index: 0,
                video: "a.mp4".into(),
                window: Some((0, 10)),
                error: None,
            },
            IndexEntry {
                row: Some(1),
                list_index: 0,
                video: "a.mp4".into(),
                window: Some((10, 3)),
                error: None,
            },
            IndexEntry {
                row: None,
                list_index: 1,
                video: "b.mp4".into(),
                window: None,
                error: Some("bad\tfile".into()),
            },
        ];
        let dir = std::env::temp_dir().join(format!("cace-index-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(INDEX_FILE), index_text(&entries)).unwrap();
        let back = read_index(&dir).unwrap();
        assert_eq!(back[..2], entries[..2]);
        assert_eq!(back[2].error.as_deref(), Some("bad file"));
        assert!(index_text(&entries).contains("1\t0\ta.mp4\t10\t3\t7\tok\t\n"));
        fs::remove_dir_all(dir).unwrap();
    }
}
