use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::tensor::{Device, Distribution, Tensor};
use cace_net::T;
use cace_net::bench::peak_rss_mb;
use cace_net::config::ModelConfig;
use cace_net::model::state::ParamList;
use cace_net::model::{CaceNet, ForwardOptions};
use cace_net::profile::{audio_guided_baseline, macs_per_video, vanilla};
use serde_json::json;

use super::train::load_config;

#[derive(clap::Args)]
pub struct Args {
    /// A training config (JSON) whose model is profiled as a third row.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Batch size of the timed inference.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// One JSON line instead of the table.
    #[arg(long)]
    json: bool,
}

struct Row {
    name: String,
    total: usize,
    used: usize,
    macs: u64,
    infer_s: f64,
    peak_rss_mb: f64,
}

fn profile(name: &str, config: &ModelConfig, batch: usize) -> Result<Row> {
    let device = Device::flex();
    device.seed(0);
    let mut model = CaceNet::new(config, &device)?;
    let list = ParamList::of(&mut model);
    let v = Tensor::<5>::random(
        [batch, T, 7, 7, config.visual_dim],
        Distribution::Uniform(0.0, 1.0),
        &device,
    );
    let a = Tensor::<3>::random(
        [batch, T, config.audio_dim],
        Distribution::Uniform(0.0, 1.0),
        &device,
    );
    let run = || {
        let out = model.forward(v.clone(), a.clone(), ForwardOptions::bece_on());
        let _ = out.is_event.into_data();
    };
    run(); // warm-up
    let mut times: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Ok(Row {
        name: name.to_string(),
        total: list.total(),
        used: list.used(),
        macs: macs_per_video(config).iter().map(|c| c.macs).sum(),
        infer_s: times[1],
        peak_rss_mb: peak_rss_mb(),
    })
}

pub fn run(a: Args) -> Result<()> {
    // Smallest first: peak RSS is the process's high-water mark so far.
    let mut rows = vec![
        profile("vanilla (no AVCA, no BECE)", &vanilla(), a.batch)?,
        profile(
            "Audio-Guide, no BECE (Table 4 baseline)",
            &audio_guided_baseline(),
            a.batch,
        )?,
        profile("CACE-Net (default)", &ModelConfig::default(), a.batch)?,
    ];
    if let Some(path) = &a.config {
        let c = load_config(Some(path))?;
        rows.push(profile(&format!("{}", path.display()), &c.model, a.batch)?);
    }
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"model": r.name, "params_total": r.total, "params_used": r.used,
                       "gmacs_per_video": r.macs as f64 / 1e9, "gflops_per_video": 2.0 * r.macs as f64 / 1e9,
                       "inference_batch": a.batch, "inference_s": r.infer_s, "peak_rss_mb": r.peak_rss_mb})
            })
            .collect();
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    println!(
        "| model | params (state dict) | used by forward | GMACs / video | GFLOPs / video | inference, batch {} | peak RSS |",
        a.batch
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} M ({}) | {:.2} M | {:.3} | {:.3} | {:.3} s | {:.0} MB |",
            r.name,
            r.total as f64 / 1e6,
            r.total,
            r.used as f64 / 1e6,
            r.macs as f64 / 1e9,
            2.0 * r.macs as f64 / 1e9,
            r.infer_s,
            r.peak_rss_mb
        );
    }
    println!(
        "\npaper Table S6: vanilla 12.58 M params, 1.27 GFLOPs; ours 13.12 M, 1.66 GFLOPs.\n\
         FLOPs: multiply-accumulates of every matrix product of one video's forward (T = 10), ×2 for\n\
         FLOPs; element-wise work not counted (see src/profile.rs).\n\
         Parameters count every state-dict value, like the paper (which includes the 3.8 M the\n\
         forward never reads). Our vanilla (`--guide None`, 190 keys) has 11,029,719. The paper's\n\
         vanilla keeps the audio-guided visual attention of prior work: its 12.58 M is\n\
         13,118,681 − 543,488 = 12,575,193, the model without the visual-guides-audio layers\n\
         (video_*2 + v_norm2 395,008; v_query 65,664; vaudio_key/value 33,024; audio_query/key/value\n\
         49,536; a_norm 256), i.e. `Only_Audio_Guided_Attention` with the BECE projector still built;\n\
         the official code has no option for it (Audio-Guide keeps those layers, multiplied by ψ = 0).\n\
         Peak RSS is the process high-water mark after each row (rows run smallest first)."
    );
    Ok(())
}
