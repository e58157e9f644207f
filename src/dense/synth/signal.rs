//! Class prototypes and the per-snippet features: an event's class shows in both modalities
//! over its span, noise elsewhere.

use super::UnavSynthConfig;
use super::plan::SynthVideo;
use crate::data::synth::rng::Rng;
use crate::dense::data::features::Matrix;

/// Unit prototypes per class: visual (`rgb_dim + flow_dim`) and audio (`audio_dim`).
pub struct Prototypes {
    pub visual: Vec<Vec<f32>>,
    pub audio: Vec<Vec<f32>>,
}

impl Prototypes {
    pub fn new(cfg: &UnavSynthConfig) -> Prototypes {
        let mut r = Rng::new(cfg.seed, 0);
        let visual = unit_vectors(&mut r, cfg.classes, cfg.rgb_dim + cfg.flow_dim);
        let audio = unit_vectors(&mut r, cfg.classes, cfg.audio_dim);
        Prototypes { visual, audio }
    }
}

/// `k` random unit vectors in `d` dimensions, Gram–Schmidt-orthogonalised while `d` allows.
fn unit_vectors(r: &mut Rng, k: usize, d: usize) -> Vec<Vec<f32>> {
    let mut out: Vec<Vec<f32>> = Vec::with_capacity(k);
    for i in 0..k {
        let mut v: Vec<f32> = (0..d).map(|_| r.normal()).collect();
        if i < d {
            for u in &out[..i] {
                let dot: f32 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
            }
        }
        let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|a| *a /= norm);
        out.push(v);
    }
    out
}

/// Snippets of a video: `⌊(duration·fps − num_frames)/feat_stride⌋ + 1` (at least 1).
pub fn snippet_count(cfg: &UnavSynthConfig, duration: f64) -> usize {
    let frames = (duration * cfg.fps).floor();
    let n = (frames - cfg.num_frames as f64) / cfg.feat_stride as f64;
    n.floor().max(0.0) as usize + 1
}

/// Time (s) of snippet `t`: the centre of its frames, where the official loader puts grid
/// point `t`.
pub fn snippet_time(cfg: &UnavSynthConfig, t: usize) -> f64 {
    (t as f64 * cfg.feat_stride as f64 + 0.5 * cfg.num_frames as f64) / cfg.fps
}

/// The three `T × C` matrices (RGB, flow, VGGish) of video `i`.
pub fn video_features(
    cfg: &UnavSynthConfig,
    p: &Prototypes,
    v: &SynthVideo,
    i: usize,
) -> [Matrix; 3] {
    let mut r = Rng::new(cfg.seed, (1 << 32) + i as u64);
    let t_len = snippet_count(cfg, v.duration);
    let dv = cfg.rgb_dim + cfg.flow_dim;
    let mut visual = vec![0f32; t_len * dv];
    let mut audio = vec![0f32; t_len * cfg.audio_dim];
    visual
        .iter_mut()
        .chain(audio.iter_mut())
        .for_each(|x| *x = cfg.noise * r.normal());
    for e in &v.events {
        let gain = cfg.amplitude * r.uniform_f64(0.8, 1.2) as f32;
        for t in (0..t_len).filter(|&t| (e.start..=e.end).contains(&snippet_time(cfg, t))) {
            add(&mut visual[t * dv..(t + 1) * dv], &p.visual[e.class], gain);
            let a = cfg.audio_dim;
            add(&mut audio[t * a..(t + 1) * a], &p.audio[e.class], gain);
        }
    }
    let split = |m: &[f32], lo: usize, hi: usize| Matrix {
        rows: t_len,
        cols: hi - lo,
        data: m.chunks(dv).flat_map(|row| row[lo..hi].to_vec()).collect(),
    };
    let audio = Matrix {
        rows: t_len,
        cols: cfg.audio_dim,
        data: audio,
    };
    [
        split(&visual, 0, cfg.rgb_dim),
        split(&visual, cfg.rgb_dim, dv),
        audio,
    ]
}

fn add(dst: &mut [f32], proto: &[f32], gain: f32) {
    dst.iter_mut().zip(proto).for_each(|(d, p)| *d += gain * p);
}
