//! Subcommands: thin wrappers that parse arguments, call the library and print.

mod ablate;
mod args;
mod bench;
mod demo;
mod dense;
mod eval;
mod extract;
mod figures;
mod finetune;
mod import;
mod info;
mod predict;
mod profile;
mod synth;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cace",
    version,
    about = "CACE-Net audio-visual event localization (AVE), on burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert an official CACE-Net checkpoint (.pth.tar) into a native checkpoint directory.
    Import(import::Args),
    /// Run a checkpoint on a split of an AVE-layout dataset, or end to end on video files
    /// (`--video`), and write per-video JSON.
    Predict(predict::Args),
    /// Extract VGG19/VGGish or ResNet50/Cnn14 features of video files into the AVE layout.
    Extract(extract::Args),
    /// Synthesise a dataset, train and evaluate on the CPU in a few minutes (no downloads).
    Demo(demo::Args),
    /// Write a synthetic dataset in the AVE layout with a known audio-visual answer.
    Synth(synth::Args),
    /// Train CACE-Net with the official objective and schedule (honest and official protocols).
    Train(train::Args),
    /// Fine-tune the image encoder on videos with the audio-visual InfoNCE loss (paper §3.4,
    /// Tables 3 and S5); writes an encoder `cace extract --weights` reads.
    Finetune(finetune::Args),
    /// Evaluate a checkpoint: accuracy, event/background accuracy, per class, confusion.
    Eval(eval::Args),
    /// Measure training-step, evaluation and latency times and peak memory.
    Bench(bench::Args),
    /// Print a checkpoint's (or the default model's) config and parameter counts.
    Info(info::Args),
    /// Regenerate one of the paper's ablation tables (rows × seeds, honest and official numbers).
    Ablate(ablate::Args),
    /// Dense localization (UnAV-100): score detections with the official mAP.
    Dense(dense::Args),
    /// Parameters, FLOPs per video, peak memory and inference time (paper Table S6).
    Profile(profile::Args),
    /// Prediction timelines (paper Figure 4) and AVCA attention maps (Figure 5) as PNG.
    Figures(figures::Args),
}

pub fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Import(a) => import::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Extract(a) => extract::run(a),
        Command::Info(a) => info::run(a),
        Command::Train(a) => train::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Finetune(a) => finetune::run(a),
        Command::Ablate(a) => ablate::run(a),
        Command::Dense(a) => dense::run(a),
        Command::Profile(a) => profile::run(a),
        Command::Figures(a) => figures::run(a),
    }
}
