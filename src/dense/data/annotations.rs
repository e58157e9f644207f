//! `unav100_annotations.json`: `{"database": {video_id: {"subset", "duration", "fps"?,
//! "annotations": [{"segment": [s, e], "label", "label_id"}]}}}`.
//!
//! The official `UnAV100Dataset._load_json_db` builds the label dictionary `label → label_id`
//! from the annotations of *every* video (all subsets, file order, a later entry overwriting an
//! earlier one), then keeps the videos whose `subset.lower()` is one of the requested splits, in
//! file order. A video's fps is `default_fps` when that is set (25 in the official config, so a
//! file's `fps` is ignored), else its `fps` (an assertion when absent); its duration is
//! `duration`, or 1e8 when absent. Segments are kept in seconds as float32, labels as
//! `label_dict[label]` (int64); a video without annotations has no segments (`None`).
//!
//! Ours follows that, in file order (the database is read as an ordered list, not a hash map),
//! and turns what the official code would silently accept or crash on into named errors: a label
//! given two ids or an id given two labels, an id outside `0..num_classes`, a segment with
//! `end < start`, a negative start, an end past the duration, non-finite numbers, a duplicated
//! video id, and missing or mistyped fields.
//! The requested split names are lower-cased too (the official code lower-cases only the
//! file's `subset`, so a split asked for as `Train` would match nothing there).

use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::error::DenseDataError;

/// Duration the official loader uses for a video without `duration`.
pub const MISSING_DURATION: f64 = 1e8;

/// One video of the database, as the official `_load_json_db` keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoEntry {
    pub id: String,
    /// `subset` lower-cased (the official code compares `subset.lower()`).
    pub subset: String,
    /// The fps the loader uses (`default_fps` if set, else the file's `fps`).
    pub fps: f64,
    /// Seconds; [`MISSING_DURATION`] when the file has none.
    pub duration: f64,
    /// `[start, end]` in seconds, float32 as in the official `np.float32` array; empty when the
    /// video has no annotations (official: `None`).
    pub segments: Vec<[f32; 2]>,
    /// `label_dict[label]` for each segment.
    pub labels: Vec<i64>,
}

/// The parsed annotation file: label dictionary and the videos of the requested splits.
#[derive(Debug, Clone)]
pub struct Annotations {
    pub path: PathBuf,
    /// `(label, label_id)` in the order labels first appear in the file.
    pub label_dict: Vec<(String, i64)>,
    pub videos: Vec<VideoEntry>,
}

/// The database as an ordered list (JSON object order, like Python's `dict`).
struct OrderedDb(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for OrderedDb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedDb;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of videos")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<OrderedDb, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = m.next_entry::<String, Value>()? {
                    out.push(kv);
                }
                Ok(OrderedDb(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(serde::Deserialize)]
struct TopLevel {
    database: OrderedDb,
}

/// Reads the file and keeps the videos of `split` (lower-case names, e.g. `["train"]`).
pub fn load(
    path: &Path,
    split: &[String],
    default_fps: Option<f64>,
    num_classes: usize,
) -> Result<Annotations, DenseDataError> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DenseDataError::Missing {
            path: path.to_path_buf(),
            video: None,
            what: "the UnAV annotation file".into(),
        },
        _ => DenseDataError::Io {
            path: path.to_path_buf(),
            what: "reading the annotation file",
            source: e,
        },
    })?;
    let top: TopLevel = serde_json::from_str(&text).map_err(|e| DenseDataError::Json {
        path: path.to_path_buf(),
        msg: format!("not the UnAV layout ({{\"database\": {{video_id: ...}}}}): {e}"),
    })?;
    let db = top.database.0;
    check_unique_ids(path, &db)?;
    let label_dict = label_dict(path, &db, num_classes)?;
    let mut videos = Vec::new();
    for (id, v) in &db {
        let subset = str_field(path, id, v, "subset")?.to_lowercase();
        if split.iter().any(|s| *s == subset) {
            videos.push(video_entry(path, id, v, subset, default_fps, &label_dict)?);
        }
    }
    if videos.is_empty() {
        return Err(DenseDataError::EmptySplit {
            path: path.to_path_buf(),
            split: split.to_vec(),
        });
    }
    Ok(Annotations {
        path: path.to_path_buf(),
        label_dict,
        videos,
    })
}

fn check_unique_ids(path: &Path, db: &[(String, Value)]) -> Result<(), DenseDataError> {
    let mut seen = std::collections::HashSet::new();
    for (id, _) in db {
        if !seen.insert(id.as_str()) {
            return Err(DenseDataError::Video {
                path: path.to_path_buf(),
                video: id.clone(),
                msg: "video id appears twice in the database".into(),
            });
        }
    }
    Ok(())
}

/// The videos' `annotations` arrays (absent = empty).
fn acts<'a>(path: &Path, id: &str, v: &'a Value) -> Result<&'a [Value], DenseDataError> {
    match v.get("annotations") {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(video_err(path, id, "\"annotations\" is not an array")),
    }
}

/// `label → label_id` over all videos (official: every subset, later entries overwrite).
fn label_dict(
    path: &Path,
    db: &[(String, Value)],
    num_classes: usize,
) -> Result<Vec<(String, i64)>, DenseDataError> {
    let mut dict: Vec<(String, i64)> = Vec::new();
    for (id, v) in db {
        for (i, act) in acts(path, id, v)?.iter().enumerate() {
            let label = act.get("label").and_then(Value::as_str);
            let label_id = act.get("label_id").and_then(Value::as_i64);
            let (Some(label), Some(label_id)) = (label, label_id) else {
                return Err(label_err(
                    path,
                    id,
                    i,
                    "needs a string \"label\" and an integer \"label_id\"".into(),
                ));
            };
            if label_id < 0 || label_id as u64 >= num_classes as u64 {
                return Err(label_err(
                    path,
                    id,
                    i,
                    format!("label_id {label_id} of {label:?} outside 0..{num_classes}"),
                ));
            }
            if let Some((_, old)) = dict.iter().find(|(l, _)| l == label) {
                if *old != label_id {
                    return Err(label_err(
                        path,
                        id,
                        i,
                        format!("label {label:?} has id {label_id} here but {old} before"),
                    ));
                }
            } else if let Some((other, _)) = dict.iter().find(|(_, x)| *x == label_id) {
                return Err(label_err(
                    path,
                    id,
                    i,
                    format!("label_id {label_id} names both {other:?} and {label:?}"),
                ));
            } else {
                dict.push((label.to_string(), label_id));
            }
        }
    }
    Ok(dict)
}

fn video_entry(
    path: &Path,
    id: &str,
    v: &Value,
    subset: String,
    default_fps: Option<f64>,
    dict: &[(String, i64)],
) -> Result<VideoEntry, DenseDataError> {
    let fps = match default_fps {
        Some(f) => f,
        None => number(path, id, v, "fps")?.ok_or_else(|| {
            video_err(
                path,
                id,
                "unknown video fps (no \"fps\" and no default_fps)",
            )
        })?,
    };
    if !(fps.is_finite() && fps > 0.0) {
        return Err(video_err(
            path,
            id,
            &format!("fps {fps} is not a positive number"),
        ));
    }
    let duration = number(path, id, v, "duration")?.unwrap_or(MISSING_DURATION);
    if !(duration.is_finite() && duration > 0.0) {
        return Err(video_err(
            path,
            id,
            &format!("duration {duration} is not a positive number"),
        ));
    }
    let mut segments = Vec::new();
    let mut labels = Vec::new();
    for (i, act) in acts(path, id, v)?.iter().enumerate() {
        segments.push(segment(path, id, i, act, duration)?);
        let label = act["label"].as_str().unwrap_or_default();
        let found = dict.iter().find(|(l, _)| l == label);
        let (_, label_id) =
            found.ok_or_else(|| label_err(path, id, i, format!("unknown label {label:?}")))?;
        labels.push(*label_id);
    }
    Ok(VideoEntry {
        id: id.to_string(),
        subset,
        fps,
        duration,
        segments,
        labels,
    })
}

/// `[start, end]` in seconds, checked: finite, `0 <= start <= end <= duration`.
fn segment(
    path: &Path,
    id: &str,
    i: usize,
    act: &Value,
    duration: f64,
) -> Result<[f32; 2], DenseDataError> {
    let err = |msg: String| DenseDataError::Segment {
        path: path.to_path_buf(),
        video: id.to_string(),
        index: i,
        msg,
    };
    let pair = act.get("segment").and_then(Value::as_array);
    let se: Option<Vec<f64>> = pair
        .filter(|p| p.len() == 2)
        .map(|p| p.iter().filter_map(Value::as_f64).collect());
    let Some([s, e]) = se.as_deref().and_then(|v| <[f64; 2]>::try_from(v).ok()) else {
        return Err(err("\"segment\" is not a pair of numbers".into()));
    };
    if !(s.is_finite() && e.is_finite()) {
        return Err(err(format!("segment [{s}, {e}] is not finite")));
    }
    if e < s {
        return Err(err(format!("segment [{s}, {e}] ends before it starts")));
    }
    if s < 0.0 || e > duration {
        return Err(err(format!(
            "segment [{s}, {e}] lies outside the video [0, {duration}]"
        )));
    }
    Ok([s as f32, e as f32])
}

fn str_field<'a>(
    path: &Path,
    id: &str,
    v: &'a Value,
    key: &str,
) -> Result<&'a str, DenseDataError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| video_err(path, id, &format!("needs a string {key:?}")))
}

/// An optional number field; present but not a number is an error.
fn number(path: &Path, id: &str, v: &Value, key: &str) -> Result<Option<f64>, DenseDataError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| video_err(path, id, &format!("{key:?} is not a number"))),
    }
}

fn video_err(path: &Path, id: &str, msg: &str) -> DenseDataError {
    DenseDataError::Video {
        path: path.to_path_buf(),
        video: id.to_string(),
        msg: msg.to_string(),
    }
}

fn label_err(path: &Path, id: &str, index: usize, msg: String) -> DenseDataError {
    DenseDataError::Label {
        path: path.to_path_buf(),
        video: id.to_string(),
        index,
        msg,
    }
}
