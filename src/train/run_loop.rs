//! The epoch loop every task shares: train and evaluate an epoch, log it, keep the selected and
//! the last model. A task (AVE event localization here) supplies the epoch and the saving;
//! the loop supplies the order of the writes that makes a run survive `kill -9` at any moment.

use std::path::Path;

use anyhow::{Context, Result};

use super::run_dir::{BEST, EpochLog, EpochScore, LAST, RunDir, RunState};

/// One task's training, as the loop sees it.
pub trait Task {
    /// One line of `metrics.jsonl`.
    type Log: EpochLog;

    /// Trains epoch `epoch` (0-based) and evaluates it on val and test. Draws everything random
    /// from seeds derived from `epoch`, so a resumed run draws what an uninterrupted one would.
    fn epoch(&mut self, epoch: usize) -> Result<(Self::Log, EpochScore)>;

    /// The trained weights, read from the device once per epoch for `best/` and `last/`.
    type Weights;

    fn weights(&self) -> Self::Weights;

    /// Writes `weights` into a checkpoint directory (`best/` and `last/`).
    fn save_model(&self, weights: &Self::Weights, dir: &Path) -> Result<()>;

    /// Writes the rest of what `--resume` needs (optimizer state) into `last/`.
    fn save_resume_state(&self, dir: &Path) -> Result<()>;

    /// Called once an epoch is saved, with the history so far (print a line, draw curves).
    fn after_epoch(
        &self,
        _run: &RunDir,
        _history: &[Self::Log],
        _state: &RunState,
        _improved: bool,
    ) {
    }
}

/// Runs epochs `state.next_epoch..epochs` and returns the final state. After each epoch, in this
/// order: the metrics line, `best/` (when val improved; without a val split, at the last epoch),
/// then `last/` with the state to continue from. A kill between any two writes leaves a run
/// that `--resume` continues to the same result (the metrics line of an epoch not in `last/` is
/// dropped by [`RunDir::history`]).
pub fn run_epochs<T: Task>(
    run: &RunDir,
    task: &mut T,
    mut state: RunState,
    epochs: usize,
    has_val: bool,
    history: &mut Vec<T::Log>,
) -> Result<RunState> {
    for epoch in state.next_epoch..epochs {
        let (log, score) = task.epoch(epoch).with_context(|| {
            format!(
                "epoch {} of {} stopped; {} keeps the last finished epoch",
                epoch + 1,
                epochs,
                run.path.join(LAST).display()
            )
        })?;
        let improved = state.record(score);
        run.append_metrics(&log)?;
        history.push(log);
        let weights = task.weights();
        if improved || (!has_val && epoch + 1 == epochs) {
            run.save_checkpoint(BEST, |d| task.save_model(&weights, d))?;
        }
        state.next_epoch = epoch + 1;
        run.save_last(&state, |d| {
            task.save_model(&weights, d)?;
            task.save_resume_state(d)
        })?;
        task.after_epoch(run, history, &state, improved);
    }
    Ok(state)
}

/// A progress bar over an epoch's batches (`None` when quiet).
pub fn progress_bar(
    verbose: bool,
    len: usize,
    epoch: usize,
    epochs: usize,
) -> Option<indicatif::ProgressBar> {
    if !verbose {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}  {per_sec}  eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    Some(bar)
}
