use std::path::PathBuf;

use super::args::{DeviceArg, PrecisionArg};
use anyhow::{Context, Result, bail};
use cace_net::train::{self, Report, RunOptions, TrainConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Dataset directory in the AVE layout.
    #[arg(long)]
    data: PathBuf,
    /// Run directory (metrics.jsonl, best/, last/, report.json, curves.png).
    #[arg(long)]
    out: PathBuf,
    /// Training config (JSON; fields of `TrainConfig`, missing ones take the published defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Epochs (overrides the config; more than a saved run's extends it with --resume).
    #[arg(long)]
    epochs: Option<usize>,
    /// Seed of initialisation, shuffling, dropout and noise (overrides the config).
    #[arg(long)]
    seed: Option<u64>,
    /// Several seeds, comma-separated: one run per seed in OUT/seed-N, then mean ± std.
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    seeds: Vec<u64>,
    /// Training batch size (overrides the config).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Replace the audio features by zeros (ablation).
    #[arg(long)]
    zero_audio: bool,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    precision: PrecisionArg,
    /// Continue the run saved in `--out`.
    #[arg(long)]
    resume: bool,
}

pub fn load_config(path: Option<&PathBuf>) -> Result<TrainConfig> {
    config_or_default(path, "training config")
}

/// The config in `path`, or the defaults without one.
pub fn config_or_default<T: serde::de::DeserializeOwned + Default>(
    path: Option<&PathBuf>,
    what: &str,
) -> Result<T> {
    path.map_or_else(|| Ok(T::default()), |p| read_config(p, what))
}

/// A training command's config: `--config` when given, else (resuming) the run's own saved
/// config, else `default()`.
pub fn run_config<T: serde::de::DeserializeOwned>(
    config: Option<&PathBuf>,
    out: &std::path::Path,
    resume: bool,
    what: &str,
    default: impl FnOnce() -> T,
) -> Result<T> {
    let saved = out.join(train::CONFIG_FILE);
    match config {
        Some(p) => read_config(p, what),
        None if resume && saved.exists() => read_config(&saved, what),
        None => Ok(default()),
    }
}

/// A JSON config file (`what` names it in errors); missing fields take their defaults.
pub fn read_config<T: serde::de::DeserializeOwned>(path: &PathBuf, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid {what}", path.display()))
}

pub fn run(a: Args) -> Result<()> {
    // Resuming without --config continues with the run's own saved config.
    let resume = a.resume && a.seeds.is_empty();
    let mut config = run_config(
        a.config.as_ref(),
        &a.out,
        resume,
        "training config",
        TrainConfig::default,
    )?;
    if let Some(e) = a.epochs {
        config.epochs = e;
    }
    if let Some(s) = a.seed {
        config.seed = s;
    }
    if let Some(b) = a.batch_size {
        config.batch_size = b;
    }
    config.zero_audio |= a.zero_audio;
    if let Some(p) = a.precision.value {
        config.precision = p;
    }
    if let Some(s) = a
        .seeds
        .iter()
        .find(|s| a.seeds.iter().filter(|t| t == s).count() > 1)
    {
        bail!("--seeds lists seed {s} twice");
    }
    config.validate()?;
    let device = a.device.get()?;
    if a.seeds.is_empty() {
        let report = train::train(&RunOptions {
            data: a.data,
            out: a.out.clone(),
            config,
            resume: a.resume,
            device,
            verbose: true,
        })?;
        train::print_report(&report);
        println!("run: {}", a.out.display());
        return Ok(());
    }
    let mut reports = Vec::new();
    for &seed in &a.seeds {
        let out = a.out.join(format!("seed-{seed}"));
        println!("== seed {seed} → {}", out.display());
        let cfg = TrainConfig {
            seed,
            ..config.clone()
        };
        // A finished seed is kept; an interrupted one continues with --resume.
        let done = out.join(train::REPORT_FILE);
        let report: Report = if done.exists() && a.resume {
            serde_json::from_slice(&std::fs::read(&done)?)?
        } else {
            train::train(&RunOptions {
                data: a.data.clone(),
                out,
                config: cfg,
                resume: a.resume,
                device: device.clone(),
                verbose: true,
            })?
        };
        reports.push(report);
    }
    let summary = train::SeedSummary::from_reports(&reports);
    summary.print();
    cace_net::checkpoint::native::write_atomic(
        &a.out.join("seeds_summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    Ok(())
}
