use std::path::PathBuf;

use super::args::DeviceArg;
use anyhow::Result;
use cace_net::ablate::{self, AblateOptions};
use cace_net::dense::ablate as dense_ablate;
use cace_net::dense::train::DenseTrainConfig;

use super::train::load_config;

#[derive(clap::Args)]
pub struct Args {
    /// Table of the paper: 1, 2, 3, 4, S1, S2, S4 or S5 (3 and S5 compare features: DATA holds one folder per row, README); S3 on UnAV-layout data (dense localization).
    #[arg(long)]
    table: String,
    /// Dataset directory in the AVE layout (S3: the UnAV layout).
    #[arg(long)]
    data: PathBuf,
    /// Output directory: one run per row and seed, table.md and table.json.
    #[arg(long)]
    out: PathBuf,
    /// Number of seeds (1..=N), or a comma-separated list with --seed-list.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Explicit seeds instead of 1..=N.
    #[arg(long, value_delimiter = ',')]
    seed_list: Vec<u64>,
    /// Epochs per run (default: the base config's, 200).
    #[arg(long)]
    epochs: Option<usize>,
    /// Base training config (JSON; S3: a dense training config); each row changes it.
    /// Default: the published run.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Runs trained at the same time.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    #[command(flatten)]
    device: DeviceArg,
}

impl Args {
    /// `--seed-list`, or 1..=`--seeds`.
    fn seed_list(&self) -> Vec<u64> {
        if self.seed_list.is_empty() {
            (1..=self.seeds).collect()
        } else {
            self.seed_list.clone()
        }
    }
}

fn print_written(out: &std::path::Path) {
    println!(
        "wrote {} and {}",
        out.join("table.md").display(),
        out.join("table.json").display()
    );
}

pub fn run(a: Args) -> Result<()> {
    if dense_ablate::is_s3(&a.table) {
        return run_s3(a);
    }
    let mut base = load_config(a.config.as_ref())?;
    if let Some(e) = a.epochs {
        base.epochs = e;
    }
    let seeds = a.seed_list();
    let result = ablate::run(&AblateOptions {
        table: a.table,
        data: a.data,
        out: a.out.clone(),
        base,
        seeds,
        jobs: a.jobs,
        device: a.device.get()?,
    })?;
    println!("{}", ablate::markdown(&result));
    print_written(&a.out);
    Ok(())
}

/// Table S3: the dense model on UnAV-layout data (`epochs` counts the cosine epochs after the
/// warm-up, as `cace dense train --epochs`).
fn run_s3(a: Args) -> Result<()> {
    let mut base: DenseTrainConfig =
        super::train::config_or_default(a.config.as_ref(), "dense training config")?;
    if let Some(e) = a.epochs {
        base.epochs = e;
    }
    let seeds = a.seed_list();
    let result = dense_ablate::run(&dense_ablate::S3Options {
        data: a.data,
        out: a.out.clone(),
        base,
        seeds,
        device: a.device.get()?,
    })?;
    println!("{}", dense_ablate::markdown(&result));
    print_written(&a.out);
    Ok(())
}
