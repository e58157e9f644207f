use std::path::PathBuf;

use anyhow::Result;
use cace_net::data::ave::FeatureDType;
use cace_net::data::synth::{SynthConfig, generate};
use cace_net::dense::synth::{UnavSynthConfig, generate as generate_unav};

/// Which layout `cace synth` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// AVE: 10-second clips, one event each (HDF5 layout).
    Ave,
    /// UnAV-100: untrimmed videos with several, overlapping events (JSON + .npy layout).
    Unav,
}

#[derive(clap::Args)]
pub struct Args {
    /// Dataset layout to write.
    #[arg(long, value_enum, default_value_t = Kind::Ave)]
    pub kind: Kind,
    /// Output directory (must not already hold a dataset).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of videos (ave: rows, default 4143, fewer take a proportional share of each
    /// real split; unav: default 100, 70/15/15 % train/validation/test).
    #[arg(long)]
    pub videos: Option<usize>,
    /// Difficulty (ave only): scales every noise term (0 = clean, 0.75 = default, 2 = hard).
    #[arg(long, default_value_t = cace_net::data::synth::DEFAULT_NOISE)]
    pub noise: f32,
    /// Seed of the generator: the same seed gives the same files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write float32 features instead of float64 (ave only; the real AVE files are float64).
    #[arg(long)]
    pub f32: bool,
    /// Event classes used (unav only; ids 0..N of the 100).
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
}

pub fn run(a: Args) -> Result<()> {
    match a.kind {
        Kind::Ave => run_ave(a),
        Kind::Unav => run_unav(a),
    }
}

fn run_unav(a: Args) -> Result<()> {
    let cfg = UnavSynthConfig {
        videos: a.videos.unwrap_or(100),
        seed: a.seed,
        classes: a.classes,
        ..UnavSynthConfig::default()
    };
    let s = generate_unav(&a.out, &cfg)?;
    println!(
        "wrote {} UnAV-layout videos to {} (train {}, validation {}, test {}); {} events, {} overlapping another",
        s.videos,
        a.out.display(),
        s.train,
        s.validation,
        s.test,
        s.events,
        s.overlapping
    );
    Ok(())
}

fn run_ave(a: Args) -> Result<()> {
    let cfg = SynthConfig {
        videos: a.videos.unwrap_or(4143),
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
