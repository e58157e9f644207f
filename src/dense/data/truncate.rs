//! Training-time truncation: the official `truncate_feats` (`libs/datasets/data_utils.py`,
//! called with `multi_modal=True`, `has_action=True`, `no_trunc=False`, 200 trials).
//!
//! A video longer than `max_seq_len` snippets is cut to a random window of `max_seq_len`; a
//! shorter one, when `crop_ratio = (l, r)` is set, to a random length drawn from
//! `[max(round(l·T), 1), min(round(r·T), T)]` (Python `round`: half to even) and kept whole if
//! that draw is `T`. The window start is drawn uniformly from `[0, T − len]` until at least one
//! segment keeps `≥ trunc_thresh` of its length inside the window (at most 200 tries; after that
//! the last window is used, possibly with no segment). Kept segments are clipped to the window
//! and shifted by its start (float32 arithmetic, like the torch code); the others are dropped.
//!
//! # Randomness
//! The official code draws with Python's `random.randint` (a Mersenne Twister seeded per data
//! loader worker from torch's seed, `worker_init_reset_seed`), so its windows depend on the
//! worker layout. Ours draws from any [`RandInt`]: [`SeededRng`] (ChaCha8, `rand`'s uniform
//! integer sampling) for training, so the same seed gives the same windows regardless of
//! threads, but not the windows Python would pick for the same seed. The sequence of draws
//! (which `randint` calls, with which bounds, in which order) is the official one, so a
//! recorded Python sequence replayed through [`RandInt`] gives the official result exactly,
//! and so does [`super::pyrandom::PyRandom`] (CPython's Mersenne Twister) after the same
//! `random.seed(n)` in one process (`tests/dense/data.rs` checks both).

use rand::rngs::ChaCha8Rng;
use rand::{RngExt as _, SeedableRng};

use super::dataset::DenseItem;

/// Number of windows tried before the last one is taken (official `max_num_trials`).
pub const MAX_TRIALS: usize = 200;

/// A source of uniform integers in `lo..=hi` (Python's `random.randint(lo, hi)`).
pub trait RandInt {
    fn randint(&mut self, lo: usize, hi: usize) -> usize;
}

/// Seeded ChaCha8 stream: deterministic, portable, independent of the thread layout.
pub struct SeededRng(ChaCha8Rng);

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(ChaCha8Rng::seed_from_u64(seed))
    }
}

impl RandInt for SeededRng {
    fn randint(&mut self, lo: usize, hi: usize) -> usize {
        self.0.random_range(lo..=hi)
    }
}

/// What `truncate_feats` needs from the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruncateParams {
    pub max_seq_len: usize,
    pub trunc_thresh: f32,
    pub crop_ratio: Option<[f64; 2]>,
}

/// The official `truncate_feats` on one item (items without segments are not truncated by
/// the official `__getitem__`; this function leaves them as they are too).
pub fn truncate(item: DenseItem, p: &TruncateParams, rng: &mut dyn RandInt) -> DenseItem {
    let t = item.feats.len();
    if item.segments.is_empty() {
        return item;
    }
    let mut len = p.max_seq_len;
    if t <= len {
        let Some([lo, hi]) = p.crop_ratio else {
            return item;
        };
        let lo = ((lo * t as f64).round_ties_even() as usize).max(1);
        let hi = ((hi * t as f64).round_ties_even() as usize).min(t);
        len = rng.randint(lo, hi);
        if len == t {
            return item;
        }
    }
    let (st, kept) = choose_window(&item.segments, t, len, p.trunc_thresh, rng);
    cut(item, st, len, &kept)
}

/// Tries windows until one keeps a segment; returns its start and the kept, clipped segments
/// (with their indices).
fn choose_window(
    segs: &[[f32; 2]],
    t: usize,
    len: usize,
    thresh: f32,
    rng: &mut dyn RandInt,
) -> (usize, Vec<(usize, [f32; 2])>) {
    let mut last = (0, Vec::new());
    for _ in 0..MAX_TRIALS {
        let st = rng.randint(0, t - len);
        let (ws, we) = (st as f32, (st + len) as f32);
        let kept: Vec<(usize, [f32; 2])> = segs
            .iter()
            .enumerate()
            .filter_map(|(i, &[s, e])| {
                let (left, right) = (ws.max(s), we.min(e));
                let ratio = (right - left).max(0.0) / (e - s).abs();
                (ratio >= thresh).then_some((i, [left, right]))
            })
            .collect();
        let found = !kept.is_empty();
        last = (st, kept);
        if found {
            break;
        }
    }
    last
}

/// Features `[:, st:st+len]`, kept segments shifted by `st`, their labels.
fn cut(mut item: DenseItem, st: usize, len: usize, kept: &[(usize, [f32; 2])]) -> DenseItem {
    for m in [&mut item.feats.visual, &mut item.feats.audio] {
        let cols = m.cols;
        m.data = (0..m.rows)
            .flat_map(|r| m.data[r * cols + st..r * cols + st + len].to_vec())
            .collect();
        m.cols = len;
    }
    let shift = st as f32;
    item.labels = kept.iter().map(|&(i, _)| item.labels[i]).collect();
    item.segments = kept
        .iter()
        .map(|&(_, [l, r])| [l - shift, r - shift])
        .collect();
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense::data::features::{Matrix, VideoFeatures};

    fn item(t: usize, segments: Vec<[f32; 2]>) -> DenseItem {
        let m = |rows: usize| Matrix {
            rows,
            cols: t,
            data: (0..rows * t).map(|i| i as f32).collect(),
        };
        DenseItem {
            video_id: "v".into(),
            feats: VideoFeatures {
                visual: m(2),
                audio: m(1),
            },
            labels: (0..segments.len() as i64).collect(),
            segments,
            fps: 25.0,
            duration: 10.0,
            feat_stride: 8,
            feat_num_frames: 24,
        }
    }

    /// Returns fixed values and records the bounds asked for.
    struct Fixed(Vec<usize>, Vec<(usize, usize)>);
    impl RandInt for Fixed {
        fn randint(&mut self, lo: usize, hi: usize) -> usize {
            self.1.push((lo, hi));
            let v = self.0[(self.1.len() - 1).min(self.0.len() - 1)];
            v.clamp(lo, hi)
        }
    }

    const P: TruncateParams = TruncateParams {
        max_seq_len: 4,
        trunc_thresh: 0.5,
        crop_ratio: Some([0.9, 1.0]),
    };

    #[test]
    fn crop_bounds_round_half_to_even() {
        // T = 5 ≤ 4? no: use max_seq_len 8 so the crop path runs; round(0.9·5 = 4.5) = 4.
        let p = TruncateParams {
            max_seq_len: 8,
            ..P
        };
        let mut r = Fixed(vec![4, 1], vec![]);
        let out = truncate(item(5, vec![[1.0, 4.0]]), &p, &mut r);
        assert_eq!(r.1, vec![(4, 5), (0, 1)]);
        assert_eq!(out.feats.len(), 4);
        assert_eq!(
            out.feats.visual.data,
            vec![1.0, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0]
        );
        assert_eq!(out.segments, vec![[0.0, 3.0]]);
    }

    #[test]
    fn items_without_segments_or_crop_stay_whole() {
        let mut r = Fixed(vec![0], vec![]);
        let whole = item(3, vec![[0.0, 1.0]]);
        let p = TruncateParams {
            crop_ratio: None,
            ..P
        };
        assert_eq!(truncate(whole.clone(), &p, &mut r), whole);
        let none = item(9, vec![]);
        assert_eq!(truncate(none.clone(), &P, &mut r), none);
        assert!(r.1.is_empty());
    }

    #[test]
    fn after_200_misses_the_last_window_is_taken_empty() {
        let mut r = Fixed(vec![0], vec![]);
        let out = truncate(item(20, vec![[15.0, 19.0]]), &P, &mut r);
        assert_eq!(r.1.len(), MAX_TRIALS);
        assert_eq!(
            (out.feats.len(), out.segments.len(), out.labels.len()),
            (4, 0, 0)
        );
    }
}
