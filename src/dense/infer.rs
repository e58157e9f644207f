//! Detections from a trained dense model (official `valid_one_epoch` / `eval.py`): videos in
//! dataset order, batched like the official evaluation loader, each batch padded by
//! [`super::model::preprocess`], run in evaluation mode, and every video's per-level outputs
//! post-processed ([`super::postprocess::postprocess_video`]) into segments in seconds.
//!
//! The batching matters for videos longer than `max_seq_len`: the batch's padded length sets
//! the interpolated position table, as in the official code.

use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use serde_json::{Value, json};

use super::data::{DenseItem, UnavDataset};
use super::metrics::Detection;
use super::model::{DenseModel, DenseModelConfig, VideoFeatures, preprocess};
use super::postprocess::{LevelOutput, TestConfig, VideoMeta, postprocess_video};

/// One video's detections, in seconds, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoDetections {
    pub video_id: String,
    pub segments: Vec<[f32; 2]>,
    pub scores: Vec<f32>,
    pub labels: Vec<i64>,
}

/// The model's input for one item, on `device`.
pub fn item_features(item: &DenseItem, device: &Device) -> VideoFeatures {
    let m = |x: &super::data::features::Matrix| {
        Tensor::from_data(TensorData::new(x.data.clone(), [x.rows, x.cols]), device)
    };
    VideoFeatures {
        visual: m(&item.feats.visual),
        audio: m(&item.feats.audio),
    }
}

/// Detections for `items` (in order), `batch_size` videos per forward pass.
pub fn detect(
    model: &DenseModel,
    config: &DenseModelConfig,
    items: &[DenseItem],
    batch_size: usize,
    test: &TestConfig,
    device: &Device,
) -> Result<Vec<VideoDetections>> {
    let points = config.point_generator()?;
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(batch_size.max(1)) {
        let videos: Vec<VideoFeatures> = chunk.iter().map(|i| item_features(i, device)).collect();
        let batch = preprocess(&videos, config, false)
            .with_context(|| format!("video {}", chunk[0].video_id))?;
        let t = batch.mask.dims()[1];
        let o = crate::pool::run(|| model.forward(&batch));
        let levels = BatchLevels {
            cls: o.cls_logits.into_iter().map(crate::to_vec).collect(),
            off: o.offsets.into_iter().map(crate::to_vec).collect(),
            mask: o.masks.into_iter().map(crate::to_vec).collect(),
            pts: points
                .points(t, false, device)?
                .into_iter()
                .map(crate::to_vec)
                .collect(),
        };
        for (b, item) in chunk.iter().enumerate() {
            out.push(levels.video(b, item, config, test));
        }
    }
    Ok(out)
}

/// [`detect`] over every video of `ds` in order, each batch's features read when it is run
/// (a split's features are not held in memory: UnAV-100's validation set alone is ~2 GB).
pub fn detect_dataset(
    model: &DenseModel,
    config: &DenseModelConfig,
    ds: &UnavDataset,
    batch_size: usize,
    test: &TestConfig,
    device: &Device,
) -> Result<Vec<VideoDetections>> {
    let batch_size = batch_size.max(1);
    let mut out = Vec::with_capacity(ds.len());
    for start in (0..ds.len()).step_by(batch_size) {
        let items = (start..(start + batch_size).min(ds.len()))
            .map(|i| ds.item(i))
            .collect::<Result<Vec<DenseItem>, _>>()?;
        out.extend(detect(model, config, &items, batch_size, test, device)?);
    }
    Ok(out)
}

/// A batch's per-level outputs on the host, row-major: class logits `[B, T_l, C]`, offsets,
/// masks `[B, T_l]`, and the points `[T_l, 4]` (the same for every video of the batch).
struct BatchLevels {
    cls: Vec<Vec<f32>>,
    off: Vec<Vec<f32>>,
    mask: Vec<Vec<f32>>,
    pts: Vec<Vec<f32>>,
}

impl BatchLevels {
    /// Video `b`'s rows of every level, post-processed into its detections.
    fn video(
        &self,
        b: usize,
        item: &DenseItem,
        config: &DenseModelConfig,
        test: &TestConfig,
    ) -> VideoDetections {
        let c = config.num_classes;
        let per_point_off = if config.class_aware { 2 * c } else { 2 };
        let len = |l: usize| self.pts[l].len() / 4;
        let masks: Vec<Vec<bool>> = (0..self.pts.len())
            .map(|l| {
                self.mask[l][b * len(l)..(b + 1) * len(l)]
                    .iter()
                    .map(|&m| m > 0.5)
                    .collect()
            })
            .collect();
        let levels: Vec<LevelOutput> = (0..self.pts.len())
            .map(|l| {
                let t = len(l);
                LevelOutput {
                    cls_logits: &self.cls[l][b * t * c..(b + 1) * t * c],
                    offsets: &self.off[l][b * t * per_point_off..(b + 1) * t * per_point_off],
                    mask: &masks[l],
                    points: &self.pts[l],
                }
            })
            .collect();
        let meta = VideoMeta {
            fps: item.fps as f32,
            duration: item.duration as f32,
            feat_stride: item.feat_stride as f32,
            num_frames: item.feat_num_frames as f32,
        };
        let s = postprocess_video(&levels, c, config.class_aware, &meta, test);
        VideoDetections {
            video_id: item.video_id.clone(),
            segments: s.segs,
            scores: s.scores,
            labels: s.labels,
        }
    }
}

/// Rows for [`super::metrics::evaluate`].
pub fn to_rows(dets: &[VideoDetections]) -> Vec<Detection> {
    dets.iter()
        .flat_map(|d| {
            (0..d.scores.len()).map(move |k| Detection {
                video: d.video_id.clone(),
                start: d.segments[k][0] as f64,
                end: d.segments[k][1] as f64,
                label: d.labels[k],
                score: d.scores[k] as f64,
            })
        })
        .collect()
}

/// The official prediction format: `{"database": {video_id: [{"segment": [s, e], "label_id":
/// i, "scores": p}]}}` (what `cace dense eval --detections` reads), plus `"label"` (the class
/// name) when `names` gives one.
pub fn to_official_json(dets: &[VideoDetections], names: &[(String, i64)]) -> Value {
    let mut db = serde_json::Map::new();
    for d in dets {
        let events: Vec<Value> = (0..d.scores.len())
            .map(|k| {
                let mut e = json!({
                    "segment": [d.segments[k][0], d.segments[k][1]],
                    "label_id": d.labels[k],
                    "scores": d.scores[k],
                });
                if let Some((name, _)) = names.iter().find(|(_, id)| *id == d.labels[k]) {
                    e["label"] = json!(name);
                }
                e
            })
            .collect();
        db.insert(d.video_id.clone(), Value::Array(events));
    }
    json!({ "database": db })
}
