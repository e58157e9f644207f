//! Evaluation forwards of 64 videos in a loop, nothing else in the process: the time and the
//! system time / page faults of each, then the median and the fastest. `cace bench` times its
//! evaluation after the training steps, whose high-water mark lets the large-block cache keep
//! every evaluation size; this loop shows what `cace eval` on its own pays (BENCHMARKS.md).
//!
//!     cargo run --release --example eval_loop -- bf16 8     # precision, timed forwards

use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use cace_net::bench::{cpu_times, median};
use cace_net::config::ModelConfig;
use cace_net::model::{CaceNet, ForwardOptions};
use cace_net::precision::{self, Precision};

fn main() {
    cace_net::init_runtime();
    let args: Vec<String> = std::env::args().collect();
    let p = args.get(1).and_then(|p| p.parse::<Precision>().ok());
    let reps = args
        .get(2)
        .and_then(|r| r.parse::<usize>().ok())
        .filter(|&r| r > 0);
    let (Some(p), Some(reps)) = (p, reps) else {
        eprintln!("usage: eval_loop f32|bf16 REPS (REPS ≥ 1)");
        std::process::exit(2);
    };
    let device = cace_net::device::parse_device("cpu").expect("the CPU device");
    if let Err(e) = precision::check(p, &device) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    let _scope = precision::scope(p);
    let model = CaceNet::new(&ModelConfig::default(), &device.clone().autodiff())
        .expect("the default config is valid")
        .valid();
    let v = Tensor::<5>::random(
        [64, 10, 7, 7, 512],
        Distribution::Uniform(0.0, 0.5),
        &device,
    );
    let a = Tensor::<3>::random([64, 10, 128], Distribution::Uniform(0.0, 1.0), &device);
    let warmup = 3;
    let mut times = Vec::new();
    for i in 0..warmup + reps {
        let ((_, sys0, faults0), start) = (cpu_times(), std::time::Instant::now());
        let out = model.forward(v.clone(), a.clone(), ForwardOptions::bece_on());
        let _ = out.event_scores.into_data();
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let (_, sys1, faults1) = cpu_times();
        let tag = if i < warmup { " (warm-up)" } else { "" };
        println!(
            "{ms:.0} ms, system {:.0} ms, {} faults{tag}",
            (sys1 - sys0) * 1e3,
            faults1 - faults0
        );
        if i >= warmup {
            times.push(ms);
        }
    }
    let fastest = times.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{p}: median {:.1} ms, fastest {fastest:.1} ms",
        median(times)
    );
}
