//! `cace dense predict --checkpoint C --data DIR --out FILE [--split S]`: detections in the
//! official UnAV prediction format.

use std::path::PathBuf;

use anyhow::Result;
use cace_net::dense::data::{UnavDataset, UnavPaths};
use cace_net::dense::{checkpoint, infer, postprocess::TestConfig};

use super::super::args::DeviceArg;
use super::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// UnAV-layout folder with the videos' features.
    #[arg(long)]
    data: PathBuf,
    /// Videos of this subset (`test`, `validation`, `train`), or `all`.
    #[arg(long, default_value = "test")]
    split: String,
    /// Output JSON: `{"database": {video: [{"segment": [s, e], "label_id": i, "scores": p,
    /// "label": name}]}}`.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArg,
}

/// The model's detections on `split` of `data`, with the class names of the annotation file.
pub fn detect(
    model: &ModelArgs,
    data: &std::path::Path,
    split: &str,
    device: &burn::tensor::Device,
) -> Result<(Vec<infer::VideoDetections>, UnavDataset)> {
    let (m, cfg) = checkpoint::load(&model.checkpoint, model.weights, model.config()?, device)?;
    let paths = UnavPaths::in_dir(data)?;
    let splits: Vec<&str> = if split == "all" {
        vec!["train", "validation", "test"]
    } else {
        vec![split]
    };
    let ds = UnavDataset::open(paths, &splits, cfg.data.clone())?;
    let dets = infer::detect_dataset(
        &m,
        &cfg.model,
        &ds,
        cfg.eval_batch_size,
        &TestConfig::unav100(),
        device,
    )?;
    Ok((dets, ds))
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device.get()?;
    let (dets, ds) = detect(&a.model, &a.data, &a.split, &device)?;
    let json = infer::to_official_json(&dets, &ds.label_dict);
    cace_net::fsutil::write_file(&a.out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    let n: usize = dets.iter().map(|d| d.scores.len()).sum();
    println!(
        "{} videos, {n} detections: wrote {}",
        dets.len(),
        a.out.display()
    );
    Ok(())
}
