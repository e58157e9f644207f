//! The generator: one video's features from its annotation, the seed and the prototypes (see
//! the module documentation of [`super`] for what is drawn and why).
//!
//! Every draw comes from the row's own random stream in a fixed order (per-video plan, then the
//! visual map, then the audio), so a row depends only on `(seed, noise, dims, original row)`;
//! `tests/synth.rs` pins the streams, so the order of the draws must not change.

use super::prototypes::Prototypes;
use super::rng::Rng;
use super::{CLASS_GROUPS, P_OFF_SCREEN, P_SILENT, SynthConfig};
use crate::data::annotations::{Annotation, BACKGROUND, NUM_CLASSES, T};
use crate::data::ave::GRID;

// Amplitudes (prototypes are unit-norm) and noise scales at `noise = 1`.
pub(super) const VISUAL_AMP: f32 = 2.5;
pub(super) const AUDIO_AMP: f32 = 3.0;
pub(super) const DISTRACTOR_AMP: f32 = 0.6;
pub(super) const VISUAL_CLUTTER: f32 = 0.5;
pub(super) const SCENE_W: f32 = 0.75;
pub(super) const FRESH_W: f32 = 0.66;
pub(super) const AUDIO_NOISE: f32 = 0.5;
pub(super) const AUDIO_BG_W: f32 = 0.6;
pub(super) const AUDIO_FRESH_W: f32 = 0.8;
pub(super) const GAIN_LO: f32 = 0.75;
pub(super) const GAIN_HI: f32 = 1.25;
pub(super) const JITTER_LO: f32 = 0.85;
pub(super) const JITTER_HI: f32 = 1.15;
pub(super) const BLOB_MIN: usize = 2;
pub(super) const BLOB_MAX: usize = 6;
pub(super) const P_DRIFT: f32 = 0.5;
const P_DISTRACTOR_SAME_GROUP: f32 = 0.7;

pub(super) const CELLS: usize = GRID * GRID;

/// What a segment shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SegKind {
    /// Labelled event: object visible and sound audible.
    Event,
    /// Background: sound audible, object not visible.
    OffScreen,
    /// Background: object visible, silent.
    Silent,
    /// Background: neither.
    Neither,
}

impl SegKind {
    pub(super) fn visible(self) -> bool {
        matches!(self, SegKind::Event | SegKind::Silent)
    }
    pub(super) fn audible(self) -> bool {
        matches!(self, SegKind::Event | SegKind::OffScreen)
    }
}

/// Generates one row (original AVE row `orig`, annotation `ann`): `visual` `[T,7,7,dv]`,
/// `audio` `[T,da]`. Depends only on (seed, noise, dims, orig, ann).
pub(super) fn synth_row(
    cfg: &SynthConfig,
    protos: &Prototypes,
    orig: usize,
    ann: &Annotation,
    visual: &mut [f32],
    audio: &mut [f32],
) -> [SegKind; T] {
    debug_assert_eq!(visual.len(), T * CELLS * protos.dv);
    debug_assert_eq!(audio.len(), T * protos.da);
    let mut rng = Rng::new(cfg.seed, orig as u64 + 1);
    let plan = Plan::draw(&mut rng, ann);
    write_visual(&mut rng, cfg.noise, protos, ann.class, &plan, visual);
    write_audio(&mut rng, cfg.noise, protos.audio(ann.class), &plan, audio);
    plan.kinds
}

/// What is fixed for a whole video before any feature value is drawn.
struct Plan {
    gain_v: f32,
    gain_a: f32,
    blob: Blob,
    distractor: Distractor,
    kinds: [SegKind; T],
    /// Per-segment amplitude jitter of the object (visual) and of its sound (audio).
    jit_v: [f32; T],
    jit_a: [f32; T],
}

impl Plan {
    fn draw(rng: &mut Rng, ann: &Annotation) -> Plan {
        let gain_v = rng.uniform(GAIN_LO, GAIN_HI);
        let gain_a = rng.uniform(GAIN_LO, GAIN_HI);
        let blob = Blob::draw(rng);
        let distractor = Distractor::draw(rng, ann.class, &blob.covered());
        let labels = ann.segment_labels();
        let mut kinds = [SegKind::Event; T];
        let mut jit_v = [0.0f32; T];
        let mut jit_a = [0.0f32; T];
        for t in 0..T {
            let u = rng.u01();
            kinds[t] = if labels[t] != BACKGROUND {
                SegKind::Event
            } else if u < P_OFF_SCREEN {
                SegKind::OffScreen
            } else if u < P_OFF_SCREEN + P_SILENT {
                SegKind::Silent
            } else {
                SegKind::Neither
            };
            jit_v[t] = rng.uniform(JITTER_LO, JITTER_HI);
            jit_a[t] = rng.uniform(JITTER_LO, JITTER_HI);
        }
        Plan {
            gain_v,
            gain_a,
            blob,
            distractor,
            kinds,
            jit_v,
            jit_a,
        }
    }
}

/// The object on the 7x7 grid: a fixed shape of edge-connected cells with a weight each, and
/// its position every second.
struct Blob {
    /// `(row, col)` of each cell relative to the shape's top-left corner; cell 0 first.
    shape: Vec<(i32, i32)>,
    /// 1 for cell 0, `U(0.6, 1)` for the others.
    weights: Vec<f32>,
    /// Top-left corner per second.
    pos: [(i32, i32); T],
}

impl Blob {
    fn draw(rng: &mut Rng) -> Blob {
        let shape = grow_shape(rng);
        let h = shape.iter().map(|p| p.0).max().unwrap() + 1;
        let w = shape.iter().map(|p| p.1).max().unwrap() + 1;
        let weights: Vec<f32> = (0..shape.len())
            .map(|k| if k == 0 { 1.0 } else { rng.uniform(0.6, 1.0) })
            .collect();
        let pos = drift(rng, GRID as i32 - h, GRID as i32 - w);
        Blob {
            shape,
            weights,
            pos,
        }
    }

    /// Grid cell (row-major index) of blob cell `k` at second `t`.
    fn cell(&self, t: usize, k: usize) -> usize {
        let (pos, shape) = (self.pos[t], self.shape[k]);
        ((pos.0 + shape.0) as usize) * GRID + (pos.1 + shape.1) as usize
    }

    /// The cells the object covers in any second.
    fn covered(&self) -> [bool; CELLS] {
        let mut covered = [false; CELLS];
        for t in 0..T {
            for k in 0..self.shape.len() {
                covered[self.cell(t, k)] = true;
            }
        }
        covered
    }
}

/// A random shape of `BLOB_MIN..=BLOB_MAX` edge-connected cells, grown from `(0, 0)` and moved
/// so that its top-left corner is `(0, 0)`.
fn grow_shape(rng: &mut Rng) -> Vec<(i32, i32)> {
    let size = BLOB_MIN + rng.below(BLOB_MAX - BLOB_MIN + 1);
    let mut shape: Vec<(i32, i32)> = vec![(0, 0)];
    while shape.len() < size {
        let (r, c) = shape[rng.below(shape.len())];
        let (dr, dc) = [(0, 1), (1, 0), (0, -1), (-1, 0)][rng.below(4)];
        let cand = (r + dr, c + dc);
        if !shape.contains(&cand) {
            shape.push(cand);
        }
    }
    let (min_r, min_c) = (
        shape.iter().map(|p| p.0).min().unwrap(),
        shape.iter().map(|p| p.1).min().unwrap(),
    );
    for p in &mut shape {
        p.0 -= min_r;
        p.1 -= min_c;
    }
    shape
}

/// Position per second, inside `0..=max_r` x `0..=max_c`: a random start, then at most one
/// cell of movement between consecutive seconds.
fn drift(rng: &mut Rng, max_r: i32, max_c: i32) -> [(i32, i32); T] {
    let mut pos = [(0i32, 0i32); T];
    pos[0] = (
        rng.below(max_r as usize + 1) as i32,
        rng.below(max_c as usize + 1) as i32,
    );
    for t in 1..T {
        let (mut r, mut c) = pos[t - 1];
        if rng.u01() < P_DRIFT {
            r = (r + rng.below(3) as i32 - 1).clamp(0, max_r);
            c = (c + rng.below(3) as i32 - 1).clamp(0, max_c);
        }
        pos[t] = (r, c);
    }
    pos
}

/// Another class's object (same group preferred) on 1–2 cells the object never covers, in
/// every second.
struct Distractor {
    class: usize,
    amp: f32,
    cells: Vec<usize>,
}

impl Distractor {
    fn draw(rng: &mut Rng, class: usize, covered: &[bool; CELLS]) -> Distractor {
        let group = CLASS_GROUPS[class];
        let same: Vec<usize> = (0..NUM_CLASSES)
            .filter(|&c| c != class && CLASS_GROUPS[c] == group)
            .collect();
        let distractor_class = if !same.is_empty() && rng.u01() < P_DISTRACTOR_SAME_GROUP {
            same[rng.below(same.len())]
        } else {
            let c = rng.below(NUM_CLASSES - 1);
            if c >= class { c + 1 } else { c }
        };
        let amp = DISTRACTOR_AMP * rng.uniform(GAIN_LO, GAIN_HI);
        Distractor {
            class: distractor_class,
            amp,
            cells: distractor_cells(rng, covered),
        }
    }
}

/// A free cell and, with probability 0.5, a free neighbour of it (none when the object covers
/// the whole grid).
fn distractor_cells(rng: &mut Rng, covered: &[bool; CELLS]) -> Vec<usize> {
    let free: Vec<usize> = (0..CELLS).filter(|&k| !covered[k]).collect();
    let mut cells = Vec::new();
    if !free.is_empty() {
        let first = free[rng.below(free.len())];
        cells.push(first);
        let (r, c) = ((first / GRID) as i32, (first % GRID) as i32);
        let nb: Vec<usize> = [(0, 1), (1, 0), (0, -1), (-1, 0)]
            .iter()
            .map(|(dr, dc)| (r + dr, c + dc))
            .filter(|&(r, c)| (0..GRID as i32).contains(&r) && (0..GRID as i32).contains(&c))
            .map(|(r, c)| r as usize * GRID + c as usize)
            .filter(|&k| !covered[k])
            .collect();
        if rng.u01() < 0.5 && !nb.is_empty() {
            cells.push(nb[rng.below(nb.len())]);
        }
    }
    cells
}

/// The visual maps `[T,7,7,dv]`: clutter from a per-video scene and fresh noise on every cell,
/// the distractor, and the object's prototype on its blob when it is visible.
fn write_visual(
    rng: &mut Rng,
    noise: f32,
    protos: &Prototypes,
    class: usize,
    plan: &Plan,
    visual: &mut [f32],
) {
    let dv = protos.dv;
    let scene: Vec<f32> = (0..CELLS * dv).map(|_| SCENE_W * rng.normal()).collect();
    let pc = protos.visual(class);
    let pd = protos.visual(plan.distractor.class);
    for t in 0..T {
        let seg = &mut visual[t * CELLS * dv..(t + 1) * CELLS * dv];
        for (x, s) in seg.iter_mut().zip(&scene) {
            *x = noise * VISUAL_CLUTTER * (s + FRESH_W * rng.normal()).max(0.0);
        }
        for &k in &plan.distractor.cells {
            for (x, p) in seg[k * dv..(k + 1) * dv].iter_mut().zip(pd) {
                *x += plan.distractor.amp * p;
            }
        }
        if plan.kinds[t].visible() {
            for (k, wk) in plan.blob.weights.iter().enumerate() {
                let amp = VISUAL_AMP * plan.gain_v * plan.jit_v[t] * wk;
                let c = plan.blob.cell(t, k);
                for (x, p) in seg[c * dv..(c + 1) * dv].iter_mut().zip(pc) {
                    *x += amp * p;
                }
            }
        }
    }
}

/// The audio `[T,da]`: the class's sound `qc` when audible over a per-video background sound
/// and fresh noise, rectified.
fn write_audio(rng: &mut Rng, noise: f32, qc: &[f32], plan: &Plan, audio: &mut [f32]) {
    let da = qc.len();
    let bg: Vec<f32> = (0..da).map(|_| AUDIO_BG_W * rng.normal()).collect();
    for t in 0..T {
        let amp = if plan.kinds[t].audible() {
            AUDIO_AMP * plan.gain_a * plan.jit_a[t]
        } else {
            0.0
        };
        for ((x, b), q) in audio[t * da..(t + 1) * da].iter_mut().zip(&bg).zip(qc) {
            *x = (amp * q + noise * AUDIO_NOISE * (b + AUDIO_FRESH_W * rng.normal())).max(0.0);
        }
    }
}

/// Generates `rows` (original AVE rows) into `vis`/`aud` (row-major), splitting the rows over
/// up to four threads; returns the segment kinds of every row.
pub(super) fn synth_rows(
    cfg: &SynthConfig,
    protos: &Prototypes,
    rows: &[usize],
    all: &[Annotation],
    vis: &mut [f32],
    aud: &mut [f32],
) -> Vec<[SegKind; T]> {
    let vrow = vis.len() / rows.len();
    let arow = aud.len() / rows.len();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(rows.len());
    let per = rows.len().div_ceil(threads);
    let mut out = vec![[SegKind::Event; T]; rows.len()];
    std::thread::scope(|s| {
        for ((rs, (vs, as_)), ks) in rows
            .chunks(per)
            .zip(vis.chunks_mut(per * vrow).zip(aud.chunks_mut(per * arow)))
            .zip(out.chunks_mut(per))
        {
            s.spawn(move || {
                for (j, &r) in rs.iter().enumerate() {
                    ks[j] = synth_row(
                        cfg,
                        protos,
                        r,
                        &all[r],
                        &mut vs[j * vrow..(j + 1) * vrow],
                        &mut as_[j * arow..(j + 1) * arow],
                    );
                }
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::annotations::builtin_annotations;
    use crate::data::ave::AVE_ROWS;
    use crate::data::synth::probes::dot;

    /// Blob geometry: 2–6 connected cells, drift ≤ 1 cell per second; distractor elsewhere.
    #[test]
    fn blob_geometry() {
        const D: usize = 64;
        let anns = builtin_annotations();
        let cfg = SynthConfig {
            noise: 0.0,
            visual_dim: D,
            audio_dim: 4,
            ..SynthConfig::default()
        };
        let protos = Prototypes::new(cfg.seed, D, 4);
        let (mut v, mut a) = (vec![0.0; T * CELLS * D], vec![0.0; T * 4]);
        let mut with_distractor = 0;
        for r in (0..AVE_ROWS).step_by(37) {
            let kinds = synth_row(&cfg, &protos, r, &anns[r], &mut v, &mut a);
            let pc = protos.visual(anns[r].class);
            let mut prev: Option<(usize, Vec<(i32, i32)>)> = None;
            let mut other_cells: Option<Vec<usize>> = None;
            for t in 0..T {
                // With noise 0, object cells are positive multiples of P_c, distractor cells of
                // another prototype, all other cells zero.
                let (mut cells, mut others) = (Vec::new(), Vec::new());
                for k in 0..CELLS {
                    let x = &v[(t * CELLS + k) * D..(t * CELLS + k + 1) * D];
                    let n = dot(x, x).sqrt();
                    if n == 0.0 {
                        continue;
                    }
                    if dot(x, pc) / n > 0.9999 {
                        cells.push(((k / GRID) as i32, (k % GRID) as i32));
                    } else {
                        others.push(k);
                    }
                }
                // The distractor is static and 1–2 cells.
                assert!(others.len() <= 2, "row {r} t {t}: {others:?}");
                match &other_cells {
                    Some(o) => assert_eq!(o, &others, "row {r} t {t}"),
                    None => other_cells = Some(others),
                }
                if kinds[t].visible() {
                    assert!(
                        (BLOB_MIN..=BLOB_MAX).contains(&cells.len()),
                        "row {r} t {t}: {cells:?}"
                    );
                    if let Some((tp, p)) = &prev {
                        // Same shape, translated by at most one cell per second.
                        let (dr, dc) = (cells[0].0 - p[0].0, cells[0].1 - p[0].1);
                        let max = (t - tp) as i32;
                        assert!(dr.abs() <= max && dc.abs() <= max, "row {r} t {t}");
                        let mut moved: Vec<(i32, i32)> =
                            p.iter().map(|&(a, b)| (a + dr, b + dc)).collect();
                        moved.sort_unstable();
                        assert_eq!(moved, cells, "row {r} t {t}");
                    }
                    prev = Some((t, cells));
                } else {
                    assert!(cells.is_empty(), "row {r} t {t}: {cells:?}");
                }
                let aud = &a[t * 4..(t + 1) * 4];
                assert_eq!(aud.iter().any(|&x| x > 0.0), kinds[t].audible());
            }
            with_distractor += usize::from(!other_cells.unwrap().is_empty());
        }
        assert!(with_distractor > 100, "{with_distractor}");
    }

    #[test]
    fn rows_are_deterministic_and_independent_of_the_subset() {
        let anns = builtin_annotations();
        let cfg = SynthConfig {
            visual_dim: 16,
            audio_dim: 8,
            ..SynthConfig::default()
        };
        let protos = Prototypes::new(0, 16, 8);
        let row = |cfg: &SynthConfig, r: usize| {
            let (mut v, mut a) = (vec![0.0; T * CELLS * 16], vec![0.0; T * 8]);
            synth_row(cfg, &protos, r, &anns[r], &mut v, &mut a);
            (v, a)
        };
        assert_eq!(row(&cfg, 26), row(&cfg, 26));
        assert_ne!(row(&cfg, 26), row(&cfg, 27));
        let other = SynthConfig {
            seed: 1,
            ..cfg.clone()
        };
        assert_ne!(row(&cfg, 26).0, row(&other, 26).0);
        // Chunked multi-threaded generation equals row-by-row generation.
        let rows = [3usize, 26, 400, 4142];
        let (mut v, mut a) = (vec![0.0; 4 * T * CELLS * 16], vec![0.0; 4 * T * 8]);
        synth_rows(&cfg, &protos, &rows, &anns, &mut v, &mut a);
        for (j, &r) in rows.iter().enumerate() {
            let (rv, ra) = row(&cfg, r);
            assert_eq!(&v[j * rv.len()..(j + 1) * rv.len()], &rv[..]);
            assert_eq!(&a[j * ra.len()..(j + 1) * ra.len()], &ra[..]);
        }
        // Row 26 has no event: all background, kinds from its own category.
        let (mut v, mut a) = (vec![0.0; T * CELLS * 16], vec![0.0; T * 8]);
        let k = synth_row(&cfg, &protos, 26, &anns[26], &mut v, &mut a);
        assert!(k.iter().all(|&k| k != SegKind::Event));
    }
}
