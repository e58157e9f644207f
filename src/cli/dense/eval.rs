//! `cace dense eval`: the official UnAV mAP of detections given in the official prediction
//! format (`--detections --annotations`), or of a checkpoint's detections on UnAV-layout data
//! (`--checkpoint --data`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use cace_net::dense::infer;
use cace_net::dense::metrics::{
    Detection, GtSegment, evaluate, load_detections, load_ground_truth, unav_tiou_thresholds,
};

use super::super::args::DeviceArg;
use super::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Detections: `{"database": {video: [{"segment": [s, e], "label_id": i, "scores": p}]}}`.
    #[arg(long, requires = "annotations", conflicts_with_all = ["checkpoint", "data"])]
    detections: Option<PathBuf>,
    /// Annotations in the official UnAV format (`unav100_annotations.json`).
    #[arg(long)]
    annotations: Option<PathBuf>,
    #[command(flatten)]
    model: Option<ModelArgs>,
    /// UnAV-layout folder to run the checkpoint on.
    #[arg(long, requires = "checkpoint")]
    data: Option<PathBuf>,
    /// Videos of this subset (`test`, `validation`, `train`; as the official eval.py, `test`
    /// unless given), or `all` for every video in the file.
    #[arg(long, default_value = "test")]
    split: String,
    /// Also write `{"tiou": [...], "mAP": [...], "average_mAP": x}` (mAP in percent) here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArg,
}

pub fn run(a: Args) -> Result<()> {
    let split = (a.split != "all").then_some(a.split.as_str());
    let (gt, dets): (Vec<GtSegment>, Vec<Detection>) = match (&a.detections, &a.model, &a.data) {
        (Some(d), _, _) => {
            let ann = a.annotations.as_ref().expect("clap requires it");
            (load_ground_truth(ann, split)?, load_detections(d)?)
        }
        (None, Some(m), Some(data)) => {
            let (dets, ds) = super::predict::detect(m, data, &a.split, &a.device.get()?)?;
            (
                load_ground_truth(&ds.paths.json_file, split)?,
                infer::to_rows(&dets),
            )
        }
        _ => {
            bail!("give either --detections FILE --annotations FILE, or --checkpoint C --data DIR")
        }
    };
    let r = evaluate(&gt, &dets, &unav_tiou_thresholds());
    println!(
        "split: {} ({} ground-truth events, {} classes; {} detections)",
        a.split,
        gt.len(),
        r.classes.len(),
        dets.len()
    );
    for (t, m) in r.tiou.iter().zip(&r.map) {
        println!("tIoU = {t:.2}: mAP = {:.2} %", m * 100.0);
    }
    println!("average mAP: {:.2} %", r.average_map * 100.0);
    if let Some(path) = &a.json {
        let pct: Vec<f64> = r.map.iter().map(|m| m * 100.0).collect();
        let v =
            serde_json::json!({"tiou": r.tiou, "mAP": pct, "average_mAP": r.average_map * 100.0});
        cace_net::fsutil::write_file(path, serde_json::to_string_pretty(&v)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
