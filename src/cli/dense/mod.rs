//! `cace dense …`: dense localization on UnAV-100-style data (issue 15).

pub mod eval;
mod features;
mod predict;
mod train;

use std::path::PathBuf;

use anyhow::Result;
use cace_net::dense::checkpoint::Weights;
use cace_net::dense::train::DenseTrainConfig;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Train the UnAV baseline (optionally with AVCA / BECE) on UnAV-layout data.
    Train(train::Args),
    /// mAP at tIoU 0.1…0.9 and their average: of a checkpoint on UnAV-layout data, or of
    /// detections in the official prediction format against an official annotation file.
    Eval(eval::Args),
    /// Detections of a checkpoint in the official UnAV prediction format.
    Predict(predict::Args),
    /// Per-second features of one's own videos (the AVE encoders) in the UnAV layout.
    Features(features::Args),
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Features(a) => features::run(a),
    }
}

/// Which trained model: a run directory (its `best/`), a checkpoint directory, or an official
/// UnAV `.pth.tar` with `--config`.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Run directory, checkpoint directory (`best/`, `last/`), or official UnAV `.pth.tar`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The moving average of the weights (as the official eval.py) or the weights as trained.
    #[arg(long, value_enum, default_value = "ema")]
    pub weights: Weights,
    /// Settings as JSON (fields of `DenseTrainConfig`); needed for an official `.pth.tar`,
    /// which does not hold its config.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ModelArgs {
    pub fn config(&self) -> Result<Option<DenseTrainConfig>> {
        self.config
            .as_ref()
            .map(|p| super::train::read_config(p, "dense training config"))
            .transpose()
    }
}
