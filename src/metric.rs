//! The official segment accuracy (REFERENCE §4.5) and its breakdowns.

use crate::T;
use crate::data::annotations::BACKGROUND;

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
}
