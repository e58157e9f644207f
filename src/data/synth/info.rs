//! `synth.json` ([`SYNTH_INFO_FILE`](super::SYNTH_INFO_FILE)): the generator's parameters,
//! seed, summary and the original AVE row of every synthetic row, so a dataset says how it was
//! made.

use super::generator::{
    AUDIO_AMP, AUDIO_BG_W, AUDIO_FRESH_W, AUDIO_NOISE, BLOB_MAX, BLOB_MIN, DISTRACTOR_AMP, FRESH_W,
    GAIN_HI, GAIN_LO, JITTER_HI, JITTER_LO, P_DRIFT, SCENE_W, VISUAL_AMP, VISUAL_CLUTTER,
};
use super::{P_OFF_SCREEN, P_SILENT, SynthConfig, SynthSummary};

/// Content of `synth.json`: the generator's parameters, seed, summary and provenance (fields
/// in this order in the file).
#[derive(serde::Serialize)]
struct SynthInfo<'a> {
    generator: &'static str,
    format_version: u32,
    seed: u64,
    videos: usize,
    noise: f32,
    visual_dim: usize,
    audio_dim: usize,
    dtype: String,
    rng: &'static str,
    background_kind_probabilities: BackgroundKinds,
    amplitudes: Amplitudes,
    noise_scales_at_noise_1: NoiseScales,
    summary: &'a SynthSummary,
    original_rows: &'a [usize],
}

#[derive(serde::Serialize)]
struct BackgroundKinds {
    off_screen_sound: f32,
    silent_object: f32,
    neither: f32,
}

#[derive(serde::Serialize)]
struct Amplitudes {
    visual_prototype: f32,
    audio_prototype: f32,
    visual_distractor: f32,
    gain_range: [f32; 2],
    segment_jitter_range: [f32; 2],
    blob_cells: [usize; 2],
    p_drift: f32,
}

#[derive(serde::Serialize)]
struct NoiseScales {
    visual_clutter: f32,
    visual_scene_weight: f32,
    visual_fresh_weight: f32,
    audio_noise: f32,
    audio_background_weight: f32,
    audio_fresh_weight: f32,
}

pub(super) fn synth_info(cfg: &SynthConfig, s: &SynthSummary, rows: &[usize]) -> String {
    let info = SynthInfo {
        generator: "cace-net src/data/synth.rs (synthetic AVE layout)",
        format_version: 1,
        seed: cfg.seed,
        videos: cfg.videos,
        noise: cfg.noise,
        visual_dim: cfg.visual_dim,
        audio_dim: cfg.audio_dim,
        dtype: cfg.dtype.to_string(),
        rng: "ChaCha8 seed_from_u64(seed); stream 0 = prototypes, stream r+1 = original AVE row r",
        background_kind_probabilities: BackgroundKinds {
            off_screen_sound: P_OFF_SCREEN,
            silent_object: P_SILENT,
            neither: (100.0 * (1.0 - P_OFF_SCREEN - P_SILENT)).round() / 100.0,
        },
        amplitudes: Amplitudes {
            visual_prototype: VISUAL_AMP,
            audio_prototype: AUDIO_AMP,
            visual_distractor: DISTRACTOR_AMP,
            gain_range: [GAIN_LO, GAIN_HI],
            segment_jitter_range: [JITTER_LO, JITTER_HI],
            blob_cells: [BLOB_MIN, BLOB_MAX],
            p_drift: P_DRIFT,
        },
        noise_scales_at_noise_1: NoiseScales {
            visual_clutter: VISUAL_CLUTTER,
            visual_scene_weight: SCENE_W,
            visual_fresh_weight: FRESH_W,
            audio_noise: AUDIO_NOISE,
            audio_background_weight: AUDIO_BG_W,
            audio_fresh_weight: AUDIO_FRESH_W,
        },
        summary: s,
        original_rows: rows,
    };
    serde_json::to_string_pretty(&info).expect("plain data serialises") + "\n"
}
