use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use cace_net::data::ave::FeatureDType;
use cace_net::data::synth::{SynthConfig, generate};
use cace_net::train::{self, RunOptions, TrainConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Where the synthetic data and the run go.
    #[arg(long, default_value = "cace-demo")]
    out: PathBuf,
    /// Videos in the synthetic dataset (train, val and test together).
    #[arg(long, default_value_t = 400)]
    videos: usize,
    /// Training epochs.
    #[arg(long, default_value_t = 6)]
    epochs: usize,
}

/// Synthesises a small AVE-layout dataset, trains the published model on it for a few epochs
/// on the CPU and reports, honest and official protocols side by side.
pub fn run(a: Args) -> Result<()> {
    let data = a.out.join("data");
    let run = a.out.join("run");
    if run.exists() || data.exists() {
        anyhow::bail!(
            "{} already holds a demo; remove it or pass another --out",
            a.out.display()
        );
    }
    println!(
        "1/3 synthesising {} videos in {} ...",
        a.videos,
        data.display()
    );
    let s = generate(
        &data,
        &SynthConfig {
            videos: a.videos,
            dtype: FeatureDType::F32,
            ..SynthConfig::default()
        },
    )?;
    println!(
        "    train {}, val {}, test {} videos",
        s.train, s.val, s.test
    );
    println!(
        "2/3 training CACE-Net for {} epochs on the CPU ...",
        a.epochs
    );
    // A short run: BECE switches on after the first epoch, learning-rate steps scaled down.
    let config = TrainConfig {
        epochs: a.epochs,
        bece_start_epoch: Some(1),
        lr_milestones: vec![a.epochs],
        seed: 1,
        ..TrainConfig::default()
    };
    let report = train::train(&RunOptions {
        data: data.clone(),
        out: run.clone(),
        config,
        resume: false,
        device: Device::flex(),
        verbose: true,
    })?;
    println!("3/3 report");
    train::print_report(&report);
    println!("\nrun directory: {}", run.display());
    println!("  curves:     {}", run.join("curves.png").display());
    println!("  report:     {}", run.join(train::REPORT_FILE).display());
    println!(
        "  best model: {}  (try: cace eval --checkpoint {} --data {})",
        run.join("best").display(),
        run.join("best").display(),
        data.display()
    );
    Ok(())
}
