use std::path::PathBuf;

use anyhow::Result;
use cace_net::data::ave::FeatureDType;
use cace_net::data::synth::{SynthConfig, generate};

#[derive(clap::Args)]
pub struct Args {
    /// Output directory (must not already hold a dataset).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of videos (rows); < 4143 takes a proportional share of each real split.
    #[arg(long, default_value_t = 4143)]
    pub videos: usize,
    /// Difficulty: scales every noise term (0 = clean, 0.75 = default, 2 = hard).
    #[arg(long, default_value_t = cace_net::data::synth::DEFAULT_NOISE)]
    pub noise: f32,
    /// Seed of the generator: the same seed gives the same files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write float32 features instead of float64 (the real AVE files are float64).
    #[arg(long)]
    pub f32: bool,
}

pub fn run(a: Args) -> Result<()> {
    let cfg = SynthConfig {
        videos: a.videos,
        noise: a.noise,
        seed: a.seed,
        dtype: if a.f32 {
            FeatureDType::F32
        } else {
            FeatureDType::F64
        },
        ..SynthConfig::default()
    };
    let s = generate(&a.out, &cfg)?;
    println!(
        "wrote {} videos to {} (train {}, val {}, test {}); segments: {} event, {} background ({} off-screen sound, {} silent object, {} neither)",
        s.rows,
        a.out.display(),
        s.train,
        s.val,
        s.test,
        s.event_segments,
        s.background_segments,
        s.off_screen_sound,
        s.silent_object,
        s.neither
    );
    Ok(())
}
