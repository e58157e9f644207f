//! Detection mAP at temporal-IoU thresholds, as the official UnAV evaluation
//! (`libs/utils/metrics.py`, `ANETdetection`, itself the ActivityNet detection metric).
//!
//! The official code, and where this module follows it:
//! - Ground truth (`load_gt_seg_from_json`): `database` videos, optionally only those whose
//!   `subset` (lower-cased) equals the split as given; per video, annotations that repeat an
//!   earlier kept one (same `label_id`, start and end within 1e-3) are dropped
//!   ([`remove_duplicate_annotations`]). A list `label_id` becomes `1 + Σ int(x)` (the official
//!   formula with its default `label_offset` 0); a number is truncated like Python's `int`.
//! - Classes are the sorted distinct ground-truth labels; class `k` is the `k`-th of them.
//!   Detection labels are renamed with the same table (pandas `replace`, not chained); a
//!   detection label absent from the ground truth keeps its raw value, so it is scored as class
//!   index `label` when such an index exists (an official quirk, kept) and is ignored otherwise.
//! - Per class and threshold ([`average_precision`]): detections by decreasing score; each takes
//!   the unmatched ground truth of its video with the highest tIoU if that tIoU reaches the
//!   threshold, else is a false positive; a class without detections scores 0. AP is the
//!   VOC-2011 interpolated area ([`interpolated_prec_rec`]).
//! - mAP per threshold is the mean over classes, the average mAP the mean over thresholds
//!   (numpy's pairwise summation, [`pairwise_mean`]); thresholds are `np.linspace(0.1, 0.9, 9)`.
//!
//! Differences: the official sorts with numpy's unstable `argsort` then reverses it, so the
//! order of exactly equal scores (and equal tIoUs) depends on numpy's build and the CPU (its
//! AVX-512 sort differs from its scalar one). We use the order the scalar path gives for short
//! arrays: stable ascending, reversed (the later of two equal scores comes first). Inputs the
//! official accepts but are malformed are refused here: a segment with end < start, a
//! non-finite time or score, a label or time given as a string.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// One ground-truth event.
#[derive(Clone, Debug, PartialEq)]
pub struct GtSegment {
    pub video: String,
    pub start: f64,
    pub end: f64,
    pub label: i64,
}

/// One scored detection (a row of the official prediction table).
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub video: String,
    pub start: f64,
    pub end: f64,
    pub label: i64,
    pub score: f64,
}

/// mAP per threshold and its average, as fractions in [0, 1].
#[derive(Clone, Debug)]
pub struct MapResult {
    pub tiou: Vec<f64>,
    /// The ground-truth labels the classes stand for, ascending.
    pub classes: Vec<i64>,
    /// `ap[t][k]`: AP of class `k` at threshold `t`.
    pub ap: Vec<Vec<f64>>,
    pub map: Vec<f64>,
    pub average_map: f64,
}

/// `np.linspace(start, stop, num)` bit for bit (`arange * step + start`, last = `stop`).
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = num.saturating_sub(1).max(1) as f64;
    let step = (stop - start) / div;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// The UnAV-100 thresholds, `np.linspace(0.1, 0.9, 9)`.
pub fn unav_tiou_thresholds() -> Vec<f64> {
    linspace(0.1, 0.9, 9)
}

/// A JSON object read with its keys in file order (Python's `json.load` keeps that order; a
/// repeated key keeps its first position and its last value, as a Python dict does).
pub struct OrderedObject(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, Value)> = Vec::new();
                let mut at: HashMap<String, usize> = HashMap::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    match at.get(&k) {
                        Some(&i) => entries[i].1 = v,
                        None => {
                            at.insert(k.clone(), entries.len());
                            entries.push((k, v));
                        }
                    }
                }
                Ok(OrderedObject(entries))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(serde::Deserialize)]
struct Database {
    database: OrderedObject,
}

/// Reads `{"database": {...}}` from a file, naming the file and the problem on failure.
fn read_database(path: &Path) -> Result<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    parse_database(&text).with_context(|| format!("{}", path.display()))
}

fn parse_database(text: &str) -> Result<Vec<(String, Value)>> {
    match serde_json::from_str::<Database>(text) {
        Ok(db) => Ok(db.database.0),
        Err(e) => {
            let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
            let rest = line.get(e.column().saturating_sub(1)..).unwrap_or("");
            let hint = if ["NaN", "Infinity", "-Infinity"]
                .iter()
                .any(|w| rest.starts_with(w))
            {
                " (NaN and Infinity are not JSON numbers: a score or time is not finite)"
            } else {
                ""
            };
            bail!("not a valid {{\"database\": {{...}}}} JSON file: {e}{hint}")
        }
    }
}

/// A finite number field (the official `float(x)`, without its string parsing).
fn number(v: &Value, what: &str) -> Result<f64> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        Some(x) => bail!("{what} is {x}, not a finite number"),
        None => bail!("{what} is {v}, not a number"),
    }
}

/// The official label conversion: `int(x)`, or `Σ (0**i + int(x_i))` for a list.
fn label_id(v: &Value) -> Result<i64> {
    let int = |x: &Value| -> Result<i64> {
        match (x.as_i64(), x.as_f64()) {
            (Some(i), _) => Ok(i),
            (None, Some(f)) if f.is_finite() && f.abs() < 9.2e18 => Ok(f.trunc() as i64),
            _ => bail!("label_id {v} is not an integer"),
        }
    };
    match v {
        Value::Array(xs) => {
            let mut id = 0;
            for (i, x) in xs.iter().rev().enumerate() {
                id += if i == 0 { 1 } else { 0 } + int(x)?;
            }
            Ok(id)
        }
        _ => int(v),
    }
}

/// Python `==` on two `label_id` values (numbers numerically, lists element-wise).
fn same_label(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_label(p, q))
        }
        (Value::Number(_), Value::Number(_)) => a.as_f64() == b.as_f64(),
        _ => a == b,
    }
}

/// An event's `segment` as `(start, end)`, refusing end < start.
fn segment(event: &Value) -> Result<(f64, f64)> {
    let seg = event.get("segment").context("no \"segment\"")?;
    let Some([s, e]) = seg.as_array().map(|a| a.as_slice()) else {
        bail!("segment {seg} is not [start, end]")
    };
    let (s, e) = (number(s, "segment start")?, number(e, "segment end")?);
    if e < s {
        bail!("segment [{s}, {e}] ends before it starts");
    }
    Ok((s, e))
}

/// Keeps each event unless an earlier kept one has the same label and start/end within `tol`
/// (official `remove_duplicate_annotations`, tol 1e-3). Events are `(start, end, label_id)`.
pub fn remove_duplicate_annotations(events: &[(f64, f64, Value)], tol: f64) -> Vec<usize> {
    let mut kept: Vec<usize> = Vec::new();
    for (i, (s, e, l)) in events.iter().enumerate() {
        let dup = kept.iter().any(|&k| {
            let (ps, pe, pl) = &events[k];
            (s - ps).abs() <= tol && (e - pe).abs() <= tol && same_label(l, pl)
        });
        if !dup {
            kept.push(i);
        }
    }
    kept
}

/// Ground truth of an official annotation file (`load_gt_seg_from_json`). With a split, only
/// videos whose lower-cased `subset` equals it; a split no video has is an error.
pub fn load_ground_truth(path: &Path, split: Option<&str>) -> Result<Vec<GtSegment>> {
    let db = read_database(path)?;
    ground_truth_from(&db, split).with_context(|| format!("{}", path.display()))
}

/// [`load_ground_truth`] on an already parsed `database` object.
pub fn ground_truth_from(db: &[(String, Value)], split: Option<&str>) -> Result<Vec<GtSegment>> {
    let mut out = Vec::new();
    let mut subsets: Vec<String> = Vec::new();
    let mut in_split = 0;
    for (video, v) in db {
        if let Some(split) = split {
            let subset = v.get("subset").and_then(Value::as_str).with_context(|| {
                format!("video {video:?}: no \"subset\" string to filter the split on")
            })?;
            let subset = subset.to_lowercase();
            if !subsets.contains(&subset) {
                subsets.push(subset.clone());
            }
            if subset != split {
                continue;
            }
        }
        in_split += 1;
        out.extend(video_ground_truth(video, v).with_context(|| format!("video {video:?}"))?);
    }
    if let (Some(split), 0) = (split, in_split) {
        bail!(
            "unknown split {split:?}: the subsets are {}",
            subsets.join(", ")
        );
    }
    if out.is_empty() {
        bail!("no ground-truth events to evaluate against");
    }
    Ok(out)
}

fn video_ground_truth(video: &str, v: &Value) -> Result<Vec<GtSegment>> {
    let ants = v
        .get("annotations")
        .and_then(Value::as_array)
        .context("no \"annotations\" list")?;
    let mut events = Vec::with_capacity(ants.len());
    for (i, a) in ants.iter().enumerate() {
        let (s, e) = segment(a).with_context(|| format!("annotation {i}"))?;
        let l = a
            .get("label_id")
            .with_context(|| format!("annotation {i}: no \"label_id\""))?;
        label_id(l).with_context(|| format!("annotation {i}"))?;
        events.push((s, e, l.clone()));
    }
    let kept = remove_duplicate_annotations(&events, 1e-3);
    Ok(kept
        .into_iter()
        .map(|k| GtSegment {
            video: video.to_string(),
            start: events[k].0,
            end: events[k].1,
            label: label_id(&events[k].2).expect("checked above"),
        })
        .collect())
}

/// Detections of an official prediction file (`load_pred_seg_from_json`):
/// `{"database": {video: [{"segment": [s, e], "label_id": i, "scores": p}]}}`.
pub fn load_detections(path: &Path) -> Result<Vec<Detection>> {
    let db = read_database(path)?;
    detections_from(&db).with_context(|| format!("{}", path.display()))
}

/// [`load_detections`] on an already parsed `database` object.
pub fn detections_from(db: &[(String, Value)]) -> Result<Vec<Detection>> {
    let mut out = Vec::new();
    for (video, v) in db {
        let events = v
            .as_array()
            .with_context(|| format!("video {video:?}: detections are not a list"))?;
        for (i, ev) in events.iter().enumerate() {
            let d =
                detection(video, ev).with_context(|| format!("video {video:?}, detection {i}"))?;
            out.push(d);
        }
    }
    Ok(out)
}

fn detection(video: &str, ev: &Value) -> Result<Detection> {
    let (start, end) = segment(ev)?;
    let label = label_id(ev.get("label_id").context("no \"label_id\"")?)?;
    let score = number(ev.get("scores").context("no \"scores\"")?, "score")?;
    Ok(Detection {
        video: video.to_string(),
        start,
        end,
        label,
        score,
    })
}

/// tIoU of `target` with each candidate, in the official operation order (0/0 gives NaN).
pub fn segment_iou(target: (f64, f64), candidates: &[(f64, f64)]) -> Vec<f64> {
    candidates
        .iter()
        .map(|&(cs, ce)| {
            let inter = (target.1.min(ce) - target.0.max(cs)).max(0.0);
            let union = (ce - cs) + (target.1 - target.0) - inter;
            inter / union
        })
        .collect()
}

/// Indices by decreasing value: numpy's ascending order (NaN last) made stable, reversed.
pub fn argsort_descending(v: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| match (v[a].is_nan(), v[b].is_nan()) {
        (false, false) => v[a].partial_cmp(&v[b]).unwrap(),
        (x, y) => x.cmp(&y),
    });
    idx.reverse();
    idx
}

/// VOC-2011 interpolated AP of a precision/recall curve (official `interpolated_prec_rec`).
pub fn interpolated_prec_rec(prec: &[f64], rec: &[f64]) -> f64 {
    let mut mprec = Vec::with_capacity(prec.len() + 2);
    mprec.push(0.0);
    mprec.extend_from_slice(prec);
    mprec.push(0.0);
    let mut mrec = Vec::with_capacity(rec.len() + 2);
    mrec.push(0.0);
    mrec.extend_from_slice(rec);
    mrec.push(1.0);
    for i in (0..mprec.len() - 1).rev() {
        mprec[i] = mprec[i].max(mprec[i + 1]);
    }
    let terms: Vec<f64> = (1..mrec.len())
        .filter(|&i| mrec[i] != mrec[i - 1])
        .map(|i| (mrec[i] - mrec[i - 1]) * mprec[i])
        .collect();
    pairwise_sum(&terms)
}

/// AP of one class at each threshold (official `compute_average_precision_detection`).
/// `gt` and `preds` are that class's rows in table order; zero everywhere without detections.
pub fn average_precision(gt: &[&GtSegment], preds: &[&Detection], tiou: &[f64]) -> Vec<f64> {
    let (nt, np) = (tiou.len(), preds.len());
    if np == 0 {
        return vec![0.0; nt];
    }
    let mut by_video: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, g) in gt.iter().enumerate() {
        by_video.entry(g.video.as_str()).or_default().push(j);
    }
    let scores: Vec<f64> = preds.iter().map(|p| p.score).collect();
    let mut lock = vec![vec![false; gt.len()]; nt];
    let mut tp = vec![vec![0.0; np]; nt];
    let mut fp = vec![vec![0.0; np]; nt];
    for (idx, &p) in argsort_descending(&scores).iter().enumerate() {
        let pred = preds[p];
        let Some(rows) = by_video.get(pred.video.as_str()) else {
            (0..nt).for_each(|t| fp[t][idx] = 1.0);
            continue;
        };
        let segs: Vec<(f64, f64)> = rows.iter().map(|&j| (gt[j].start, gt[j].end)).collect();
        let ious = segment_iou((pred.start, pred.end), &segs);
        let order = argsort_descending(&ious);
        for (t, &thr) in tiou.iter().enumerate() {
            for &j in &order {
                if ious[j] < thr {
                    break;
                }
                if !lock[t][rows[j]] {
                    lock[t][rows[j]] = true;
                    tp[t][idx] = 1.0;
                    break;
                }
            }
            if tp[t][idx] == 0.0 {
                fp[t][idx] = 1.0;
            }
        }
    }
    let npos = gt.len() as f64;
    (0..nt).map(|t| curve_ap(&tp[t], &fp[t], npos)).collect()
}

fn curve_ap(tp: &[f64], fp: &[f64], npos: f64) -> f64 {
    let (mut tc, mut fc) = (0.0, 0.0);
    let (mut prec, mut rec) = (Vec::with_capacity(tp.len()), Vec::with_capacity(tp.len()));
    for (t, f) in tp.iter().zip(fp) {
        tc += t;
        fc += f;
        rec.push(tc / npos);
        prec.push(tc / (tc + fc));
    }
    interpolated_prec_rec(&prec, &rec)
}

/// numpy's `add.reduce` on a contiguous float64 array (pairwise, 8-way unrolled blocks of 128).
pub fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = -0.0;
        for x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for k in 0..8 {
                r[k] += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for x in &a[i..] {
            res += x;
        }
        res
    } else {
        let n2 = (n / 2) - (n / 2) % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// `np.mean` of a contiguous float64 array.
pub fn pairwise_mean(a: &[f64]) -> f64 {
    pairwise_sum(a) / a.len() as f64
}

/// mAP of `dets` against `gt` at each threshold (official `ANETdetection.evaluate`).
pub fn evaluate(gt: &[GtSegment], dets: &[Detection], tiou: &[f64]) -> MapResult {
    let mut classes: Vec<i64> = gt.iter().map(|g| g.label).collect();
    classes.sort_unstable();
    classes.dedup();
    let index: HashMap<i64, i64> = classes
        .iter()
        .enumerate()
        .map(|(k, &l)| (l, k as i64))
        .collect();
    let mut ap = vec![vec![0.0; classes.len()]; tiou.len()];
    for (k, &label) in classes.iter().enumerate() {
        let g: Vec<&GtSegment> = gt.iter().filter(|g| g.label == label).collect();
        let p: Vec<&Detection> = dets
            .iter()
            .filter(|d| *index.get(&d.label).unwrap_or(&d.label) == k as i64)
            .collect();
        for (t, a) in average_precision(&g, &p, tiou).into_iter().enumerate() {
            ap[t][k] = a;
        }
    }
    let map: Vec<f64> = ap.iter().map(|row| pairwise_mean(row)).collect();
    let average_map = pairwise_mean(&map);
    MapResult {
        tiou: tiou.to_vec(),
        classes,
        ap,
        map,
        average_map,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gt(video: &str, start: f64, end: f64, label: i64) -> GtSegment {
        GtSegment {
            video: video.into(),
            start,
            end,
            label,
        }
    }

    fn det(video: &str, start: f64, end: f64, label: i64, score: f64) -> Detection {
        Detection {
            video: video.into(),
            start,
            end,
            label,
            score,
        }
    }

    #[test]
    fn thresholds_are_numpy_linspace() {
        let t = unav_tiou_thresholds();
        assert_eq!(t.len(), 9);
        // np.linspace(0.1, 0.9, 9)[2] == 0.30000000000000004, [6] == 0.7000000000000001
        assert_eq!(t[2], 0.30000000000000004);
        assert_eq!(t[6], 0.7000000000000001);
        assert_eq!(t[8], 0.9);
    }

    #[test]
    fn interpolated_ap_of_a_known_curve() {
        // TP, FP, TP with 2 ground truths: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
        let ap = interpolated_prec_rec(&[1.0, 0.5, 2.0 / 3.0], &[0.5, 0.5, 1.0]);
        assert!((ap - (0.5 + 0.5 * 2.0 / 3.0)).abs() < 1e-15);
    }

    #[test]
    fn duplicates_within_tolerance_and_same_label_are_dropped() {
        let ev = vec![
            (1.0, 2.0, json!(3)),
            (1.0005, 2.001, json!(3.0)),
            (1.0, 2.0, json!(4)),
            (1.0, 2.0011, json!(3)),
        ];
        assert_eq!(remove_duplicate_annotations(&ev, 1e-3), vec![0, 2, 3]);
    }

    #[test]
    fn list_labels_follow_the_official_formula() {
        assert_eq!(label_id(&json!([2, 5])).unwrap(), 8);
        assert_eq!(label_id(&json!(7.9)).unwrap(), 7);
        assert!(label_id(&json!("7")).is_err());
    }

    #[test]
    fn equal_scores_put_the_later_detection_first() {
        assert_eq!(
            argsort_descending(&[0.5, 0.7, 0.5, f64::NAN]),
            vec![3, 1, 2, 0]
        );
        // One ground truth, two equal-score detections on it: the second in the table takes it.
        let g = [gt("v", 0.0, 10.0, 0)];
        let d = [det("v", 0.0, 5.0, 0, 0.5), det("v", 0.0, 10.0, 0, 0.5)];
        let r = evaluate(&g, &d, &[0.9]);
        assert_eq!(r.ap[0][0], 1.0);
    }

    #[test]
    fn labels_without_ground_truth_fall_onto_the_class_index() {
        // Classes are labels {1, 5} -> indices {0, 1}; a detection labelled 1 becomes index 0,
        // one labelled 0 (no ground truth) stays 0 and competes in class index 0 as well.
        let g = [gt("v", 0.0, 10.0, 1), gt("v", 20.0, 30.0, 5)];
        let d = [
            det("v", 0.0, 10.0, 0, 0.9),
            det("v", 20.0, 30.0, 5, 0.8),
            det("v", 50.0, 60.0, 9, 0.7),
        ];
        let r = evaluate(&g, &d, &[0.5]);
        assert_eq!(r.classes, vec![1, 5]);
        assert_eq!(r.ap[0], vec![1.0, 1.0]);
    }

    #[test]
    fn a_class_without_detections_scores_zero_and_counts_in_the_mean() {
        let g = [gt("v", 0.0, 10.0, 0), gt("v", 0.0, 10.0, 1)];
        let d = [det("v", 0.0, 10.0, 0, 0.9), det("w", 0.0, 10.0, 0, 0.95)];
        let r = evaluate(&g, &d, &[0.5, 0.7]);
        // class 0: FP (no ground truth in video w) then TP -> AP 1 · 1/2.
        assert_eq!(r.ap[0], vec![0.5, 0.0]);
        assert_eq!(r.map, vec![0.25, 0.25]);
        assert_eq!(r.average_map, 0.25);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = parse_database(r#"{"database": {"v": [{"scores": NaN}]}}"#).unwrap_err();
        assert!(format!("{e:#}").contains("NaN"), "{e:#}");
        let db = parse_database(
            r#"{"database": {"v": [{"segment": [2, 1], "label_id": 0, "scores": 1}]}}"#,
        )
        .unwrap();
        let e = detections_from(&db).unwrap_err();
        assert!(format!("{e:#}").contains("ends before it starts"), "{e:#}");
        let db = parse_database(r#"{"database": {"v": {"subset": "Test", "annotations": []}}}"#)
            .unwrap();
        let e = ground_truth_from(&db, Some("val")).unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown split \"val\": the subsets are test"),
            "{e:#}"
        );
    }

    #[test]
    fn object_keys_keep_file_order_and_last_value() {
        let db = parse_database(r#"{"database": {"b": 1, "a": 2, "b": 3}}"#).unwrap();
        assert_eq!(
            db,
            vec![("b".to_string(), json!(3)), ("a".to_string(), json!(2))]
        );
    }

    #[test]
    fn numbers_parse_correctly_rounded() {
        // Needs serde_json's float_roundtrip: its default parser is off by one ulp here, which
        // flips the 1e-3 duplicate test of annotations 28.505 and 28.503999999999998.
        let db = parse_database(r#"{"database": {"v": 28.503999999999998}}"#).unwrap();
        assert_eq!(db[0].1.as_f64(), Some(28.503999999999998));
        assert!((28.505f64 - 28.503999999999998).abs() > 1e-3);
    }

    #[test]
    fn pairwise_sum_matches_numpy_blocks() {
        let a: Vec<f64> = (0..300).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let naive: f64 = a.iter().sum();
        assert!((pairwise_sum(&a) - naive).abs() < 1e-12);
        assert_eq!(pairwise_sum(&a[..5]), a[..5].iter().sum::<f64>());
    }
}
