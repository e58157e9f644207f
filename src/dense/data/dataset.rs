//! The dataset: the official `UnAV100Dataset` (`libs/datasets/unav100.py`) minus the target
//! assignment.
//!
//! An item is what the official `__getitem__` returns before `label_points`: the video id, the
//! visual (`2048 × T`) and audio (`128 × T`) features, the segments on the feature grid
//! `(seconds · fps − 0.5 · num_frames) / (feat_stride · downsample_rate)` (float32, as the
//! official numpy expression; small negative values are allowed), the labels, fps, duration,
//! the effective feature stride and `feat_num_frames`. In training mode, items with segments go
//! through [`super::truncate::truncate`].
//!
//! Not here: the point generator and the per-point classification/regression targets that the
//! official `__getitem__` also attaches (`gt_cls_labels`, `gt_offsets`, `points`); they belong
//! with the model's target assignment. A video without annotations has empty `segments` and
//! `labels` (official: `None`).

use std::path::{Path, PathBuf};

use super::annotations::{self, VideoEntry};
use super::error::DenseDataError;
use super::features::{self, FeatureSpec, VideoFeatures};
use super::truncate::{self, RandInt, TruncateParams};

/// File name of the annotations in the official layout.
pub const ANNOTATION_FILE: &str = "unav100_annotations.json";

/// The dataset settings: the official `dataset` config (`libs/core/config.py` defaults with
/// `configs/avel_unav100.yaml`) plus the channel counts the official model config gives.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenseDataConfig {
    /// Frames between two snippets (I3D stride).
    pub feat_stride: usize,
    /// Frames a snippet covers.
    pub num_frames: usize,
    /// Overrides every video's fps when set (official: 25).
    pub default_fps: Option<f64>,
    /// Keep every n-th snippet.
    pub downsample_rate: usize,
    /// Training window in snippets.
    pub max_seq_len: usize,
    /// Fraction of a segment that must stay inside a training window for it to be kept.
    pub trunc_thresh: f32,
    /// Random crop of short training videos (`None` disables it).
    pub crop_ratio: Option<[f64; 2]>,
    pub num_classes: usize,
    /// Prepended to every feature file name (official `file_prefix`, `~` = empty).
    pub file_prefix: String,
    /// Feature file extension (official `file_ext`).
    pub file_ext: String,
    /// I3D RGB channels (`input_dim_V` = rgb + flow = 2048).
    pub rgb_dim: usize,
    pub flow_dim: usize,
    /// VGGish channels (`input_dim_A`).
    pub audio_dim: usize,
}

impl Default for DenseDataConfig {
    fn default() -> Self {
        DenseDataConfig {
            feat_stride: 8,
            num_frames: 24,
            default_fps: Some(25.0),
            downsample_rate: 1,
            max_seq_len: 224,
            trunc_thresh: 0.5,
            crop_ratio: Some([0.9, 1.0]),
            num_classes: 100,
            file_prefix: String::new(),
            file_ext: ".npy".into(),
            rgb_dim: 1024,
            flow_dim: 1024,
            audio_dim: 128,
        }
    }
}

impl DenseDataConfig {
    /// Rejects what the official code asserts on or could not use.
    pub fn check(&self) -> Result<(), DenseDataError> {
        let bad = |m: &str| Err(DenseDataError::Config(m.into()));
        if self.feat_stride == 0 || self.downsample_rate == 0 || self.max_seq_len == 0 {
            return bad("feat_stride, downsample_rate and max_seq_len must be positive");
        }
        if self
            .default_fps
            .is_some_and(|f| !(f.is_finite() && f > 0.0))
        {
            return bad("default_fps must be a positive number");
        }
        if let Some([l, r]) = self.crop_ratio
            && !(l.is_finite() && r.is_finite() && 0.0 < l && l <= r)
        {
            return bad("crop_ratio must be [l, r] with 0 < l <= r");
        }
        if self.num_classes == 0 || self.rgb_dim + self.flow_dim == 0 || self.audio_dim == 0 {
            return bad("num_classes and the channel counts must be positive");
        }
        Ok(())
    }

    /// Stride of the (downsampled) features in frames.
    pub fn effective_stride(&self) -> usize {
        self.feat_stride * self.downsample_rate
    }

    pub fn truncate_params(&self) -> TruncateParams {
        TruncateParams {
            max_seq_len: self.max_seq_len,
            trunc_thresh: self.trunc_thresh,
            crop_ratio: self.crop_ratio,
        }
    }
}

/// Where the annotation file and the feature folder are.
#[derive(Debug, Clone, PartialEq)]
pub struct UnavPaths {
    pub json_file: PathBuf,
    pub feat_folder: PathBuf,
}

impl UnavPaths {
    /// A data directory: the official tree `DIR/annotations/unav100_annotations.json` +
    /// `DIR/av_features/`, or a flat `DIR/unav100_annotations.json` with the features in
    /// `DIR/av_features/` if present, else in `DIR`.
    pub fn in_dir(dir: &Path) -> Result<UnavPaths, DenseDataError> {
        let official = dir.join("annotations").join(ANNOTATION_FILE);
        let json_file = if official.is_file() {
            official
        } else {
            dir.join(ANNOTATION_FILE)
        };
        if !json_file.is_file() {
            return Err(DenseDataError::Missing {
                path: dir.to_path_buf(),
                video: None,
                what: format!("annotations/{ANNOTATION_FILE} or {ANNOTATION_FILE}"),
            });
        }
        let feats = dir.join("av_features");
        let feat_folder = if feats.is_dir() {
            feats
        } else {
            dir.to_path_buf()
        };
        Ok(UnavPaths {
            json_file,
            feat_folder,
        })
    }
}

/// One dataset item (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseItem {
    pub video_id: String,
    pub feats: VideoFeatures,
    /// `[start, end]` on the feature grid.
    pub segments: Vec<[f32; 2]>,
    pub labels: Vec<i64>,
    pub fps: f64,
    pub duration: f64,
    pub feat_stride: usize,
    pub feat_num_frames: usize,
}

/// The videos of some subsets of an UnAV-layout dataset.
#[derive(Debug, Clone)]
pub struct UnavDataset {
    pub cfg: DenseDataConfig,
    pub paths: UnavPaths,
    /// `(label, label_id)` over the whole file, in first-appearance order.
    pub label_dict: Vec<(String, i64)>,
    pub videos: Vec<VideoEntry>,
}

impl UnavDataset {
    /// Reads the annotations and keeps `split` (case-insensitive subset names, e.g.
    /// `["train"]`); features are read per item.
    pub fn open(
        paths: UnavPaths,
        split: &[&str],
        cfg: DenseDataConfig,
    ) -> Result<UnavDataset, DenseDataError> {
        cfg.check()?;
        if !paths.feat_folder.is_dir() {
            return Err(DenseDataError::Missing {
                path: paths.feat_folder.clone(),
                video: None,
                what: "the feature folder".into(),
            });
        }
        let split: Vec<String> = split.iter().map(|s| s.to_lowercase()).collect();
        let ann = annotations::load(&paths.json_file, &split, cfg.default_fps, cfg.num_classes)?;
        Ok(UnavDataset {
            cfg,
            paths,
            label_dict: ann.label_dict,
            videos: ann.videos,
        })
    }

    pub fn len(&self) -> usize {
        self.videos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.videos.is_empty()
    }

    /// Class ids with no label in the file (official `find_empty_cls`).
    pub fn empty_label_ids(&self) -> Vec<i64> {
        (0..self.cfg.num_classes as i64)
            .filter(|c| !self.label_dict.iter().any(|(_, id)| id == c))
            .collect()
    }

    pub fn feature_spec(&self) -> FeatureSpec<'_> {
        FeatureSpec {
            folder: &self.paths.feat_folder,
            prefix: &self.cfg.file_prefix,
            ext: &self.cfg.file_ext,
            rgb_dim: self.cfg.rgb_dim,
            flow_dim: self.cfg.flow_dim,
            audio_dim: self.cfg.audio_dim,
            downsample_rate: self.cfg.downsample_rate,
        }
    }

    /// The item as the official evaluation mode returns it (no truncation).
    pub fn item(&self, idx: usize) -> Result<DenseItem, DenseDataError> {
        let v = &self.videos[idx];
        let feats = features::load_video(&self.feature_spec(), &v.id)?;
        let stride = self.cfg.effective_stride();
        let fps = v.fps as f32;
        let half = 0.5 * self.cfg.num_frames as f32;
        let segments = v
            .segments
            .iter()
            .map(|s| s.map(|x| (x * fps - half) / stride as f32))
            .collect();
        Ok(DenseItem {
            video_id: v.id.clone(),
            feats,
            segments,
            labels: v.labels.clone(),
            fps: v.fps,
            duration: v.duration,
            feat_stride: stride,
            feat_num_frames: self.cfg.num_frames,
        })
    }

    /// The item as the official training mode returns it (random truncation from `rng`).
    pub fn train_item(
        &self,
        idx: usize,
        rng: &mut dyn RandInt,
    ) -> Result<DenseItem, DenseDataError> {
        let item = self.item(idx)?;
        Ok(truncate::truncate(item, &self.cfg.truncate_params(), rng))
    }

    /// Reads every video's features once: the first bad file is reported (by name and video).
    pub fn check_features(&self) -> Result<(), DenseDataError> {
        let spec = self.feature_spec();
        for v in &self.videos {
            features::load_video(&spec, &v.id)?;
        }
        Ok(())
    }
}
