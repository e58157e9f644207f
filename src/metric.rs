//! The official segment accuracy (REFERENCE §4.5) and its breakdowns.

use crate::T;
use crate::data::annotations::BACKGROUND;

/// σ(logit) in f64, as the official code's `sigmoid` of the event logit, rounded to f32.
pub fn event_prob(logit: f32) -> f32 {
    (1.0 / (1.0 + (-(logit as f64)).exp())) as f32
}

/// Per-segment prediction: the argmax category where σ(is_event) > 0.5, else background (28).
/// `is_event` is `[B, T]` logits, `event_scores` `[B, C]`.
pub fn predict(is_event: &[f32], event_scores: &[f32], batch: usize) -> Vec<usize> {
    let classes = event_scores.len() / batch;
    let mut pred = Vec::with_capacity(batch * T);
    for b in 0..batch {
        let scores = &event_scores[b * classes..(b + 1) * classes];
        // torch.argmax returns the first of equal maxima.
        let best = scores
            .iter()
            .enumerate()
            .fold(0, |best, (i, &x)| if x > scores[best] { i } else { best });
        for t in 0..T {
            let p = 1.0 / (1.0 + (-(is_event[b * T + t] as f64)).exp());
            pred.push(if p > 0.5 { best } else { BACKGROUND });
        }
    }
    pred
}

/// Accumulates the official accuracy (percent of correct segments) over a split.
///
/// The official loop computes each batch's accuracy as `correct · (100 / n)` and averages the
/// batches weighted by their `n` segments (an `AverageMeter`). [`Accuracy::update`] takes one
/// batch at a time and reproduces that arithmetic, so with the same batches the f64 result is
/// bit-identical to the official one (e.g. 7 of 30 → 23.333333333333336).
#[derive(Debug, Clone, Default)]
pub struct Accuracy {
    pub correct: usize,
    pub total: usize,
    weighted_sum: f64,
}

impl Accuracy {
    /// Adds one batch of per-segment predictions and targets.
    pub fn update(&mut self, pred: &[usize], target: &[usize]) {
        assert_eq!(pred.len(), target.len());
        let n = pred.len();
        if n == 0 {
            return;
        }
        let correct = pred.iter().zip(target).filter(|(p, t)| p == t).count();
        let batch_percent = correct as f64 * (100.0 / n as f64);
        self.weighted_sum += batch_percent * n as f64;
        self.correct += correct;
        self.total += n;
    }

    /// Percent, `None` before any segment.
    pub fn percent(&self) -> Option<f64> {
        (self.total > 0).then(|| self.weighted_sum / self.total as f64)
    }
}

/// Full evaluation summary: the official accuracy plus event/background accuracy, per-class
/// accuracy and the confusion of predicted vs true labels (29 × 29, background last).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Breakdown {
    /// Official segment accuracy, percent.
    pub accuracy: f64,
    pub segments: usize,
    /// Percent of segments whose event/background decision is right.
    pub event_background_accuracy: f64,
    /// Per label (28 categories then background): segments with that true label and the percent
    /// predicted exactly right (`null` when the split has none).
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][pred]` counts.
    pub confusion: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassAccuracy {
    pub label: usize,
    pub name: String,
    pub segments: usize,
    pub accuracy: Option<f64>,
}

impl Breakdown {
    /// `names[l]` names label `l` (29 names, background last).
    pub fn new(pred: &[usize], target: &[usize], accuracy: f64, names: &[String]) -> Self {
        let n = names.len();
        let mut confusion = vec![vec![0usize; n]; n];
        for (&p, &t) in pred.iter().zip(target) {
            confusion[t][p] += 1;
        }
        let eb = pred
            .iter()
            .zip(target)
            .filter(|(p, t)| (**p == BACKGROUND) == (**t == BACKGROUND))
            .count();
        let per_class = (0..n)
            .map(|l| {
                let segments: usize = confusion[l].iter().sum();
                let accuracy =
                    (segments > 0).then(|| confusion[l][l] as f64 / segments as f64 * 100.0);
                ClassAccuracy {
                    label: l,
                    name: names[l].clone(),
                    segments,
                    accuracy,
                }
            })
            .collect();
        Self {
            accuracy,
            segments: pred.len(),
            event_background_accuracy: if pred.is_empty() {
                0.0
            } else {
                eb as f64 / pred.len() as f64 * 100.0
            },
            per_class,
            confusion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_rule_and_meter() {
        // Video 0: event logits > 0 at t = 0, 1 only; best class 2.
        let mut logits = vec![-1.0f32; 10];
        logits[0] = 0.5;
        logits[1] = 3.0;
        let mut scores = vec![0.0f32; 28];
        scores[2] = 1.0;
        let pred = predict(&logits, &scores, 1);
        assert_eq!(pred[..3], [2, 2, BACKGROUND]);
        let mut acc = Accuracy::default();
        acc.update(&pred, &[2, 5, 28, 28, 28, 28, 28, 28, 28, 28]);
        assert_eq!(acc.correct, 9);
        assert!((acc.percent().unwrap() - 90.0).abs() < 1e-12);
        acc.update(&[0; 30][..20], &[1; 20]);
        assert_eq!((acc.correct, acc.total), (9, 30));
        assert!((acc.percent().unwrap() - 30.0).abs() < 1e-12);
    }

    #[test]
    fn breakdown_counts() {
        let names: Vec<String> = (0..29).map(|i| format!("c{i}")).collect();
        let pred = [1, 1, 28, 28, 2];
        let target = [1, 2, 28, 1, 2];
        let b = Breakdown::new(&pred, &target, 60.0, &names);
        assert_eq!(b.confusion[2][1], 1);
        assert_eq!(b.confusion[1][28], 1);
        assert_eq!(b.per_class[1].segments, 2);
        assert_eq!(b.per_class[1].accuracy, Some(50.0));
        assert_eq!(b.per_class[5].accuracy, None);
        // event/background right on segments 0, 1, 2, 4.
        assert!((b.event_background_accuracy - 80.0).abs() < 1e-12);
    }
}
