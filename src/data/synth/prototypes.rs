//! Class prototypes: the unit-norm visual and audio patterns every event of a class adds to its
//! features. Related classes share components (see the module documentation of [`super`]).

use super::rng::Rng;
use super::{CLASS_GROUPS, NUM_GROUPS, visual_family};
use crate::data::annotations::NUM_CLASSES;

/// Weights of the group's and the class's own component in an audio prototype.
const GROUP_W: f32 = 0.6;
const OWN_W: f32 = 0.8;
/// Visual prototypes are dominated by the component of their visual *family* (two semantic
/// groups each, see [`visual_family`]; cosine ≈ 0.97 within a family), so vision alone
/// confuses related classes (a violin and a ukulele, a dog and a speaking man, a helicopter and
/// a race car look alike at this level) and sound, whose prototypes keep the weights above and
/// the finer groups, tells them apart.
const VISUAL_GROUP_W: f32 = 0.8;
const VISUAL_OWN_W: f32 = 0.15;
const VISUAL_GROUP_DENSITY: f32 = 0.06;
const VISUAL_OWN_DENSITY: f32 = 0.10;

/// Unit-norm class prototypes: `visual[c*dv..]`, `audio[c*da..]`.
pub(super) struct Prototypes {
    pub(super) dv: usize,
    pub(super) da: usize,
    visual: Vec<f32>,
    audio: Vec<f32>,
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

impl Prototypes {
    pub(super) fn new(seed: u64, dv: usize, da: usize) -> Prototypes {
        let mut rng = Rng::new(seed, 0);
        // Sparse non-negative vector: each channel active with probability `density`
        // (at least one active), active values 0.5 + |N(0,1)|.
        let sparse = |rng: &mut Rng, density: f32| {
            let mut v: Vec<f32> = (0..dv)
                .map(|_| {
                    let (u, z) = (rng.u01(), rng.normal());
                    if u < density { 0.5 + z.abs() } else { 0.0 }
                })
                .collect();
            if v.iter().all(|&x| x == 0.0) {
                v[rng.below(dv)] = 1.0;
            }
            normalize(&mut v);
            v
        };
        // Dense ReLU'd Gaussian (at least one positive channel).
        let relu = |rng: &mut Rng| {
            let mut v: Vec<f32> = (0..da).map(|_| rng.normal().max(0.0)).collect();
            if v.iter().all(|&x| x == 0.0) {
                v[rng.below(da)] = 1.0;
            }
            normalize(&mut v);
            v
        };
        let vg: Vec<Vec<f32>> = (0..NUM_GROUPS)
            .map(|_| sparse(&mut rng, VISUAL_GROUP_DENSITY))
            .collect();
        let vc: Vec<Vec<f32>> = (0..NUM_CLASSES)
            .map(|_| sparse(&mut rng, VISUAL_OWN_DENSITY))
            .collect();
        let ag: Vec<Vec<f32>> = (0..NUM_GROUPS).map(|_| relu(&mut rng)).collect();
        let ac: Vec<Vec<f32>> = (0..NUM_CLASSES).map(|_| relu(&mut rng)).collect();
        let mix = |g: &[f32], own: &[f32], (gw, ow): (f32, f32)| {
            let mut v: Vec<f32> = g.iter().zip(own).map(|(a, b)| gw * a + ow * b).collect();
            normalize(&mut v);
            v
        };
        let mut visual = Vec::with_capacity(NUM_CLASSES * dv);
        let mut audio = Vec::with_capacity(NUM_CLASSES * da);
        for c in 0..NUM_CLASSES {
            let g = CLASS_GROUPS[c] as usize;
            visual.extend(mix(
                &vg[visual_family(c)],
                &vc[c],
                (VISUAL_GROUP_W, VISUAL_OWN_W),
            ));
            audio.extend(mix(&ag[g], &ac[c], (GROUP_W, OWN_W)));
        }
        Prototypes {
            dv,
            da,
            visual,
            audio,
        }
    }
    pub(super) fn visual(&self, c: usize) -> &[f32] {
        &self.visual[c * self.dv..(c + 1) * self.dv]
    }
    pub(super) fn audio(&self, c: usize) -> &[f32] {
        &self.audio[c * self.da..(c + 1) * self.da]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prototypes_are_unit_nonnegative_and_seeded() {
        let p = Prototypes::new(0, 512, 128);
        for c in 0..NUM_CLASSES {
            for v in [p.visual(c), p.audio(c)] {
                assert!(v.iter().all(|&x| x >= 0.0));
                let n: f32 = v.iter().map(|x| x * x).sum();
                assert!((n - 1.0).abs() < 1e-4);
            }
            let active = p.visual(c).iter().filter(|&&x| x > 0.0).count();
            assert!(
                (40..=130).contains(&active),
                "class {c}: {active} active channels"
            );
        }
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        // Violin (7) and Mandolin (27) share a group; Violin and Bark (2) do not.
        assert!(dot(p.visual(7), p.visual(27)) > dot(p.visual(7), p.visual(2)) + 0.1);
        let q = Prototypes::new(1, 512, 128);
        assert_ne!(p.visual, q.visual);
        assert_eq!(p.visual, Prototypes::new(0, 512, 128).visual);
        // Tiny dims still give valid unit prototypes.
        let t = Prototypes::new(3, 1, 1);
        assert!(t.visual.iter().all(|&x| x == 1.0) && t.audio.iter().all(|&x| x == 1.0));
    }
}
