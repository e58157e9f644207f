//! Synthetic AVE-layout dataset: real AVE labels and splits, generated features.
//!
//! [`generate`] writes a directory that [`super::ave::AveDir::open`] reads like the real AVE
//! data: `visual_feature.h5` `[N,10,7,7,Cv]`, `audio_feature.h5` `[N,10,Ca]` (key `avadataset`,
//! float64 by default), `labels.h5` `[N,10,29]` (float32 one-hot, 28 = background),
//! `{train,val,test}_order.h5` (key `order`, int64), `Annotations.txt` (the `N` chosen AVE lines
//! in row order) and [`SYNTH_INFO_FILE`] (generator parameters, seed, summary and the original AVE
//! row of every synthetic row).
//!
//! # Rows and splits
//! `N == 4143`: every AVE row with the official orders. `3 <= N < 4143`: from each official split
//! order (shuffled across categories) its first `k_s` entries, `k_s` = the largest-remainder
//! rounding of `N·|s|/4143` (so `Σ k_s = N`; a split that would get 0 takes one row from the
//! largest split). The chosen original rows, sorted ascending, become rows `0..N`; the written
//! orders are the chosen entries in the official order, remapped to the new row indices.
//!
//! # Features (why the task is audio-visual)
//! Every class `c` has a fixed unit-norm, non-negative, sparse visual prototype `P_c` (about 15 %
//! of the channels active, like ReLU'd VGG channels) and a unit-norm non-negative audio prototype
//! `Q_c` (ReLU'd Gaussian). Classes of one semantic group ([`CLASS_GROUPS`]: voices, animals,
//! aircraft, road vehicles, string instruments, wind instruments, household/machines, bells)
//! share a group component in their audio prototypes (weight 0.6 against 0.8 for the class's
//! own component). Visual prototypes share the component of a coarser *visual family*
//! ([`visual_family`]: living beings = voices + animals, vehicles = aircraft + road vehicles,
//! instruments = strings + winds, objects = household/machines + bells) with weight 0.8 against
//! 0.15 for their own (cosine ≈ 0.97 within a family), so a dog, a baby and a speaking man look
//! alike, as do a helicopter and a race car, and mostly sound tells them apart. Prototypes
//! depend on the seed only.
//!
//! Each segment `t` of a video of category `c` is one of four kinds:
//!
//! | kind | label | object visible | sound audible |
//! |---|---|---|---|
//! | event (`Start <= t < End`) | `c` | yes | yes |
//! | off-screen sound | 28 | no | yes |
//! | silent object | 28 | yes | no |
//! | neither | 28 | no | no |
//!
//! A background segment is off-screen / silent / neither with probability [`P_OFF_SCREEN`] /
//! [`P_SILENT`] / `1 − both` (0.30 / 0.45 / 0.25), so neither modality alone separates event
//! from background. The video's category supplies the prototypes of background segments too
//! (also for AVE row 26, which has no event segment).
//!
//! * Visual map `[7,7,Cv]` per segment: clutter `noise·0.5·max(0, 0.75·S + 0.66·Z_t)` on all 49
//!   cells (`S` a per-video "scene" map shared by the ten segments, `Z_t` fresh per segment, both
//!   ≈ N(0,1); about half the values are exact zeros); when the object is visible,
//!   `2.5·g_v·j_t·w_k·P_c` is added on each cell `k` of a blob of 2–6 edge-connected cells
//!   (`w` = 1 on the blob's first cell, U(0.6,1) on the others). The blob's shape and start
//!   position are fixed per video; between consecutive seconds it moves by at most one cell
//!   (with probability 0.5 by a random step in {-1,0,1}², clamped to the grid). A per-video
//!   distractor — the prototype of a *different* class (same group with probability 0.7) at
//!   amplitude `0.6·U(0.75,1.25)` — sits on 1–2 cells never covered by the object in that video,
//!   in all ten segments.
//! * Audio `[Ca]` per segment: `max(0, [audible]·3.0·g_a·j'_t·Q_c + noise·0.5·(0.6·B + 0.8·Z'_t))`
//!   with a per-video background sound `B` and fresh `Z'_t`.
//! * `g_v, g_a ~ U(0.75, 1.25)` per video, `j_t, j'_t ~ U(0.85, 1.15)` per segment.
//!
//! `noise` (default [`DEFAULT_NOISE`] = 0.75) multiplies every clutter/noise term while the
//! prototype amplitudes stay fixed: 0 gives noise-free features, larger is harder. Measured on
//! 300 videos with the oracle scores (visual: max over cells of `⟨x, P_c⟩`; audio: `⟨a, Q_c⟩`;
//! thresholds midway between present/absent means; test `noise_table`):
//!
//! (v2 generator:)
//!
//! | noise | AND of both thresholds: accuracy | best visual-only threshold: accuracy, background called event | best audio-only |
//! |---|---|---|---|
//! | 0.5 | 0.994 | 0.904, 45 % | 0.934, 31 % |
//! | 1 | 0.948 | 0.904, 45 % | 0.927, 32 % |
//! | 1.5 | 0.870 | 0.890, 46 % | 0.901, 40 % |
//! | 2 | 0.775 | 0.854, 59 % | 0.867, 50 % |
//!
//! Linear softmax probes of the first version of the generator (visual group weight 0.6,
//! backgrounds 35/35/30 %; 29-way per segment, trained on the train split of all 4143 rows, scored
//! on the test split, features = cell-mean visual ⊕ audio; test `linear_probe_report`) at
//! noise 1: 0.848 (visual alone 0.602, audio alone 0.815; event/background 0.888 against
//! 0.822 for "always event"); at noise 2: 0.477.
//!
//! Generator v3 (visual families, own weight 0.15; the table above is v2's, whose visual
//! prototypes shared only the finer groups with own weight 0.35), 1,200 videos, noise 0.75,
//! the same probes: visual alone 0.429 (v2: 0.624), audio alone 0.896, both 0.859.
//!
//! The default, 0.75, was chosen with CACE-Net itself: 1,200 videos, 20 CPU epochs, published
//! settings, with and without audio (BENCHMARKS.md has the runs and their numbers: 96.98 %
//! with audio, 58.88 % with the audio replaced by zeros, for v3).

//! # Determinism
//! Random numbers come from ChaCha8 (`rand`'s `ChaCha8Rng`, portable) seeded with `seed`: stream 0 for the
//! prototypes, stream `r + 1` for original AVE row `r`. Only IEEE basic arithmetic is used (the
//! Gaussian draws are Irwin–Hall sums of four uniforms, no libm calls), so the same config gives
//! byte-identical files on every machine, and a row's features depend only on
//! `(seed, noise, dims, original row)` — subsets agree with the full set on shared rows.
//!
//! # Writing
//! Features are generated and written [`CHUNK_ROWS`] rows at a time (hyperslab writes into
//! contiguous datasets created with their full shape), so memory stays bounded for N = 4143
//! (8.3 GB of float64 visual features). Everything is written into a staging directory
//! `out_dir/.synth-staging-*` and only renamed into `out_dir` when all files are complete; a
//! failure removes the staging directory. `generate` refuses (error naming the file) when
//! `out_dir` already holds any file of the layout or `synth.json`: an existing dataset is never
//! overwritten, neither partially nor completely — delete it first.
//!
//! # Files
//! The root holds the configuration and the public constants; `select.rs` picks the rows,
//! `rng.rs` and `prototypes.rs` hold the random streams and the class patterns,
//! `generator.rs` makes one row, `writer.rs` writes the dataset, `info.rs` describes it in
//! `synth.json`; `probes.rs` (tests) measures the difficulty.

mod generator;
mod info;
#[cfg(test)]
mod probes;
mod prototypes;
pub(crate) mod rng;
mod select;
mod writer;

use super::annotations::NUM_CLASSES;
use super::ave::{AVE_ROWS, FeatureDType};

pub use writer::generate;

/// File describing the generator parameters, seed, summary and row provenance.
pub const SYNTH_INFO_FILE: &str = "synth.json";
/// Default of [`SynthConfig::noise`].
pub const DEFAULT_NOISE: f32 = 0.75;
/// Probability that a background segment is "off-screen sound" (audible, not visible).
pub const P_OFF_SCREEN: f32 = 0.30;
/// Probability that a background segment is "silent object" (visible, not audible).
/// The remaining `1 − P_OFF_SCREEN − P_SILENT` (0.25) is "neither".
pub const P_SILENT: f32 = 0.45;
/// Rows generated and written per hyperslab.
pub const CHUNK_ROWS: usize = 16;

/// Semantic group of each class (index = class); classes of a group share part of their
/// prototypes and are preferred as visual distractors of each other.
pub const CLASS_GROUPS: [u8; NUM_CLASSES] = [
    7, // Church bell        — bells
    0, // Male speech        — voices
    1, // Bark               — animals
    2, // Fixed-wing aircraft — aircraft
    3, // Race car           — road vehicles
    0, // Female speech
    2, // Helicopter
    4, // Violin             — strings
    5, // Flute              — winds
    4, // Ukulele
    6, // Frying (food)      — household / machines
    3, // Truck
    5, // Shofar
    3, // Motorcycle
    4, // Acoustic guitar
    3, // Train horn
    7, // Clock
    4, // Banjo
    1, // Goat
    0, // Baby cry
    3, // Bus
    6, // Chainsaw
    1, // Cat
    1, // Horse
    6, // Toilet flush
    1, // Rodents
    5, // Accordion
    4, // Mandolin
];
const NUM_GROUPS: usize = 8;

/// Visual family of class `c`: pairs of semantic groups that look alike at the resolution of the
/// features — living beings (voices, animals), vehicles (aircraft, road vehicles), instruments
/// (strings, winds), objects (household/machines, bells).
pub fn visual_family(c: usize) -> usize {
    CLASS_GROUPS[c] as usize / 2
}

/// Parameters of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Number of videos (rows) `N`, `3..=4143`. Default 4143 (all AVE rows).
    pub videos: usize,
    /// Difficulty: multiplies all clutter/noise terms (prototype amplitudes are fixed).
    /// `0` = noise-free; default [`DEFAULT_NOISE`] = 0.75; must be finite and `>= 0`.
    pub noise: f32,
    /// Seed of every random draw. Default 0.
    pub seed: u64,
    /// Visual channels `Cv` (VGG-19 `block5_pool`: 512).
    pub visual_dim: usize,
    /// Audio channels `Ca` (VGGish: 128).
    pub audio_dim: usize,
    /// Storage type of both feature files (the real files are float64).
    pub dtype: FeatureDType,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            videos: AVE_ROWS,
            noise: DEFAULT_NOISE,
            seed: 0,
            visual_dim: 512,
            audio_dim: 128,
            dtype: FeatureDType::F64,
        }
    }
}

/// What [`generate`] wrote: rows per split and segment counts per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SynthSummary {
    pub rows: usize,
    pub train: usize,
    pub val: usize,
    pub test: usize,
    /// Segments with an event label (object visible and sound audible).
    pub event_segments: usize,
    /// Segments labelled background (28); the sum of the three kinds below.
    pub background_segments: usize,
    /// Background segments with the category's sound audible but the object not visible.
    pub off_screen_sound: usize,
    /// Background segments with the object visible but silent.
    pub silent_object: usize,
    /// Background segments with neither the object visible nor its sound audible.
    pub neither: usize,
}
