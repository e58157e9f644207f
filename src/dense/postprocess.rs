//! From per-point class logits and offsets to scored segments in seconds, as the official UnAV
//! meta-architecture's inference (`libs/modeling/multimodal_meta_archs.py`:
//! `inference_single_video` then `postprocessing`).
//!
//! Per pyramid level ([`level_candidates`]): probabilities `sigmoid(logit) · mask` over the
//! flattened `[T, C]` grid; those `> pre_nms_thresh`, the `pre_nms_topk` highest (stable
//! descending order); point `idx / C`, class `idx % C`; offsets of that (point, class) pair
//! when class-aware (the official UnAV config), of the point otherwise; segment
//! `[t - o₀·stride, t + o₁·stride]` from the point's `(t, …, stride)` row; kept when its length
//! is `> duration_thresh`. Levels are concatenated, suppressed with [`batched_nms`] (unless the
//! method is `none`), then mapped to seconds ([`to_seconds`]):
//! `(x · feat_stride + 0.5 · num_frames) / fps`, values `<= 0` set to 0 and `>= duration` to
//! the duration. All in `f32`, as the official tensors. The pre-NMS ranking is a stable sort
//! where the official uses torch's unstable one: only the order of exactly equal
//! probabilities can differ (see [`super::nms`]).
//!
//! Config values: [`TestConfig::official_defaults`] is `libs/core/config.py`'s `test_cfg`,
//! [`TestConfig::unav100`] with `configs/avel_unav100.yaml` merged over it.

use super::nms::{NmsConfig, Segments, batched_nms};

/// The official `nms_method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NmsMethod {
    Soft,
    Hard,
    None,
}

/// The official `test_cfg` (inference settings).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestConfig {
    pub pre_nms_thresh: f32,
    pub pre_nms_topk: usize,
    pub iou_threshold: f32,
    pub min_score: f32,
    pub max_seg_num: usize,
    pub nms_method: NmsMethod,
    pub nms_sigma: f32,
    pub duration_thresh: f32,
    pub multiclass_nms: bool,
    pub voting_thresh: f32,
}

impl TestConfig {
    /// `libs/core/config.py` defaults.
    pub fn official_defaults() -> Self {
        TestConfig {
            pre_nms_thresh: 0.001,
            pre_nms_topk: 5000,
            iou_threshold: 0.1,
            min_score: 0.01,
            max_seg_num: 1000,
            nms_method: NmsMethod::Soft,
            nms_sigma: 0.5,
            duration_thresh: 0.05,
            multiclass_nms: true,
            voting_thresh: 0.75,
        }
    }

    /// `configs/avel_unav100.yaml` over the defaults.
    pub fn unav100() -> Self {
        TestConfig {
            pre_nms_topk: 2000,
            max_seg_num: 100,
            min_score: 0.001,
            multiclass_nms: true,
            nms_sigma: 0.4,
            iou_threshold: 0.7,
            ..Self::official_defaults()
        }
    }

    pub fn nms(&self) -> NmsConfig {
        NmsConfig {
            iou_threshold: self.iou_threshold,
            min_score: self.min_score,
            max_seg_num: self.max_seg_num,
            use_soft_nms: self.nms_method == NmsMethod::Soft,
            multiclass: self.multiclass_nms,
            sigma: self.nms_sigma,
            voting_thresh: self.voting_thresh,
        }
    }
}

/// One pyramid level's outputs for one video, row-major.
pub struct LevelOutput<'a> {
    /// `[T, C]` classification logits.
    pub cls_logits: &'a [f32],
    /// `[T, C, 2]` offsets when class-aware, `[T, 2]` otherwise.
    pub offsets: &'a [f32],
    /// `[T]` valid positions.
    pub mask: &'a [bool],
    /// `[T, 4]` points as the official point generator: `(t, reg_lo, reg_hi, stride)`.
    pub points: &'a [f32],
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Candidate segments of one level, on the feature grid.
pub fn level_candidates(
    l: &LevelOutput,
    num_classes: usize,
    class_aware: bool,
    cfg: &TestConfig,
) -> Segments {
    let c = num_classes;
    let prob: Vec<f32> = (0..l.cls_logits.len())
        .map(|k| sigmoid(l.cls_logits[k]) * if l.mask[k / c] { 1.0 } else { 0.0 })
        .collect();
    let mut idx: Vec<usize> = (0..prob.len())
        .filter(|&k| prob[k] > cfg.pre_nms_thresh)
        .collect();
    idx.sort_by(|&a, &b| prob[b].partial_cmp(&prob[a]).unwrap());
    idx.truncate(cfg.pre_nms_topk);
    let mut out = Segments::default();
    for k in idx {
        let (pt, cls) = (k / c, k % c);
        let o = if class_aware {
            &l.offsets[2 * k..2 * k + 2]
        } else {
            &l.offsets[2 * pt..2 * pt + 2]
        };
        let (t, stride) = (l.points[4 * pt], l.points[4 * pt + 3]);
        let (left, right) = (t - o[0] * stride, t + o[1] * stride);
        if right - left > cfg.duration_thresh {
            out.segs.push([left, right]);
            out.scores.push(prob[k]);
            out.labels.push(cls as i64);
        }
    }
    out
}

/// Feature-grid segments to seconds, clamped to `[0, duration]` (official `postprocessing`).
pub fn to_seconds(
    segs: &mut [[f32; 2]],
    fps: f32,
    duration: f32,
    feat_stride: f32,
    num_frames: f32,
) {
    let half = (0.5 * num_frames as f64) as f32;
    for x in segs.iter_mut().flatten() {
        *x = (*x * feat_stride + half) / fps;
        if *x <= 0.0 {
            *x *= 0.0;
        }
        if *x >= duration {
            *x = *x * 0.0 + duration;
        }
    }
}

/// Video metadata the official dataset passes to inference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VideoMeta {
    pub fps: f32,
    pub duration: f32,
    pub feat_stride: f32,
    pub num_frames: f32,
}

/// All levels of one video to its final detections in seconds.
pub fn postprocess_video(
    levels: &[LevelOutput],
    num_classes: usize,
    class_aware: bool,
    meta: &VideoMeta,
    cfg: &TestConfig,
) -> Segments {
    let mut all = Segments::default();
    for l in levels {
        let s = level_candidates(l, num_classes, class_aware, cfg);
        all.segs.extend(s.segs);
        all.scores.extend(s.scores);
        all.labels.extend(s.labels);
    }
    let mut out = match cfg.nms_method {
        NmsMethod::None => all,
        _ => batched_nms(&all, &cfg.nms()),
    };
    if !out.is_empty() {
        to_seconds(
            &mut out.segs,
            meta.fps,
            meta.duration,
            meta.feat_stride,
            meta.num_frames,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_to_seconds_and_clamping() {
        let mut s = [[-1.0f32, 2.0], [10.0, 100.0]];
        to_seconds(&mut s, 25.0, 30.0, 8.0, 16.0);
        assert_eq!(s[0], [0.0, (2.0 * 8.0 + 8.0) / 25.0]);
        assert_eq!(s[1], [(10.0 * 8.0 + 8.0) / 25.0, 30.0]);
    }

    #[test]
    fn candidates_decode_class_aware_offsets_with_the_point_stride() {
        // two points (t = 0, 2; stride 2), two classes; only (point 1, class 0) passes.
        let logits = [-20.0, -20.0, 3.0, -20.0];
        let offsets = [0.0, 0.0, 0.0, 0.0, 1.0, 0.5, 9.0, 9.0];
        let points = [0.0, 0.0, 8.0, 2.0, 2.0, 0.0, 8.0, 2.0];
        let l = LevelOutput {
            cls_logits: &logits,
            offsets: &offsets,
            mask: &[true, true],
            points: &points,
        };
        let s = level_candidates(&l, 2, true, &TestConfig::unav100());
        assert_eq!(s.segs, vec![[0.0, 3.0]]);
        assert_eq!(s.labels, vec![0]);
        let masked = LevelOutput {
            mask: &[true, false],
            ..l
        };
        assert!(level_candidates(&masked, 2, true, &TestConfig::unav100()).is_empty());
    }
}
