//! Dense localization on one's own video (`cace predict --video FILE --dense`): the clip is
//! decoded and encoded second by second with the AVE encoders the project has (VGG19 + VGGish
//! or ResNet-50 + Cnn14; I3D, the UnAV-100 visual features, has no Rust weights), the frame
//! encoder's map averaged over its cells, and the dense model runs over the whole clip. The
//! model must have been trained on features of the same encoders in the UnAV layout
//! (`cace extract --layout unav` writes them), where a snippet is one second: the grid maps to
//! time as `t = x + 0.5` s (feature stride 1, one frame per snippet, 1 fps).

use std::path::Path;

use anyhow::{Result, bail};
use burn::tensor::Device;
use serde::Serialize;

use super::data::DenseItem;
use super::data::features::{Matrix, VideoFeatures};
use super::infer;
use super::model::{DenseModel, DenseModelConfig};
use super::postprocess::TestConfig;
use crate::encoders::{AudioEncoder, FrameEncoder};
use crate::extract::{ClipSummary, encode_clip};

/// A clip's per-second features: visual `[C_v, n]` (the frame map averaged over its cells),
/// audio `[C_a, n]`, n = whole seconds of content.
pub fn snippets(
    path: &Path,
    frames: &dyn FrameEncoder,
    audio: &dyn AudioEncoder,
) -> Result<(VideoFeatures, ClipSummary)> {
    let shape = frames.output_shape();
    let channels = *shape
        .last()
        .expect("a non-empty shape (checked by encode_clip)");
    let cells: usize = shape[..shape.len() - 1].iter().product();
    let dim = audio.dim();
    let (mut v_rows, mut a_rows) = (Vec::new(), Vec::new());
    let summary = encode_clip(path, frames, audio, &mut |w| {
        for s in 0..w.content_seconds {
            let map = &w.visual[s * cells * channels..(s + 1) * cells * channels];
            v_rows.push(
                (0..channels)
                    .map(|c| (0..cells).map(|i| map[i * channels + c]).sum::<f32>() / cells as f32)
                    .collect::<Vec<f32>>(),
            );
            a_rows.push(w.audio[s * dim..(s + 1) * dim].to_vec());
        }
        Ok(())
    })?;
    if v_rows.is_empty() {
        bail!(
            "{}: no whole second of content to localize events in",
            path.display()
        );
    }
    let channel_major = |rows: &[Vec<f32>], c: usize| Matrix {
        rows: c,
        cols: rows.len(),
        data: (0..c)
            .flat_map(|k| rows.iter().map(move |r| r[k]))
            .collect(),
    };
    let feats = VideoFeatures {
        visual: channel_major(&v_rows, channels),
        audio: channel_major(&a_rows, dim),
    };
    Ok((feats, summary))
}

#[derive(Debug, Clone, Serialize)]
pub struct DenseEvent {
    pub start: f64,
    pub end: f64,
    pub label: String,
    pub label_id: i64,
    pub score: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DenseVideoResult {
    pub video: String,
    pub duration: f64,
    pub seconds: usize,
    pub visual_encoder: String,
    pub audio_encoder: String,
    /// Every detection after soft-NMS (at most 100), best first; overlapping events allowed.
    pub events: Vec<DenseEvent>,
}

/// The dense model's events in the clip at `path`. `names[(name, id)]` names the classes.
pub fn predict_video_dense(
    model: &DenseModel,
    config: &DenseModelConfig,
    names: &[(String, i64)],
    path: &Path,
    frames: &dyn FrameEncoder,
    audio: &dyn AudioEncoder,
    device: &Device,
) -> Result<DenseVideoResult> {
    let vd = *frames.output_shape().last().unwrap_or(&0);
    if (vd, audio.dim()) != (config.input_dim_v, config.input_dim_a) {
        bail!(
            "the dense model expects {}-d visual and {}-d audio snippets; the encoders give {vd} and {}",
            config.input_dim_v,
            config.input_dim_a,
            audio.dim()
        );
    }
    let (feats, summary) = snippets(path, frames, audio)?;
    let seconds = feats.visual.cols;
    let item = DenseItem {
        video_id: path.display().to_string(),
        feats,
        segments: vec![],
        labels: vec![],
        fps: 1.0,
        duration: summary.info.duration,
        feat_stride: 1,
        feat_num_frames: 1,
    };
    let dets = infer::detect(model, config, &[item], 1, &TestConfig::unav100(), device)?;
    let d = &dets[0];
    let events = (0..d.scores.len())
        .map(|k| DenseEvent {
            start: d.segments[k][0] as f64,
            end: d.segments[k][1] as f64,
            label: class_name(names, d.labels[k]),
            label_id: d.labels[k],
            score: d.scores[k] as f64,
        })
        .collect();
    Ok(DenseVideoResult {
        video: path.display().to_string(),
        duration: summary.info.duration,
        seconds,
        visual_encoder: summary.visual_encoder,
        audio_encoder: summary.audio_encoder,
        events,
    })
}

fn class_name(names: &[(String, i64)], id: i64) -> String {
    names
        .iter()
        .find(|(_, i)| *i == id)
        .map_or_else(|| format!("class {id}"), |(n, _)| n.clone())
}

/// The timeline figure: one lane per class with an event scoring at least `min_score`.
pub fn lanes_figure(r: &DenseVideoResult, path: &Path, min_score: f64) -> Result<()> {
    let mut classes: Vec<(i64, String)> = Vec::new();
    for e in r.events.iter().filter(|e| e.score >= min_score) {
        if !classes.iter().any(|(id, _)| *id == e.label_id) {
            classes.push((e.label_id, e.label.clone()));
        }
    }
    let spans: Vec<Vec<(f64, f64, f64)>> = classes
        .iter()
        .map(|(id, _)| {
            r.events
                .iter()
                .filter(|e| e.label_id == *id && e.score >= min_score)
                .map(|e| (e.start, e.end, e.score))
                .collect()
        })
        .collect();
    let lanes: Vec<crate::plot::Lane> = classes
        .iter()
        .zip(&spans)
        .map(|((id, name), events)| crate::plot::Lane {
            name,
            class: *id as usize,
            events,
        })
        .collect();
    let title = Path::new(&r.video)
        .file_name()
        .map_or(r.video.clone(), |n| n.to_string_lossy().into_owned());
    crate::plot::event_lanes(
        path,
        &format!("{title}: events (score ≥ {min_score})"),
        r.duration,
        &lanes,
    )
}

/// What [`write_unav_features`] did.
#[derive(Debug, Clone, Default)]
pub struct FeatureReport {
    /// Video ids written (or already there).
    pub written: Vec<String>,
    pub failed: Vec<(std::path::PathBuf, String)>,
}

/// Per-second features of `videos` in the UnAV layout under `out`: `av_features/<id>_rgb.npy`
/// `[n, C_v]`, `<id>_flow.npy` `[n, 0]` (no flow stream) and `<id>_vggish.npy` `[n, C_a]`, `id`
/// the file name without extension; a video whose three files exist is skipped (a stopped run
/// continues). Also `dense_config.json`: the `data` settings (and input widths) a training
/// config needs for these features. A video that fails is reported, the others written.
pub fn write_unav_features(
    videos: &[std::path::PathBuf],
    out: &Path,
    frames: &dyn FrameEncoder,
    audio: &dyn AudioEncoder,
    progress: bool,
) -> Result<FeatureReport> {
    use super::data::features::write_npy;
    let dir = out.join("av_features");
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let (c_v, c_a) = (*frames.output_shape().last().unwrap_or(&0), audio.dim());
    let config = serde_json::json!({
        "model": {"input_dim_v": c_v, "input_dim_a": c_a},
        "data": {"feat_stride": 1, "num_frames": 1, "default_fps": 1.0,
                 "rgb_dim": c_v, "flow_dim": 0, "audio_dim": c_a}
    });
    crate::fsutil::write_file(
        &out.join("dense_config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    let mut report = FeatureReport::default();
    for v in videos {
        let id = v
            .file_stem()
            .map_or("video".into(), |s| s.to_string_lossy().into_owned());
        let files = ["rgb", "flow", "vggish"].map(|k| dir.join(format!("{id}_{k}.npy")));
        if files.iter().all(|f| f.exists()) {
            report.written.push(id);
            continue;
        }
        match snippets(v, frames, audio) {
            Ok((f, _)) => {
                let row_major = |m: &Matrix| Matrix {
                    rows: m.cols,
                    cols: m.rows,
                    data: (0..m.cols)
                        .flat_map(|t| (0..m.rows).map(move |c| m.data[c * m.cols + t]))
                        .collect(),
                };
                let flow = Matrix {
                    rows: f.visual.cols,
                    cols: 0,
                    data: vec![],
                };
                // Each file is replaced atomically, the audio last: a video whose three files
                // exist is complete.
                for (file, m) in files
                    .iter()
                    .zip([row_major(&f.visual), flow, row_major(&f.audio)])
                {
                    write_npy(file, &m)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))?;
                }
                if progress {
                    println!("{id}: {} seconds", f.visual.cols);
                }
                report.written.push(id);
            }
            Err(e) => {
                eprintln!("failed: {}: {e:#}", v.display());
                report.failed.push((v.clone(), format!("{e:#}")));
            }
        }
    }
    Ok(report)
}
