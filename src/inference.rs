//! Evaluation-mode inference over a split of an AVE-layout dataset.

use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use crate::T;
use crate::data::annotations::{BACKGROUND, CATEGORIES};
use crate::data::ave::{AveDir, Split};
use crate::loss::Targets;
use crate::metric::{Accuracy, predict};
use crate::model::{CaceNet, ForwardOptions};

/// Model outputs for one video, as `cace predict` writes them.
#[derive(Debug, Clone, Serialize)]
pub struct VideoPrediction {
    /// Index into the HDF5 arrays (annotation row for AVE).
    pub row: usize,
    /// Event/background logits per segment.
    pub event_logits: Vec<f32>,
    /// σ(event_logits).
    pub event_prob: Vec<f32>,
    /// Final category scores (`event_scores`, including the γ·CAS term).
    pub class_logits: Vec<f32>,
    /// Per-segment prediction, 28 = background.
    pub pred: Vec<usize>,
    /// Category names of `pred` ("background" for 28).
    pub pred_names: Vec<String>,
    /// Ground-truth segment labels when the dataset has labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<usize>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitPrediction {
    pub split: String,
    pub videos: Vec<VideoPrediction>,
    /// Official segment accuracy in percent (batches of `batch_size`), `null` without labels.
    pub accuracy: Option<f64>,
    pub batch_size: usize,
}

pub fn label_name(label: usize) -> String {
    if label == BACKGROUND {
        "background".to_string()
    } else {
        CATEGORIES[label].to_string()
    }
}

/// One batch of features as the model takes them.
pub struct Batch {
    pub rows: Vec<usize>,
    pub visual: Tensor<5>,
    pub audio: Tensor<3>,
    pub labels: Option<Vec<f32>>,
}

/// Reads `rows` from `data` into tensors on `device`.
pub fn read_batch(data: &AveDir, rows: &[usize], device: &Device) -> Result<Batch> {
    let b = rows.len();
    let vshape = data.visual_shape();
    anyhow::ensure!(
        vshape.len() == 4,
        "{}: the model needs visual feature maps [N, 10, 7, 7, C]; this file holds pooled features {:?}",
        data.dir().join(crate::data::ave::VISUAL_FILE).display(),
        vshape
    );
    let mut v = Vec::with_capacity(b * vshape.iter().product::<usize>());
    data.read_visual(rows, &mut v)?;
    let mut a = Vec::with_capacity(b * T * data.audio_dim());
    data.read_audio(rows, &mut a)?;
    let labels = if data.has_labels() {
        let mut l = Vec::new();
        data.read_labels(rows, &mut l)?;
        Some(l)
    } else {
        None
    };
    let visual = Tensor::from_data(
        TensorData::new(v, [b, vshape[0], vshape[1], vshape[2], vshape[3]]),
        device,
    );
    let audio = Tensor::from_data(TensorData::new(a, [b, T, data.audio_dim()]), device);
    Ok(Batch {
        rows: rows.to_vec(),
        visual,
        audio,
        labels,
    })
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 tensor")
}

/// Runs `model` (evaluation mode: a device without autodiff, BECE's λ-mix on, as the official
/// `--evaluate` does) on `split` in batches.
pub fn predict_split(
    model: &CaceNet,
    data: &AveDir,
    split: Split,
    batch_size: usize,
    device: &Device,
) -> Result<SplitPrediction> {
    let order = data.order(split)?;
    let mut videos = Vec::with_capacity(order.len());
    let mut acc = Accuracy::default();
    for rows in order.chunks(batch_size.max(1)) {
        let batch = read_batch(data, rows, device)
            .with_context(|| format!("reading {split} rows {rows:?}"))?;
        let b = rows.len();
        let out = model.forward(
            batch.visual,
            batch.audio,
            ForwardOptions {
                bece_on: true,
                noise: None,
            },
        );
        let logits = to_vec(out.is_event);
        let scores = to_vec(out.event_scores);
        let pred = predict(&logits, &scores, b);
        let targets = batch.labels.as_ref().map(|l| Targets::from_onehot(l, b));
        if let Some(t) = &targets {
            acc.update(&pred, &t.segment);
        }
        let classes = scores.len() / b;
        for (i, &row) in rows.iter().enumerate() {
            let event_logits = logits[i * T..(i + 1) * T].to_vec();
            let p = pred[i * T..(i + 1) * T].to_vec();
            videos.push(VideoPrediction {
                row,
                event_prob: event_logits
                    .iter()
                    .map(|&x| (1.0 / (1.0 + (-(x as f64)).exp())) as f32)
                    .collect(),
                event_logits,
                class_logits: scores[i * classes..(i + 1) * classes].to_vec(),
                pred_names: p.iter().map(|&l| label_name(l)).collect(),
                pred: p,
                target: targets
                    .as_ref()
                    .map(|t| t.segment[i * T..(i + 1) * T].to_vec()),
            });
        }
    }
    Ok(SplitPrediction {
        split: split.to_string(),
        videos,
        accuracy: acc.percent(),
        batch_size,
    })
}
