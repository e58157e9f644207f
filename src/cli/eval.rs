use std::path::PathBuf;

use super::args::{CheckpointArg, DeviceArg, PrecisionArg};
use anyhow::Result;
use cace_net::checkpoint;
use cace_net::data::ave::{AveDir, Split};
use cace_net::inference::{check_feature_widths, label_name, predict_split};
use cace_net::metric::Breakdown;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    checkpoint: CheckpointArg,
    /// Dataset directory in the AVE layout (with labels).
    #[arg(long)]
    data: PathBuf,
    /// Split to evaluate: train, val or test.
    #[arg(long, default_value = "test")]
    split: Split,
    /// Also write the breakdown as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Videos per forward pass (memory vs speed; results do not change).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    precision: PrecisionArg,
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device.get()?;
    let _precision = a.precision.enter(&device)?;
    let data = AveDir::open(&a.data)?;
    anyhow::ensure!(
        data.has_labels(),
        "{}: no labels (labels.h5 or Annotations.txt) to evaluate against",
        a.data.display()
    );
    anyhow::ensure!(a.batch_size > 0, "--batch-size must be at least 1");
    let loaded = checkpoint::load(&a.checkpoint.path, None, &device)?;
    check_feature_widths(&loaded.config, &data)?;
    let result = predict_split(&loaded.model, &data, a.split, a.batch_size, &device)?;
    let pred: Vec<usize> = result.videos.iter().flat_map(|v| v.pred.clone()).collect();
    let target: Vec<usize> = result
        .videos
        .iter()
        .flat_map(|v| v.target.clone().unwrap_or_default())
        .collect();
    let names: Vec<String> = (0..=28).map(label_name).collect();
    let b = Breakdown::new(&pred, &target, result.accuracy.unwrap_or(0.0), &names);
    println!(
        "split: {} ({} videos, {} segments)",
        a.split,
        result.videos.len(),
        b.segments
    );
    println!("accuracy: {:.2} %", b.accuracy);
    println!(
        "event/background accuracy: {:.2} %",
        b.event_background_accuracy
    );
    println!("per-class accuracy:");
    for c in &b.per_class {
        let acc = c.accuracy.map_or("-".to_string(), |x| format!("{x:6.2} %"));
        println!(
            "  {:>2} {:<32} {:>5} segments  {acc}",
            c.label, c.name, c.segments
        );
    }
    println!("confusion (rows = true, columns = predicted; labels 0..27, 28 = background):");
    for (t, row) in b.confusion.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|n| format!("{n:4}")).collect();
        println!("  {t:>2} {}", cells.join(""));
    }
    if let Some(path) = &a.json {
        cace_net::checkpoint::native::write_atomic(
            path,
            serde_json::to_string_pretty(&b)?.as_bytes(),
        )?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
