//! The official training objective (REFERENCE §4.3–4.4): event/background BCE, category CE,
//! gate BCE, CAS CE and BECE's supervised contrastive loss.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};

use crate::T;
use crate::data::annotations::{BACKGROUND, NUM_CLASSES};
use crate::model::CaceOutput;

/// Targets decoded from `[B, T, 29]` one-hot labels the way the official loop does it.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    /// `[B, T]`: 1 for an event segment, 0 for background (`max` over the 28 event columns).
    pub is_event: Vec<f32>,
    /// `[B]`: the video's category, `max_t argmax_c labels[b, t, 0..28]` (background rows give 0).
    pub class: Vec<usize>,
    /// `[B, T]` per-segment label, 28 = background (`argmax` over all 29 columns).
    pub segment: Vec<usize>,
    pub batch: usize,
}

impl Targets {
    pub fn from_onehot(labels: &[f32], batch: usize) -> Self {
        let width = NUM_CLASSES + 1;
        assert_eq!(
            labels.len(),
            batch * T * width,
            "labels must be [B, 10, 29]"
        );
        let argmax_first = |xs: &[f32]| {
            xs.iter()
                .enumerate()
                .fold(0, |best, (i, &x)| if x > xs[best] { i } else { best })
        };
        let mut is_event = Vec::with_capacity(batch * T);
        let mut segment = Vec::with_capacity(batch * T);
        let mut class = Vec::with_capacity(batch);
        for b in 0..batch {
            let mut video_class = 0;
            for t in 0..T {
                let row = &labels[(b * T + t) * width..(b * T + t + 1) * width];
                let fg = &row[..NUM_CLASSES];
                is_event.push(fg.iter().copied().fold(f32::MIN, f32::max));
                video_class = video_class.max(argmax_first(fg));
                segment.push(argmax_first(row));
            }
            class.push(video_class);
        }
        Self {
            is_event,
            class,
            segment,
            batch,
        }
    }

    fn is_event_tensor(&self, device: &Device) -> Tensor<2> {
        Tensor::from_data(
            TensorData::new(self.is_event.clone(), [self.batch, T]),
            device,
        )
    }

    fn class_onehot(&self, classes: usize, device: &Device) -> Tensor<2> {
        let mut v = vec![0f32; self.batch * classes];
        for (b, &c) in self.class.iter().enumerate() {
            v[b * classes + c] = 1.0;
        }
        Tensor::from_data(TensorData::new(v, [self.batch, classes]), device)
    }
}

/// `mean[max(x,0) − x·y + log(1 + e^{−|x|})]`, PyTorch's `BCEWithLogitsLoss` with float targets.
pub fn bce_with_logits(x: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    let softplus_neg_abs = x.clone().abs().neg().exp().log1p();
    (x.clone().clamp_min(0.0) - x * y + softplus_neg_abs).mean()
}

/// `mean[−log softmax(z)_c]`, PyTorch's `CrossEntropyLoss` with class targets (given one-hot).
pub fn cross_entropy(z: Tensor<2>, onehot: Tensor<2>) -> Tensor<1> {
    (log_softmax(z, 1) * onehot).sum_dim(1).neg().mean()
}

/// BECE's supervised contrastive loss (τ = 0.01 in the official code), computed with
/// log-sum-exp: the official plain `exp(S)` overflows in f32 since S reaches ±1/τ = ±100.
///
/// Per video, rows are the T query views then the T key views; row i's positives are every
/// other row of an event segment if i is an event, and its own other view otherwise.
pub fn contrastive(q: Tensor<3>, k: Tensor<3>, targets: &Targets, tau: f64) -> Tensor<1> {
    contrastive_masked(q, k, &targets.is_event, None, tau)
}

/// [`contrastive`] over the valid steps only (`valid` `[B, T]`, 1/0; `None`: all valid), as
/// the dense model needs for its padded sequences: invalid rows are left out of the mean and
/// invalid columns out of every sum. `is_event` `[B, T]` (1 for an event step).
pub fn contrastive_masked(
    q: Tensor<3>,
    k: Tensor<3>,
    is_event: &[f32],
    valid: Option<&[f32]>,
    tau: f64,
) -> Tensor<1> {
    let [b, t, _] = q.dims();
    let device = q.device();
    let n = 2 * t;
    let f = Tensor::cat(vec![q, k], 1); // [B, 2T, d]
    let s = f.clone().matmul(f.swap_dims(1, 2)).div_scalar(tau); // [B, 2T, 2T]

    let ok = |v: usize, step: usize| valid.is_none_or(|m| m[v * t + step] > 0.5);
    let mut positives = vec![0f32; b * n * n];
    let mut others = vec![0f32; b * n * n];
    let mut log_count = vec![0f32; b * n];
    let mut row_weight = vec![0f32; b * n];
    for v in 0..b {
        let y = &is_event[v * t..(v + 1) * t];
        for i in 0..n {
            let ti = i % t;
            if !ok(v, ti) {
                // A padded row: its own other view keeps the sums finite; weight 0.
                let j = (i + t) % n;
                positives[(v * n + i) * n + j] = 1.0;
                others[(v * n + i) * n + j] = 1.0;
                continue;
            }
            row_weight[v * n + i] = 1.0;
            let mut count = 0;
            for j in 0..n {
                let tj = j % t;
                if i == j || !ok(v, tj) {
                    continue;
                }
                others[(v * n + i) * n + j] = 1.0;
                if (y[ti] > 0.5 && y[tj] > 0.5) || ti == tj {
                    positives[(v * n + i) * n + j] = 1.0;
                    count += 1;
                }
            }
            log_count[v * n + i] = (count as f32).ln();
        }
    }
    let mask = |m: Vec<f32>| Tensor::<3>::from_data(TensorData::new(m, [b, n, n]), &device);
    let (positives, others) = (mask(positives), mask(others));
    let rows = |m: Vec<f32>| Tensor::<2>::from_data(TensorData::new(m, [b, n]), &device);
    let rows_used: f32 = row_weight.iter().sum();
    let (log_count, row_weight) = (rows(log_count), rows(row_weight));

    let log_pos = masked_logsumexp(s.clone(), positives);
    let log_all = masked_logsumexp(s, others);
    let per_row = (log_pos - log_all - log_count).neg();
    match valid {
        None => per_row.mean(),
        Some(_) => (per_row * row_weight).sum().div_scalar(rows_used.max(1.0)),
    }
}

/// `log Σ_j mask_ij · e^{x_ij}` over the last axis; every row must have a non-zero mask.
fn masked_logsumexp(x: Tensor<3>, mask: Tensor<3>) -> Tensor<2> {
    // Masked-out entries get −1e4: e^{−1e4 − max} is exactly 0 in f32 for any |x| ≤ 1e3.
    let masked = x * mask.clone() + (mask.neg() + 1.0).mul_scalar(-1.0e4);
    let max = masked.clone().max_dim(2).detach(); // [B, N, 1]
    let dims = masked.dims();
    ((masked - max.clone()).exp().sum_dim(2).log() + max).reshape([dims[0], dims[1]])
}

/// The five terms and their sum.
pub struct LossTerms {
    pub is_event: Tensor<1>,
    pub event_class: Tensor<1>,
    pub gate: Tensor<1>,
    pub cas: Tensor<1>,
    /// `None` before BECE's warm-up ends (or with BECE off).
    pub contrastive: Option<Tensor<1>>,
    /// `event + class + gate + cas (+ weight · contrastive)`.
    pub total: Tensor<1>,
}

/// The official loss: `L_event + L_class + L_gate + L_cas (+ w·L_contrast)`.
///
/// code: `L_gate` feeds the gate, already a product of two sigmoids, to a with-logits BCE
/// (a third sigmoid); reproduced as is (REFERENCE §4.3).
pub fn objective(
    out: &CaceOutput,
    targets: &Targets,
    contrastive_weight: Option<f64>,
    tau: f64,
) -> LossTerms {
    let device = out.is_event.device();
    let y_bce = targets.is_event_tensor(&device);
    let classes = out.event_scores.dims()[1];
    debug_assert!(classes == NUM_CLASSES || BACKGROUND == NUM_CLASSES);
    let onehot = targets.class_onehot(classes, &device);
    let is_event = bce_with_logits(out.is_event.clone(), y_bce.clone());
    let event_class = cross_entropy(out.event_scores.clone(), onehot.clone());
    let gate = bce_with_logits(out.gate.clone(), y_bce);
    let cas = cross_entropy(out.av_score.clone(), onehot);
    let mut total = is_event.clone() + event_class.clone() + gate.clone() + cas.clone();
    let contrastive = contrastive_weight.map(|w| {
        let c = contrastive(out.q.clone(), out.k.clone(), targets, tau);
        total = total.clone() + c.clone().mul_scalar(w);
        c
    });
    LossTerms {
        is_event,
        event_class,
        gate,
        cas,
        contrastive,
        total,
    }
}
