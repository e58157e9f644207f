//! Training with the official objective and schedule (REFERENCE §4), an honest protocol
//! (best epoch chosen on **val**) beside the official one (best epoch on **test**), and runs
//! that survive being killed: `last/` is replaced atomically after every epoch and `--resume`
//! continues from it with the same result as an uninterrupted run.
//!
//! Determinism: the shuffle and the backend RNG (dropout, BECE noise) are re-seeded at the start
//! of every epoch from `(seed, epoch)`, so a resumed run draws exactly what the uninterrupted run
//! would have drawn, without saving RNG internals.
//!
//! The loop itself ([`run_loop::run_epochs`]) and the run directory ([`run_dir::RunDir`]) are
//! shared by every task; [`ave::AveTask`] is AVE event localization.

mod ave;
mod config;
pub mod optimizer_io;
mod report;
pub mod run_dir;
pub mod run_loop;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::Device;

pub use ave::{AveData, AveTask, EpochMetrics, evaluate, split_warnings};
pub use config::TrainConfig;
pub use report::{MeanStd, Report, SeedSummary, fmt_acc, print_report};
pub use run_dir::{CONFIG_FILE, EpochScore, REPORT_FILE};
use run_dir::{RunDir, RunState, read_state};
use run_loop::run_epochs;

/// Options of one `cace train` run.
pub struct RunOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    pub config: TrainConfig,
    pub resume: bool,
    pub device: Device,
    /// Print one line per epoch and show a progress bar.
    pub verbose: bool,
}

/// Trains one AVE run; returns its report.
pub fn train(opts: &RunOptions) -> Result<Report> {
    let cfg = &opts.config;
    cfg.validate()?;
    crate::precision::check(cfg.precision, &opts.device)?;
    let _precision = crate::precision::scope(cfg.precision);
    let started = Instant::now();
    let (run, last) = RunDir::open(&opts.out, opts.resume)?;
    let data = AveData::prepare(&opts.data, cfg, &opts.device)?;
    let (mut task, state) = match &last {
        Some(dir) => {
            check_resumable(&run, cfg)?;
            let state = read_state(dir)?;
            (
                AveTask::resume(cfg, data, dir, &opts.device, opts.verbose)?,
                state,
            )
        }
        None => {
            run.start(cfg)?;
            let task = AveTask::fresh(cfg, data, &opts.device, opts.verbose)?;
            (task, RunState::default())
        }
    };
    let mut history = run.history(state.next_epoch)?;
    let has_val = task.has_val();
    let state = run_epochs(&run, &mut task, state, cfg.epochs, has_val, &mut history)?;

    let report = Report {
        epochs: cfg.epochs,
        best_val_epoch: state.best_val.map(|s| s.epoch),
        val_acc_at_best_val: state.best_val.and_then(|s| s.val_acc),
        test_acc_at_best_val: state.best_val.and_then(|s| s.test_acc),
        test_acc_best_over_epochs: state.best_test.and_then(|s| s.test_acc),
        best_test_epoch: state.best_test.map(|s| s.epoch),
        final_test_acc: history.last().and_then(|m| m.test_acc),
        seed: cfg.seed,
        train_seconds: started.elapsed().as_secs_f64(),
    };
    run.write_json(REPORT_FILE, &report)?;
    Ok(report)
}

/// `--resume` may extend a run with more `epochs` only when BECE's start epoch stays where it
/// was ([`RunDir::check_resume`]).
fn check_resumable(run: &RunDir, cfg: &TrainConfig) -> Result<()> {
    run.check_resume(
        cfg,
        |c| c.epochs,
        |saved, cfg| {
            if cfg.bece_start() == saved.bece_start() {
                return Ok(());
            }
            bail!(
                "{}: extending the run to {} epochs would move BECE's start from epoch {} to {}; \
             set \"bece_start_epoch\": {} in the config to keep it",
                run.path.display(),
                cfg.epochs,
                saved.bece_start(),
                cfg.bece_start(),
                saved.bece_start()
            )
        },
    )
}
