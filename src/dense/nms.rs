//! 1-D non-maximum suppression, as the official UnAV code (`libs/utils/nms.py` and its C++
//! kernel `libs/utils/csrc/nms_cpu.cpp`, both from ActionFormer/mmcv).
//!
//! - [`soft_nms`] is the kernel `softnms_1d_cpu`: repeatedly move the highest remaining score
//!   to the front (first of equals), decay every later score by the method's weight of its
//!   overlap with it (Gaussian `exp(-iou²/σ)` for the official method 2), and drop a segment
//!   whose decayed score falls below `min_score` by swapping the last one into its place.
//!   Overlaps use lengths `end - start + 1e-6`. All arithmetic is `f32`, as in the kernel.
//! - [`hard_nms`] is `nms_1d_cpu` behind `NMSop`: scores `> min_score` (when positive), visit
//!   by decreasing score, suppress overlaps `>= iou_threshold`.
//! - [`batched_nms`] is `batched_nms`: per class (ascending class ids) or class-agnostic, each
//!   capped at `max_seg_num`; class-agnostic results are refined by [`seg_voting`] when
//!   `voting_thresh > 0`; finally all kept segments by decreasing score, truncated to
//!   `max_seg_num`.
//!
//! Difference: where the official code sorts with torch's default (unstable) descending sort
//! (the final order here, hard NMS's visiting order), we use a stable sort. Torch's CPU sort
//! keeps equal scores in input order only up to 16 elements, so with more, segments of exactly
//! equal score may come out in another order (the same segments unless the tie straddles the
//! `max_seg_num` cut). [`seg_voting`] sums its weighted means in order where torch uses
//! sgemm: refined segments agree to a few `f32` ulps (7.6e-6 s on the golden set).

/// Suppression weight of the soft-NMS kernel (`method` 0, 1, 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftMethod {
    Hard = 0,
    Linear = 1,
    Gaussian = 2,
}

/// Kept segments, with their (possibly decayed) scores and class ids, in output order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Segments {
    pub segs: Vec<[f32; 2]>,
    pub scores: Vec<f32>,
    pub labels: Vec<i64>,
}

impl Segments {
    pub fn len(&self) -> usize {
        self.segs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }
    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Segments {
        Segments {
            segs: idx.iter().map(|&i| self.segs[i]).collect(),
            scores: idx.iter().map(|&i| self.scores[i]).collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
        }
    }
    fn extend(&mut self, other: Segments) {
        self.segs.extend(other.segs);
        self.scores.extend(other.scores);
        self.labels.extend(other.labels);
    }
}

/// Settings of [`batched_nms`] (the official `test_cfg` names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NmsConfig {
    pub iou_threshold: f32,
    pub min_score: f32,
    pub max_seg_num: usize,
    pub use_soft_nms: bool,
    pub multiclass: bool,
    pub sigma: f32,
    pub voting_thresh: f32,
}

/// Indices by decreasing score, equal scores in input order (torch's CPU `sort`).
pub fn sort_descending(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        scores[b]
            .partial_cmp(&scores[a])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    idx
}

/// The soft-NMS kernel. Returns the kept segments with decayed scores, sorted as the kernel
/// leaves them, and the input index of each.
pub fn soft_nms(
    segs: &[[f32; 2]],
    scores: &[f32],
    iou_threshold: f32,
    sigma: f32,
    min_score: f32,
    method: SoftMethod,
) -> (Vec<[f32; 3]>, Vec<usize>) {
    let mut x1: Vec<f32> = segs.iter().map(|s| s[0]).collect();
    let mut x2: Vec<f32> = segs.iter().map(|s| s[1]).collect();
    let mut sc = scores.to_vec();
    let mut areas: Vec<f32> = segs.iter().map(|s| (s[1] - s[0]) + 1e-6f32).collect();
    let mut inds: Vec<usize> = (0..segs.len()).collect();
    let mut dets = Vec::with_capacity(segs.len());
    let mut n = segs.len();
    let mut i = 0;
    while i < n {
        let mut max_pos = i;
        for pos in i + 1..n {
            if sc[max_pos] < sc[pos] {
                max_pos = pos;
            }
        }
        for v in [&mut x1, &mut x2, &mut sc, &mut areas] {
            v.swap(i, max_pos);
        }
        inds.swap(i, max_pos);
        let (ix1, ix2, iarea) = (x1[i], x2[i], areas[i]);
        dets.push([ix1, ix2, sc[i]]);
        let mut pos = i + 1;
        while pos < n {
            let inter = (ix2.min(x2[pos]) - ix1.max(x1[pos])).max(0.0);
            let ovr = inter / (iarea + areas[pos] - inter);
            sc[pos] *= soft_weight(method, ovr, iou_threshold, sigma);
            if sc[pos] < min_score {
                n -= 1;
                x1[pos] = x1[n];
                x2[pos] = x2[n];
                sc[pos] = sc[n];
                areas[pos] = areas[n];
                inds[pos] = inds[n];
            } else {
                pos += 1;
            }
        }
        i += 1;
    }
    inds.truncate(n);
    (dets, inds)
}

fn soft_weight(method: SoftMethod, ovr: f32, iou_threshold: f32, sigma: f32) -> f32 {
    match method {
        SoftMethod::Hard if ovr >= iou_threshold => 0.0,
        SoftMethod::Linear if ovr >= iou_threshold => 1.0 - ovr,
        SoftMethod::Gaussian => (-(ovr * ovr) / sigma).exp(),
        _ => 1.0,
    }
}

/// The hard-NMS kernel with `NMSop`'s score filter: kept input indices by decreasing score.
pub fn hard_nms(
    segs: &[[f32; 2]],
    scores: &[f32],
    iou_threshold: f32,
    min_score: f32,
) -> Vec<usize> {
    let valid: Vec<usize> = (0..segs.len())
        .filter(|&i| min_score <= 0.0 || scores[i] > min_score)
        .collect();
    let sc: Vec<f32> = valid.iter().map(|&i| scores[i]).collect();
    let order = sort_descending(&sc);
    let area = |i: usize| (segs[i][1] - segs[i][0]) + 1e-6f32;
    let mut select = vec![true; order.len()];
    for a in 0..order.len() {
        if !select[a] {
            continue;
        }
        let i = valid[order[a]];
        for b in a + 1..order.len() {
            if !select[b] {
                continue;
            }
            let j = valid[order[b]];
            let inter = (segs[i][1].min(segs[j][1]) - segs[i][0].max(segs[j][0])).max(0.0);
            if inter / (area(i) + area(j) - inter) >= iou_threshold {
                select[b] = false;
            }
        }
    }
    (0..order.len())
        .filter(|&a| select[a])
        .map(|a| valid[order[a]])
        .collect()
}

/// One NMS call of `batched_nms` (`SoftNMSop` or `NMSop`), capped at `max_seg_num`.
fn nms_op(c: &Segments, cfg: &NmsConfig) -> Segments {
    let cap = |n: usize| {
        if cfg.max_seg_num > 0 {
            n.min(cfg.max_seg_num)
        } else {
            n
        }
    };
    if cfg.use_soft_nms {
        let method = SoftMethod::Gaussian;
        let (dets, inds) = soft_nms(
            &c.segs,
            &c.scores,
            cfg.iou_threshold,
            cfg.sigma,
            cfg.min_score,
            method,
        );
        let n = cap(inds.len());
        Segments {
            segs: dets[..n].iter().map(|d| [d[0], d[1]]).collect(),
            scores: dets[..n].iter().map(|d| d[2]).collect(),
            labels: inds[..n].iter().map(|&i| c.labels[i]).collect(),
        }
    } else {
        let mut keep = hard_nms(&c.segs, &c.scores, cfg.iou_threshold, cfg.min_score);
        keep.truncate(cap(keep.len()));
        c.select(&keep)
    }
}

/// Official `batched_nms`.
pub fn batched_nms(c: &Segments, cfg: &NmsConfig) -> Segments {
    if c.is_empty() {
        return Segments::default();
    }
    let out = if cfg.multiclass {
        let mut classes = c.labels.clone();
        classes.sort_unstable();
        classes.dedup();
        let mut out = Segments::default();
        for class in classes {
            let idx: Vec<usize> = (0..c.len()).filter(|&i| c.labels[i] == class).collect();
            out.extend(nms_op(&c.select(&idx), cfg));
        }
        out
    } else {
        let mut out = nms_op(c, cfg);
        if cfg.voting_thresh > 0.0 {
            out.segs = seg_voting(&out.segs, &c.segs, &c.scores, cfg.voting_thresh);
        }
        out
    };
    let mut order = sort_descending(&out.scores);
    order.truncate(cfg.max_seg_num.min(out.len()));
    out.select(&order)
}

/// Official `seg_voting`: each kept segment becomes the score-weighted mean of all input
/// segments overlapping it with IoU `>= iou_threshold`.
pub fn seg_voting(
    nms_segs: &[[f32; 2]],
    all_segs: &[[f32; 2]],
    all_scores: &[f32],
    iou_threshold: f32,
) -> Vec<[f32; 2]> {
    nms_segs
        .iter()
        .map(|n| {
            let w: Vec<f32> = all_segs
                .iter()
                .zip(all_scores)
                .map(|(a, &s)| {
                    let inter = (n[1].min(a[1]) - n[0].max(a[0])).max(0.0);
                    let iou = inter / ((n[1] - n[0]) + (a[1] - a[0]) - inter);
                    if iou >= iou_threshold { s } else { 0.0 }
                })
                .collect();
            let total: f32 = w.iter().sum();
            let mut r = [0.0f32; 2];
            for (a, wi) in all_segs.iter().zip(&w) {
                r[0] += wi / total * a[0];
                r[1] += wi / total * a[1];
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_soft_nms_decays_by_overlap() {
        let segs = [[0.0, 10.0], [0.0, 5.0], [20.0, 30.0]];
        let (dets, inds) = soft_nms(
            &segs,
            &[0.9, 0.8, 0.3],
            0.7,
            0.4,
            0.001,
            SoftMethod::Gaussian,
        );
        assert_eq!(inds, vec![0, 1, 2]);
        let iou = 5.0f32 / 10.0;
        assert!((dets[1][2] - 0.8 * (-(iou * iou) / 0.4).exp()).abs() < 1e-6);
        assert_eq!(dets[2][2], 0.3);
    }

    #[test]
    fn soft_nms_drops_below_min_score_by_swapping_the_last_in() {
        let segs = [[0.0, 10.0], [0.0, 10.0], [50.0, 60.0]];
        let (dets, inds) = soft_nms(
            &segs,
            &[0.9, 0.002, 0.5],
            0.7,
            0.4,
            0.001,
            SoftMethod::Gaussian,
        );
        assert_eq!(inds, vec![0, 2]);
        assert_eq!(dets.len(), 2);
    }

    #[test]
    fn hard_nms_filters_then_suppresses() {
        let segs = [[0.0, 10.0], [1.0, 10.0], [20.0, 30.0], [40.0, 41.0]];
        assert_eq!(
            hard_nms(&segs, &[0.5, 0.9, 0.4, 0.01], 0.5, 0.05),
            vec![1, 2]
        );
    }

    #[test]
    fn batched_nms_keeps_classes_apart_and_caps() {
        let c = Segments {
            segs: vec![[0.0, 10.0], [0.0, 10.0], [0.0, 10.0]],
            scores: vec![0.9, 0.8, 0.7],
            labels: vec![0, 1, 1],
        };
        let cfg = NmsConfig {
            iou_threshold: 0.7,
            min_score: 0.001,
            max_seg_num: 2,
            use_soft_nms: true,
            multiclass: true,
            sigma: 0.4,
            voting_thresh: 0.75,
        };
        let out = batched_nms(&c, &cfg);
        assert_eq!(out.labels, vec![0, 1]);
        assert_eq!(out.scores, vec![0.9, 0.8]);
        assert!(batched_nms(&Segments::default(), &cfg).is_empty());
    }
}
