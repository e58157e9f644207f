use super::args::DeviceArg;
use anyhow::Result;
use cace_net::bench;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    device: DeviceArg,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
    /// Timed repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Measure a fine-tuning step of this encoder instead (`cace finetune`).
    #[arg(long, value_enum)]
    finetune: Option<cace_net::finetune::backbone::BackboneKind>,
    /// Videos per fine-tuning share (with --finetune).
    #[arg(long, default_value_t = 2)]
    local_batch: usize,
    /// Measure a training iteration of the dense model on this UnAV-layout folder instead
    /// (`cace dense train`; the official sizes unless --config).
    #[arg(long)]
    dense: Option<std::path::PathBuf>,
    /// Dense training config (JSON) for --dense.
    #[arg(long, requires = "dense")]
    config: Option<std::path::PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device.get()?;
    if let Some(data) = &a.dense {
        let cfg: cace_net::dense::train::DenseTrainConfig = match &a.config {
            Some(p) => super::train::read_config(p, "dense training config")?,
            None => Default::default(),
        };
        let r = cace_net::dense::bench::run(data, &cfg, a.reps.max(1), &device)?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "dense training iteration, batch {} × {} snippets, {} threads: {:.0} ms ({:.0} ms per \
                 video); evaluation forward + post-processing of the batch {:.0} ms; peak RSS {:.0} MB",
                r.batch,
                r.max_seq_len,
                r.threads,
                r.step_ms,
                r.ms_per_video,
                r.eval_ms,
                r.peak_rss_mb
            );
        }
        return Ok(());
    }
    if let Some(kind) = a.finetune {
        let r = cace_net::finetune::bench::run(kind, a.local_batch.max(2), a.reps.max(1), &device);
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "fine-tuning {:?}, {} videos × 10 frames per share, {} threads: step {:.0} ms \
                 ({:.0} ms per video), eval forward {:.0} ms, peak RSS {:.0} MB",
                r.encoder, r.videos, r.threads, r.step_ms, r.ms_per_video, r.eval_ms, r.peak_rss_mb
            );
        }
        return Ok(());
    }
    let r = bench::run(&device, a.reps.max(1));
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "cace bench on {} ({} threads), batch {}, median of {} after warm-up",
        r.device, r.threads, r.batch, a.reps
    );
    println!(
        "  training step (fwd + loss + bwd + clip + Adam)  {:>9.1} ms",
        r.train_step_ms
    );
    println!(
        "  epoch, 3,339 videos (estimated from steps)      {:>9.1} s",
        r.epoch_s
    );
    println!(
        "  batch assembly, 64 videos                       {:>9.1} ms",
        r.batch_assembly_ms
    );
    println!(
        "  evaluation, batch of 64                         {:>9.1} ms",
        r.eval_batch64_ms
    );
    println!(
        "  evaluation, 402 videos                          {:>9.2} s",
        r.eval_402_s
    );
    println!(
        "  latency, one video                              {:>9.1} ms",
        r.latency_ms
    );
    println!(
        "  matmul [31360,512]x[512,512]                    {:>9.1} GFLOP/s",
        r.matmul_gflops_512
    );
    println!(
        "  matmul [31360,512]x[512,1536]                   {:>9.1} GFLOP/s",
        r.matmul_gflops_1536
    );
    println!(
        "  peak resident memory                            {:>9.0} MB",
        r.peak_rss_mb
    );
    Ok(())
}
