use super::args::{DeviceArg, PrecisionArg};
use anyhow::Result;
use cace_net::bench;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    precision: PrecisionArg,
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
    /// Also run the official model in PyTorch (`tools/bench_torch.py`, same batch, f32, as many
    /// threads as this run) with this Python, right after, and print the ratios.
    #[arg(long, value_name = "PYTHON", conflicts_with_all = ["dense", "finetune"])]
    compare_pytorch: Option<std::path::PathBuf>,
    /// Dense training config (JSON) for --dense.
    #[arg(long, requires = "dense")]
    config: Option<std::path::PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device.get()?;
    if let Some(data) = &a.dense {
        let cfg: cace_net::dense::train::DenseTrainConfig =
            super::train::config_or_default(a.config.as_ref(), "dense training config")?;
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
            println!(
                "  cores busy: step {:.2}, eval {:.2}; system time per step {:.0} ms ({:.0} page \
                 faults), per eval forward {:.0} ms ({:.0})",
                r.step_cpu_util,
                r.eval_cpu_util,
                r.step_sys_ms,
                r.step_faults,
                r.eval_sys_ms,
                r.eval_faults
            );
        }
        return Ok(());
    }
    let r = {
        let _precision = a.precision.enter(&device)?;
        bench::run(&device, a.reps.max(1))
    };
    let torch = match &a.compare_pytorch {
        Some(python) => Some(pytorch(python, a.reps.max(1))?),
        None => None,
    };
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(t) = &torch {
            v["pytorch"] = t.clone();
        }
        println!("{v}");
        return Ok(());
    }
    println!(
        "cace bench on {} ({} threads, {}), batch {}, median of {} after warm-up",
        r.device, r.threads, r.precision, r.batch, a.reps
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
    println!(
        "  cores busy: training {:.2}, evaluation {:.2}; peak RSS of each phase: {:.0} / {:.0} MB",
        r.train_cpu_util, r.eval_cpu_util, r.train_peak_rss_mb, r.eval_peak_rss_mb
    );
    println!(
        "  system time per step / per batch: {:.0} / {:.0} ms ({:.0} / {:.0} page faults)",
        r.train_sys_ms, r.eval_sys_ms, r.train_faults, r.eval_faults
    );
    println!(
        "  peak live heap (what the tensors need; RSS adds what the allocator keeps): {:.0} / {:.0} MB",
        r.train_peak_heap_mb, r.eval_peak_heap_mb
    );
    if let Some(t) = torch {
        let get = |k: &str| t[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "PyTorch ({}), same run:",
            t["torch_version"].as_str().unwrap_or("?")
        );
        println!(
            "  training step {:.1} ms (cace / PyTorch = {:.2}×), evaluation of 64 {:.1} ms ({:.2}×), peak RSS {:.0} MB ({:.2}×), matmul {:.1} / {:.1} GFLOP/s",
            get("train_step_ms"),
            r.train_step_ms / get("train_step_ms"),
            get("eval_batch64_ms"),
            r.eval_batch64_ms / get("eval_batch64_ms"),
            get("peak_rss_mb"),
            r.peak_rss_mb / get("peak_rss_mb"),
            get("matmul_gflops_512"),
            get("matmul_gflops_1536"),
        );
    }
    Ok(())
}

/// `PYTHON tools/bench_torch.py --json` with this process's threads and repetitions.
fn pytorch(python: &std::path::Path, reps: usize) -> Result<serde_json::Value> {
    let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bench_torch.py");
    if !tool.exists() {
        anyhow::bail!(
            "--compare-pytorch needs {} (part of the source tree)",
            tool.display()
        );
    }
    let threads = rayon::current_num_threads().to_string();
    let out = std::process::Command::new(python)
        .arg(&tool)
        .args([
            "--threads",
            &threads,
            "--dtype",
            "float32",
            "--reps",
            &reps.to_string(),
            "--json",
        ])
        .output()
        .map_err(|e| anyhow::anyhow!("--compare-pytorch: cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "--compare-pytorch: {} {} failed: {}",
            python.display(),
            tool.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).map_err(|e| {
        anyhow::anyhow!(
            "--compare-pytorch: no JSON line from {}: {e}",
            tool.display()
        )
    })
}
