//! `cace dense eval --detections FILE --annotations FILE`: the official UnAV mAP.

use std::path::PathBuf;

use anyhow::Result;
use cace_net::dense::metrics::{
    evaluate, load_detections, load_ground_truth, unav_tiou_thresholds,
};

#[derive(clap::Args)]
pub struct Args {
    /// Detections: `{"database": {video: [{"segment": [s, e], "label_id": i, "scores": p}]}}`.
    #[arg(long)]
    detections: PathBuf,
    /// Annotations in the official UnAV format (`unav100_annotations.json`).
    #[arg(long)]
    annotations: PathBuf,
    /// Videos of this subset (`test`, `validation`, `train`; as the official eval.py, `test`
    /// unless given), or `all` for every video in the file.
    #[arg(long, default_value = "test")]
    split: String,
    /// Also write `{"tiou": [...], "mAP": [...], "average_mAP": x}` (mAP in percent) here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let split = (a.split != "all").then_some(a.split.as_str());
    let gt = load_ground_truth(&a.annotations, split)?;
    let dets = load_detections(&a.detections)?;
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
