//! Figures (placeholder until the plotting module lands).
use std::path::Path;
pub fn curves_for_run(
    _run: &Path,
    _history: &[crate::train::EpochMetrics],
    _best: Option<usize>,
) -> anyhow::Result<()> {
    Ok(())
}
