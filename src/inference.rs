//! Evaluation-mode inference over a split of an AVE-layout dataset.

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use crate::data::annotations::{BACKGROUND, CATEGORIES};
use crate::data::ave::{AveDir, Split};
use crate::data::batch::{Features, Prefetch, Shapes};
use crate::loss::Targets;
use crate::metric::{Accuracy, event_prob, predict};
use crate::model::{CaceNet, ForwardOptions};
use crate::{T, to_vec};

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

/// Fails, naming the data directory, when its feature widths differ from what `config`'s model
/// reads (the model would otherwise fail deep inside a matrix product).
pub fn check_feature_widths(config: &crate::config::ModelConfig, data: &AveDir) -> Result<()> {
    let (v, a) = (data.visual_dim(), data.audio_dim());
    if (v, a) != (config.visual_dim, config.audio_dim) {
        anyhow::bail!(
            "{}: features are visual {v}-d / audio {a}-d but the model expects {} / {}",
            data.dir().display(),
            config.visual_dim,
            config.audio_dim
        );
    }
    Ok(())
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
    let shapes = Shapes::of(data)?;
    let mut videos = Vec::with_capacity(order.len());
    let mut acc = Accuracy::default();
    let batches = order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    for batch in Prefetch::start(Features::Disk(data.dir().to_path_buf()), shapes, batches) {
        let batch = batch.with_context(|| format!("reading the {split} split"))?;
        let rows = batch.rows.clone();
        let b = rows.len();
        let (visual, audio, targets) = batch.into_tensors(false, device);
        let out = model.forward(visual, audio, ForwardOptions::bece_on());
        let logits = to_vec(out.is_event);
        let scores = to_vec(out.event_scores);
        let pred = predict(&logits, &scores, b);
        if let Some(t) = &targets {
            acc.update(&pred, &t.segment);
        }
        let classes = scores.len() / b;
        for (i, &row) in rows.iter().enumerate() {
            let event_logits = logits[i * T..(i + 1) * T].to_vec();
            let p = pred[i * T..(i + 1) * T].to_vec();
            videos.push(VideoPrediction {
                row,
                event_prob: event_logits.iter().map(|&x| event_prob(x)).collect(),
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

/// One video of a dataset through the model, with what the figures draw.
pub struct RowOutputs {
    /// Per-segment prediction, 28 = background.
    pub pred: [usize; T],
    pub event_prob: [f32; T],
    /// Ground-truth segment labels when the dataset has labels.
    pub truth: Option<[usize; T]>,
    /// AVCA's spatial maps by name, `[T · 49]` each; `None` for guides without them.
    pub maps: Option<[(&'static str, Vec<f32>); 2]>,
}

/// Runs `model` (evaluation mode) on dataset row `row`.
pub fn run_row(model: &CaceNet, data: &AveDir, row: usize, device: &Device) -> Result<RowOutputs> {
    let dims = data.visual_shape();
    if dims.len() != 4 {
        bail!(
            "{}: the model needs visual maps [N, 10, 7, 7, C]; found per-row shape {dims:?}",
            data.dir().display()
        );
    }
    let (mut v, mut a) = (vec![], vec![]);
    data.read_visual(&[row], &mut v)?;
    data.read_audio(&[row], &mut a)?;
    let visual = TensorData::new(v, [1, T, dims[1], dims[2], dims[3]]);
    let audio = TensorData::new(a, [1, T, data.audio_dim()]);
    let out = model.forward(
        Tensor::<5>::from_data(visual, device),
        Tensor::<3>::from_data(audio, device),
        ForwardOptions::bece_on(),
    );
    let logits = to_vec(out.is_event);
    let pred = predict(&logits, &to_vec(out.event_scores), 1);
    let truth = if data.has_labels() {
        let mut l = vec![];
        data.read_labels(&[row], &mut l)?;
        let segment = Targets::from_onehot(&l, 1).segment;
        Some(std::array::from_fn(|t| segment[t]))
    } else {
        None
    };
    Ok(RowOutputs {
        pred: std::array::from_fn(|t| pred[t]),
        event_prob: std::array::from_fn(|t| event_prob(logits[t])),
        truth,
        maps: out.spatial_maps.map(|m| m.named()),
    })
}
