//! `cace dense …`: dense localization on UnAV-100-style data (issue 15).

mod eval;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Score detections in the official UnAV prediction format against an official annotation
    /// file: mAP at tIoU 0.1…0.9 and their average.
    Eval(eval::Args),
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        Command::Eval(a) => eval::run(a),
    }
}
