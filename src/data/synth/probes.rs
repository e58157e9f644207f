//! How hard the synthetic task is, measured rather than asserted once: oracle-score
//! separability per segment kind (the audio-visual property test) and linear probes, whose
//! numbers the module documentation of [`super`] quotes. Test code only.

use super::DEFAULT_NOISE;
use super::SynthConfig;
use super::generator::{CELLS, SegKind, synth_row};
use super::prototypes::Prototypes;
use super::rng::Rng;
use super::select::select_rows;
use crate::data::annotations::{BACKGROUND, T, builtin_annotations};
use crate::data::ave::NUM_LABELS;

pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// (kind, visual score, audio score) of one segment.
type Scored = (SegKind, f32, f32);

/// Per segment: (kind, visual score, audio score) of `n` rows chosen like `generate`.
fn scores(n: usize, noise: f32, seed: u64) -> Vec<Scored> {
    let cfg = SynthConfig {
        videos: n,
        noise,
        seed,
        ..SynthConfig::default()
    };
    let anns = builtin_annotations();
    let sel = select_rows(n).unwrap();
    let protos = Prototypes::new(seed, 512, 128);
    let (mut v, mut a) = (vec![0.0; T * CELLS * 512], vec![0.0; T * 128]);
    let mut out = Vec::new();
    for &r in &sel.rows {
        let kinds = synth_row(&cfg, &protos, r, &anns[r], &mut v, &mut a);
        let (pv, pa) = (protos.visual(anns[r].class), protos.audio(anns[r].class));
        for t in 0..T {
            let sv = (0..CELLS)
                .map(|k| dot(&v[(t * CELLS + k) * 512..(t * CELLS + k + 1) * 512], pv))
                .fold(f32::MIN, f32::max);
            let sa = dot(&a[t * 128..(t + 1) * 128], pa);
            out.push((kinds[t], sv, sa));
        }
    }
    out
}

struct Separability {
    /// Midpoint thresholds between present and absent means.
    th_v: f32,
    th_a: f32,
    /// Fraction of background segments called "event" by the best single threshold.
    bg_err_visual_only: f64,
    bg_err_audio_only: f64,
    /// Accuracy (event vs background) of the best single threshold.
    acc_visual_only: f64,
    acc_audio_only: f64,
    /// Accuracy of `visual > th_v && audio > th_a`.
    acc_and: f64,
    /// Fraction of background segments the AND calls "event".
    bg_err_and: f64,
}

fn separability(s: &[Scored]) -> Separability {
    let mean = |f: &dyn Fn(&Scored) -> Option<f32>| {
        let v: Vec<f32> = s.iter().filter_map(f).collect();
        v.iter().sum::<f32>() / v.len() as f32
    };
    let th_v = 0.5
        * (mean(&|x| x.0.visible().then_some(x.1)) + mean(&|x| (!x.0.visible()).then_some(x.1)));
    let th_a = 0.5
        * (mean(&|x| x.0.audible().then_some(x.2)) + mean(&|x| (!x.0.audible()).then_some(x.2)));
    let is_event = |k: SegKind| k == SegKind::Event;
    let n_bg = s.iter().filter(|x| !is_event(x.0)).count() as f64;
    // Best single threshold (over all observed values) for event-vs-background accuracy.
    let best = |score: &dyn Fn(&Scored) -> f32| {
        let mut cands: Vec<f32> = s.iter().map(score).collect();
        cands.sort_by(f32::total_cmp);
        let mut best = (0.0f64, 0.0f64);
        for th in cands.iter().step_by(7) {
            let correct = s
                .iter()
                .filter(|x| (score(x) > *th) == is_event(x.0))
                .count();
            let acc = correct as f64 / s.len() as f64;
            if acc > best.0 {
                let bg_err = s
                    .iter()
                    .filter(|x| !is_event(x.0) && score(x) > *th)
                    .count() as f64
                    / n_bg;
                best = (acc, bg_err);
            }
        }
        best
    };
    let (acc_visual_only, bg_err_visual_only) = best(&|x| x.1);
    let (acc_audio_only, bg_err_audio_only) = best(&|x| x.2);
    let acc_and = s
        .iter()
        .filter(|x| (x.1 > th_v && x.2 > th_a) == is_event(x.0))
        .count() as f64
        / s.len() as f64;
    let bg_err_and = s
        .iter()
        .filter(|x| !is_event(x.0) && x.1 > th_v && x.2 > th_a)
        .count() as f64
        / n_bg;
    Separability {
        th_v,
        th_a,
        bg_err_visual_only,
        bg_err_audio_only,
        acc_visual_only,
        acc_audio_only,
        acc_and,
        bg_err_and,
    }
}

/// The task is audio-visual: at the default noise, each kind has its score pattern, either
/// modality alone misclassifies many background segments, the AND of both is accurate.
#[test]
fn audio_visual_property() {
    let s = scores(300, DEFAULT_NOISE, 0);
    let sep = separability(&s);
    let frac = |k: SegKind, f: &dyn Fn(f32, f32) -> bool| {
        let v: Vec<_> = s.iter().filter(|x| x.0 == k).collect();
        assert!(v.len() > 30, "{k:?}: only {} segments", v.len());
        v.iter().filter(|x| f(x.1, x.2)).count() as f64 / v.len() as f64
    };
    let (tv, ta) = (sep.th_v, sep.th_a);
    let ev = frac(SegKind::Event, &|v, a| v > tv && a > ta);
    let off = frac(SegKind::OffScreen, &|v, a| v <= tv && a > ta);
    let sil = frac(SegKind::Silent, &|v, a| v > tv && a <= ta);
    let nei = frac(SegKind::Neither, &|v, a| v <= tv && a <= ta);
    eprintln!(
        "th_v {tv:.3} th_a {ta:.3}; pattern: event {ev:.3} off-screen {off:.3} silent {sil:.3} neither {nei:.3}; \
         visual-only acc {:.3} bg-err {:.3}; audio-only acc {:.3} bg-err {:.3}; AND acc {:.3} bg-err {:.3}",
        sep.acc_visual_only,
        sep.bg_err_visual_only,
        sep.acc_audio_only,
        sep.bg_err_audio_only,
        sep.acc_and,
        sep.bg_err_and
    );
    for (name, f) in [
        ("event", ev),
        ("off-screen", off),
        ("silent", sil),
        ("neither", nei),
    ] {
        assert!(
            f >= 0.9,
            "{name}: only {f:.3} of segments show the expected pattern"
        );
    }
    assert!(sep.bg_err_visual_only >= 0.25, "{}", sep.bg_err_visual_only);
    assert!(sep.bg_err_audio_only >= 0.25, "{}", sep.bg_err_audio_only);
    assert!(sep.acc_and >= 0.9, "{}", sep.acc_and);
    // The AND fixes the background segments either modality alone gets wrong.
    assert!(sep.bg_err_and <= 0.1, "{}", sep.bg_err_and);
    assert!(sep.acc_and > sep.acc_visual_only.max(sep.acc_audio_only));
}

/// Prints the separability for a range of noise levels (documentation; run with
/// `cargo test --release -- --ignored --nocapture noise_table`).
#[test]
#[ignore]
fn noise_table() {
    for noise in [0.0, 0.5, 1.0, 1.5, 2.0, 3.0] {
        let s = scores(300, noise, 0);
        let sep = separability(&s);
        for k in [
            SegKind::Event,
            SegKind::OffScreen,
            SegKind::Silent,
            SegKind::Neither,
        ] {
            let v: Vec<_> = s.iter().filter(|x| x.0 == k).collect();
            let ms = |f: &dyn Fn(&Scored) -> f32| {
                let m = v.iter().map(|x| f(x)).sum::<f32>() / v.len() as f32;
                let sd =
                    (v.iter().map(|x| (f(x) - m).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
                (m, sd)
            };
            eprintln!(
                "  {k:?} n={} visual {:?} audio {:?}",
                v.len(),
                ms(&|x| x.1),
                ms(&|x| x.2)
            );
        }
        eprintln!(
            "noise {noise:.1}: AND acc {:.3} (bg-err {:.3}); visual-only acc {:.3} (bg-err {:.3}); audio-only acc {:.3} (bg-err {:.3})",
            sep.acc_and,
            sep.bg_err_and,
            sep.acc_visual_only,
            sep.bg_err_visual_only,
            sep.acc_audio_only,
            sep.bg_err_audio_only
        );
    }
}

/// Softmax regression on standardized features; returns the test accuracy (29-way) and
/// the event-vs-background accuracy of its predictions.
fn softmax_probe(
    xtr: &[f32],
    ytr: &[u8],
    xte: &[f32],
    yte: &[u8],
    d: usize,
    epochs: usize,
) -> (f64, f64) {
    let (xtr, xte) = standardized(xtr, xte, d);
    let mut model = Linear {
        w: vec![0.0f32; C * d],
        b: vec![0.0f32; C],
        d,
    };
    let mut adam = Adam::new(C * d);
    let mut rng = Rng::new(99, 0);
    let mut idx: Vec<usize> = (0..ytr.len()).collect();
    for _ in 0..epochs {
        for i in (1..ytr.len()).rev() {
            idx.swap(i, rng.below(i + 1));
        }
        for batch in idx.chunks(256) {
            let (gw, gb) = model.gradients(&xtr, ytr, batch);
            adam.step(&mut model, &gw, &gb);
        }
    }
    model.score(&xte, yte)
}

/// Classes of the probes (28 events + background).
const C: usize = NUM_LABELS;

/// `xtr` and `xte` (rows of `d`) standardized with the train set's mean and deviation.
fn standardized(xtr: &[f32], xte: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let ntr = xtr.len() / d;
    let mut mean = vec![0.0f32; d];
    let mut sd = vec![0.0f32; d];
    for row in xtr.chunks(d) {
        for j in 0..d {
            mean[j] += row[j] / ntr as f32;
        }
    }
    for row in xtr.chunks(d) {
        for j in 0..d {
            sd[j] += (row[j] - mean[j]).powi(2) / ntr as f32;
        }
    }
    sd.iter_mut().for_each(|s| *s = s.sqrt().max(1e-6));
    let norm = |x: &[f32]| -> Vec<f32> {
        x.chunks(d)
            .flat_map(|r| (0..d).map(|j| (r[j] - mean[j]) / sd[j]).collect::<Vec<_>>())
            .collect()
    };
    (norm(xtr), norm(xte))
}

/// A linear classifier: `C` rows of `d` weights and a bias each.
struct Linear {
    w: Vec<f32>,
    b: Vec<f32>,
    d: usize,
}

impl Linear {
    fn logits(&self, x: &[f32]) -> [f32; C] {
        let d = self.d;
        let mut z = [0.0f32; C];
        for (c, zc) in z.iter_mut().enumerate() {
            *zc = self.b[c] + dot(&self.w[c * d..(c + 1) * d], x);
        }
        z
    }

    /// Mean cross-entropy gradients over `batch` (indices into the rows of `x`).
    fn gradients(&self, x: &[f32], y: &[u8], batch: &[usize]) -> (Vec<f32>, [f32; C]) {
        let d = self.d;
        let mut gw = vec![0.0f32; C * d];
        let mut gb = [0.0f32; C];
        for &i in batch {
            let x = &x[i * d..(i + 1) * d];
            let z = self.logits(x);
            let m = z.iter().copied().fold(f32::MIN, f32::max);
            let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
            let sum: f32 = e.iter().sum();
            for c in 0..C {
                let g = (e[c] / sum - f32::from(c == y[i] as usize)) / batch.len() as f32;
                gb[c] += g;
                for (gwj, xj) in gw[c * d..(c + 1) * d].iter_mut().zip(x) {
                    *gwj += g * xj;
                }
            }
        }
        (gw, gb)
    }

    /// 29-way accuracy and event-vs-background accuracy on `(x, y)`.
    fn score(&self, x: &[f32], labels: &[u8]) -> (f64, f64) {
        let (mut ok, mut ok_eb) = (0usize, 0usize);
        for (i, &y) in labels.iter().enumerate() {
            let z = self.logits(&x[i * self.d..(i + 1) * self.d]);
            let pred = (0..C).max_by(|&p, &q| z[p].total_cmp(&z[q])).unwrap();
            ok += usize::from(pred == y as usize);
            ok_eb += usize::from((pred == BACKGROUND) == (y as usize == BACKGROUND));
        }
        let n = labels.len() as f64;
        (ok as f64 / n, ok_eb as f64 / n)
    }
}

/// Adam (lr 3e-3, betas 0.9/0.999) with weight decay 1e-4 on the weights.
struct Adam {
    mw: Vec<f32>,
    vw: Vec<f32>,
    mb: [f32; C],
    vb: [f32; C],
    step: i32,
}

impl Adam {
    fn new(n: usize) -> Adam {
        Adam {
            mw: vec![0.0; n],
            vw: vec![0.0; n],
            mb: [0.0; C],
            vb: [0.0; C],
            step: 0,
        }
    }

    fn step(&mut self, model: &mut Linear, gw: &[f32], gb: &[f32; C]) {
        let (lr, wd) = (3e-3f32, 1e-4f32);
        self.step += 1;
        let (b1, b2) = (0.9f32, 0.999f32);
        let (c1, c2) = (1.0 - b1.powi(self.step), 1.0 - b2.powi(self.step));
        for k in 0..model.w.len() {
            let g = gw[k] + wd * model.w[k];
            self.mw[k] = b1 * self.mw[k] + (1.0 - b1) * g;
            self.vw[k] = b2 * self.vw[k] + (1.0 - b2) * g * g;
            model.w[k] -= lr * (self.mw[k] / c1) / ((self.vw[k] / c2).sqrt() + 1e-8);
        }
        for c in 0..C {
            self.mb[c] = b1 * self.mb[c] + (1.0 - b1) * gb[c];
            self.vb[c] = b2 * self.vb[c] + (1.0 - b2) * gb[c] * gb[c];
            model.b[c] -= lr * (self.mb[c] / c1) / ((self.vb[c] / c2).sqrt() + 1e-8);
        }
    }
}

/// Linear probes (softmax regression, 29-way per segment) on the cell-mean visual features,
/// the audio features and their concatenation; trained on the train split, scored on the
/// test split. Documentation of the difficulty; run with
/// `SYNTH_PROBE_N=4143 SYNTH_PROBE_NOISE=1 cargo test --release -- --ignored --nocapture linear_probe`.
#[test]
#[ignore]
fn linear_probe_report() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let n: usize = env("SYNTH_PROBE_N", "1200").parse().unwrap();
    let epochs: usize = env("SYNTH_PROBE_EPOCHS", "15").parse().unwrap();
    let anns = builtin_annotations();
    let sel = select_rows(n).unwrap();
    let protos = Prototypes::new(0, 512, 128);
    for noise in env("SYNTH_PROBE_NOISE", "1").split(',') {
        let cfg = SynthConfig {
            videos: n,
            noise: noise.parse().unwrap(),
            ..SynthConfig::default()
        };
        const D: usize = 512 + 128;
        let mut feats = vec![0.0f32; n * T * D];
        let mut ys = vec![0u8; n * T];
        let (mut v, mut a) = (vec![0.0; T * CELLS * 512], vec![0.0; T * 128]);
        for (i, &r) in sel.rows.iter().enumerate() {
            synth_row(&cfg, &protos, r, &anns[r], &mut v, &mut a);
            for (t, y) in anns[r].segment_labels().into_iter().enumerate() {
                let f = &mut feats[(i * T + t) * D..(i * T + t + 1) * D];
                for k in 0..CELLS {
                    for (fj, x) in f[..512].iter_mut().zip(&v[(t * CELLS + k) * 512..]) {
                        *fj += x / CELLS as f32;
                    }
                }
                f[512..].copy_from_slice(&a[t * 128..(t + 1) * 128]);
                ys[i * T + t] = y as u8;
            }
        }
        let gather = |split: usize, lo: usize, hi: usize| {
            let mut x = Vec::new();
            let mut y = Vec::new();
            for &i in &sel.orders[split] {
                for t in 0..T {
                    x.extend_from_slice(&feats[(i * T + t) * D + lo..(i * T + t) * D + hi]);
                    y.push(ys[i * T + t]);
                }
            }
            (x, y)
        };
        let bg = |y: &[u8]| {
            y.iter().filter(|&&c| c as usize == BACKGROUND).count() as f64 / y.len() as f64
        };
        for (name, lo, hi) in [
            ("visual", 0, 512),
            ("audio", 512, D),
            ("visual+audio", 0, D),
        ] {
            let (xtr, ytr) = gather(0, lo, hi);
            let (xte, yte) = gather(2, lo, hi);
            let (acc, acc_eb) = softmax_probe(&xtr, &ytr, &xte, &yte, hi - lo, epochs);
            eprintln!(
                "noise {noise} N {n}: {name:>12} probe: 29-way acc {acc:.3}, event/background acc {acc_eb:.3} (test background share {:.3})",
                bg(&yte)
            );
        }
    }
}
