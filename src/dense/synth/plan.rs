//! The videos and their events (subsets, durations, boundaries, classes) and the annotation
//! JSON describing them.

use serde_json::{Value, json};

use super::UnavSynthConfig;
use crate::data::synth::rng::Rng;

/// One generated event, seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthEvent {
    pub start: f64,
    pub end: f64,
    pub class: usize,
}

/// One generated video.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthVideo {
    pub id: String,
    pub subset: &'static str,
    pub duration: f64,
    pub fps: f64,
    pub events: Vec<SynthEvent>,
}

/// Label name of class `c`.
pub fn class_name(c: usize) -> String {
    format!("synthetic event {c:02}")
}

/// Rounds to 0.01 s (the JSON carries two decimals).
fn centi(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// All videos: subsets 70/15/15 in id order, durations, events (see the module doc).
pub fn plan_videos(cfg: &UnavSynthConfig) -> Vec<SynthVideo> {
    let n = cfg.videos;
    let n_val = ((n as f64 * 0.15).round() as usize).max(1);
    let n_test = n_val;
    let n_train = n - n_val - n_test;
    (0..n)
        .map(|i| {
            let subset = match i {
                i if i < n_train => "train",
                i if i < n_train + n_val => "validation",
                _ => "test",
            };
            plan_video(cfg, i, subset)
        })
        .collect()
}

fn plan_video(cfg: &UnavSynthConfig, i: usize, subset: &'static str) -> SynthVideo {
    let mut r = Rng::new(cfg.seed, i as u64 + 1);
    let duration = centi(r.uniform_f64(cfg.min_duration, cfg.max_duration));
    let count = 1 + r.below(cfg.max_events);
    let events = (0..count)
        .map(|_| {
            let class = r.below(cfg.classes);
            let len = r.uniform_f64(2.0, duration / 2.0);
            let start = centi(r.uniform_f64(0.0, duration - len));
            let end = centi(start + len).min(duration);
            SynthEvent { start, end, class }
        })
        .collect();
    SynthVideo {
        id: format!("synth_{i:05}"),
        subset,
        duration,
        fps: cfg.fps,
        events,
    }
}

/// `{"database": {id: {"subset", "duration", "fps", "annotations": [...]}}}`.
pub(super) fn annotation_json(videos: &[SynthVideo]) -> Value {
    let db: serde_json::Map<String, Value> = videos
        .iter()
        .map(|v| {
            let anns: Vec<Value> = v
                .events
                .iter()
                .map(|e| json!({"segment": [e.start, e.end], "label": class_name(e.class), "label_id": e.class}))
                .collect();
            let entry = json!({"subset": v.subset, "duration": v.duration, "fps": v.fps, "annotations": anns});
            (v.id.clone(), entry)
        })
        .collect();
    json!({"version": "cace-net synthetic UnAV layout", "database": db})
}

pub(super) fn summary(videos: &[SynthVideo]) -> super::UnavSynthSummary {
    let count = |s: &str| videos.iter().filter(|v| v.subset == s).count();
    let overlapping = videos
        .iter()
        .map(|v| {
            let ev = &v.events;
            (0..ev.len())
                .filter(|&a| {
                    (0..ev.len())
                        .any(|b| a != b && ev[a].start < ev[b].end && ev[b].start < ev[a].end)
                })
                .count()
        })
        .sum();
    super::UnavSynthSummary {
        videos: videos.len(),
        train: count("train"),
        validation: count("validation"),
        test: count("test"),
        events: videos.iter().map(|v| v.events.len()).sum(),
        overlapping,
    }
}
