//! Label assignment (official `UnAV100Dataset.label_points` /
//! `label_points_single_video`, `libs/datasets/unav100.py`): which points of the pyramid are
//! positives for which ground-truth event, and their regression targets.
//!
//! A point `t` (row `[t, lo, hi, stride]`) is a positive for an event `[s, e]` (feature-grid
//! units) when it lies strictly inside it (`min(t − s, e − t) > 0`) and its larger distance to
//! the boundaries is within the level's regression range (`lo ≤ max(t − s, e − t) ≤ hi`).
//! There is no centre sampling in the UnAV baseline: any inside point qualifies.
//! - class-aware (the UnAV config): every qualifying event makes its class positive at the
//!   point; the class's target is `(t − s, e − t) / stride` of that event (a later event of
//!   the same class at the same point overwrites an earlier one, as the official loop);
//! - class-agnostic: among the qualifying events those within 1e-3 of the shortest are
//!   positives; the target is the shortest one's (first on ties) distances / stride.
//!
//! Runs on plain `f32` slices: targets are data, built before the forward pass.

/// Targets for the concatenated points of all levels (FT rows).
#[derive(Debug, Clone, PartialEq)]
pub struct PointTargets {
    /// `[FT, C]`, 0/1.
    pub cls: Vec<f32>,
    /// `[FT, C, 2]` (class-aware) or `[FT, 2]`, in units of each point's stride.
    pub reg: Vec<f32>,
}

/// `points`: `[FT, 4]` rows `[t, lo, hi, stride]` (all levels concatenated, as
/// [`super::points::PointGenerator`] gives them per level); `segments` `[N]` of `[start, end]`;
/// `labels` `[N]` class indices below `num_classes`.
pub fn label_points(
    points: &[f32],
    segments: &[[f32; 2]],
    labels: &[usize],
    num_classes: usize,
    class_aware: bool,
) -> PointTargets {
    assert_eq!(points.len() % 4, 0, "points are rows of 4");
    assert_eq!(segments.len(), labels.len(), "one label per segment");
    let n_pts = points.len() / 4;
    let c = num_classes;
    let mut cls = vec![0f32; n_pts * c];
    let mut reg = vec![0f32; n_pts * if class_aware { c * 2 } else { 2 }];
    if segments.is_empty() {
        return PointTargets { cls, reg };
    }
    for i in 0..n_pts {
        let [t, lo, hi, stride] = [
            points[4 * i],
            points[4 * i + 1],
            points[4 * i + 2],
            points[4 * i + 3],
        ];
        // lens[n]: the event's length if the point qualifies for it, else +inf.
        let dist: Vec<(f32, f32)> = segments.iter().map(|s| (t - s[0], s[1] - t)).collect();
        let lens: Vec<f32> = segments
            .iter()
            .zip(&dist)
            .map(|(s, &(l, r))| {
                let inside = l.min(r) > 0.0;
                let far = l.max(r);
                if inside && far >= lo && far <= hi {
                    s[1] - s[0]
                } else {
                    f32::INFINITY
                }
            })
            .collect();
        if class_aware {
            for (n, &len) in lens.iter().enumerate() {
                if len < f32::INFINITY {
                    let k = labels[n];
                    cls[i * c + k] = 1.0;
                    reg[(i * c + k) * 2] = dist[n].0 / stride;
                    reg[(i * c + k) * 2 + 1] = dist[n].1 / stride;
                }
            }
        } else {
            // Shortest qualifying event (first index on ties; index 0 when none qualifies).
            let (arg, min_len) =
                lens.iter()
                    .enumerate()
                    .fold(
                        (0, f32::INFINITY),
                        |(a, m), (n, &len)| {
                            if len < m { (n, len) } else { (a, m) }
                        },
                    );
            for (n, &len) in lens.iter().enumerate() {
                if len <= min_len + 1e-3 && len < f32::INFINITY {
                    cls[i * c + labels[n]] = 1.0;
                }
            }
            reg[2 * i] = dist[arg].0 / stride;
            reg[2 * i + 1] = dist[arg].1 / stride;
        }
    }
    PointTargets { cls, reg }
}
