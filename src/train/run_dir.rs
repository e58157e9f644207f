//! A run directory, the same for every task that trains:
//!
//! ```text
//! RUN/train_config.json   the config, written first; `--resume` compares against it
//! RUN/metrics.jsonl       one line per finished epoch, appended and synced
//! RUN/best/               the model of the selected epoch
//! RUN/last/               model, optimizer state and state.json: where `--resume` continues
//! RUN/report.json         written when the last epoch is done
//! ```
//!
//! Checkpoint directories are replaced by rename, so a kill at any moment leaves the old one or
//! the new one (`last.old/` covers the moment between the two renames).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::checkpoint::native;

pub const LAST: &str = "last";
pub const BEST: &str = "best";
pub const STATE_FILE: &str = "state.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CONFIG_FILE: &str = "train_config.json";
pub const REPORT_FILE: &str = "report.json";

/// An epoch's scores on val and test (AVE: accuracy in %), `None` for a split the data lacks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochScore {
    pub epoch: usize,
    pub val_acc: Option<f64>,
    pub test_acc: Option<f64>,
}

/// Saved in `last/state.json`: where to continue, and the best epochs so far under both
/// protocols (selected on val, honest; selected on test, as the official script does).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    pub next_epoch: usize,
    pub best_val: Option<EpochScore>,
    pub best_test: Option<EpochScore>,
}

impl RunState {
    /// Takes an epoch's scores; returns whether the val score improved (strictly greater, like
    /// the official loop).
    pub fn record(&mut self, score: EpochScore) -> bool {
        let improved = |best: &Option<EpochScore>, get: fn(&EpochScore) -> Option<f64>| match (
            best.as_ref().and_then(get),
            get(&score),
        ) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(b), Some(s)) => s > b,
        };
        let val_improved = improved(&self.best_val, |s| s.val_acc);
        if val_improved {
            self.best_val = Some(score);
        }
        if improved(&self.best_test, |s| s.test_acc) {
            self.best_test = Some(score);
        }
        val_improved
    }
}

/// One line of `metrics.jsonl`.
pub trait EpochLog: Serialize + DeserializeOwned + Clone {
    /// 0-based epoch the line belongs to.
    fn epoch(&self) -> usize;
}

/// `(epoch, value)` points of a curve (1-based epochs on the x axis), lines without the value
/// left out.
pub fn curve<L: EpochLog>(history: &[L], value: impl Fn(&L) -> Option<f64>) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter_map(|m| value(m).map(|v| ((m.epoch() + 1) as f64, v)))
        .collect()
}

pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// Checks that `path` can take this run before anything is read or written: a directory
    /// holding a run needs `resume`; one with a run's files but no `last/` is refused either
    /// way. Returns the checkpoint to continue from (`None`: start fresh).
    pub fn open(path: &Path, resume: bool) -> Result<(Self, Option<PathBuf>)> {
        let run = Self {
            path: path.to_path_buf(),
        };
        let last = run.last_dir();
        if last.is_some() && !resume {
            bail!(
                "{} already holds a run (last/); pass --resume to continue it or choose another --out",
                path.display()
            );
        }
        let leftovers: Vec<&str> = [BEST, REPORT_FILE, METRICS_FILE]
            .into_iter()
            .filter(|f| path.join(f).exists())
            .collect();
        if last.is_none() && !leftovers.is_empty() {
            bail!(
                "{} holds files of an earlier run ({}) but no last/ to resume from; \
                 nothing was changed: choose another --out, or move those files away",
                path.display(),
                leftovers.join(", ")
            );
        }
        Ok((run, last.filter(|_| resume)))
    }

    /// `last/`, or `last.old/` if a kill interrupted the swap between the two renames.
    fn last_dir(&self) -> Option<PathBuf> {
        [LAST, "last.old"]
            .iter()
            .map(|n| self.path.join(n))
            .find(|p| p.join(STATE_FILE).exists())
    }

    /// Creates the directory and writes the config of a fresh run.
    pub fn start<C: Serialize>(&self, config: &C) -> Result<()> {
        fs::create_dir_all(&self.path)
            .with_context(|| format!("creating {}", self.path.display()))?;
        self.write_json(CONFIG_FILE, config)?;
        let _ = fs::remove_file(self.path.join(METRICS_FILE));
        Ok(())
    }

    /// The config the run was started with.
    pub fn saved_config<C: DeserializeOwned>(&self) -> Result<C> {
        read_json(&self.path.join(CONFIG_FILE), "saved config")
    }

    /// `--resume` continues the saved run with its own config; the one change allowed is more
    /// `epochs` (extending a run), unless `may_extend(saved, cfg)` objects. The saved config is
    /// then updated. Otherwise the error names the fields that differ.
    pub fn check_resume<C: Serialize + DeserializeOwned>(
        &self,
        cfg: &C,
        epochs: impl Fn(&C) -> usize,
        may_extend: impl Fn(&C, &C) -> Result<()>,
    ) -> Result<()> {
        let saved: C = self.saved_config()?;
        let diff = config_diff(&saved, cfg);
        if diff.is_empty() {
            return Ok(());
        }
        if diff == ["epochs"] && epochs(cfg) > epochs(&saved) {
            may_extend(&saved, cfg)?;
            return self.write_json(CONFIG_FILE, cfg);
        }
        bail!(
            "{}: --resume needs the training config of the saved run ({}); these fields differ: {}",
            self.path.display(),
            self.path.join(CONFIG_FILE).display(),
            diff.join(", ")
        )
    }

    pub fn write_json<S: Serialize>(&self, name: &str, value: &S) -> Result<()> {
        let bytes = serde_json::to_string_pretty(value)?;
        native::write_atomic(&self.path.join(name), bytes.as_bytes())
    }

    /// The metric lines of epochs before `next_epoch`; later lines (an epoch killed after its
    /// line was appended, which will be recomputed) are dropped from the file.
    pub fn history<L: EpochLog>(&self, next_epoch: usize) -> Result<Vec<L>> {
        let path = self.path.join(METRICS_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut lines = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let m: L = serde_json::from_str(line)
                .with_context(|| format!("{}: bad line {}", path.display(), i + 1))?;
            if m.epoch() < next_epoch {
                lines.push(m);
            }
        }
        let body: String = lines
            .iter()
            .map(|m| serde_json::to_string(m).map(|s| s + "\n"))
            .collect::<Result<_, _>>()?;
        native::write_atomic(&path, body.as_bytes())?;
        Ok(lines)
    }

    /// Appends one epoch's line to `metrics.jsonl` and syncs it.
    pub fn append_metrics<L: EpochLog>(&self, line: &L) -> Result<()> {
        let path = self.path.join(METRICS_FILE);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{}", serde_json::to_string(line)?)?;
        f.sync_all()?;
        Ok(())
    }

    /// Replaces the checkpoint directory `name` atomically: files go to `<name>.tmp/`, which
    /// then takes its place by rename (the old one is removed only after the new one is in).
    pub fn save_checkpoint(
        &self,
        name: &str,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let tmp = self.path.join(format!("{name}.tmp"));
        let old = self.path.join(format!("{name}.old"));
        let dst = self.path.join(name);
        let _ = fs::remove_dir_all(&tmp);
        write(&tmp)?;
        if dst.exists() {
            let _ = fs::remove_dir_all(&old);
            fs::rename(&dst, &old).with_context(|| format!("renaming {}", dst.display()))?;
        }
        fs::rename(&tmp, &dst)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))?;
        let _ = fs::remove_dir_all(&old);
        Ok(())
    }

    /// Saves `last/`: what `write` puts there, then the state to continue from.
    pub fn save_last(
        &self,
        state: &RunState,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        self.save_checkpoint(LAST, |d| {
            write(d)?;
            let bytes = serde_json::to_string_pretty(state)?;
            native::write_atomic(&d.join(STATE_FILE), bytes.as_bytes())
        })
    }
}

/// Reads `last/state.json` of the checkpoint `dir`.
pub fn read_state(dir: &Path) -> Result<RunState> {
    read_json(&dir.join(STATE_FILE), "run state")
}

/// A JSON file of a run or checkpoint; the error names the file and what it should have been.
pub fn read_json<T: DeserializeOwned>(file: &Path, what: &str) -> Result<T> {
    fs::read(file)
        .map_err(anyhow::Error::from)
        .and_then(|b| Ok(serde_json::from_slice(&b)?))
        .with_context(|| format!("{}: unreadable {what}", file.display()))
}

/// The dotted names of the fields where two configs differ (`model.psi`, `epochs`).
pub fn config_diff<C: Serialize>(a: &C, b: &C) -> Vec<String> {
    use serde_json::Value;
    fn walk(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, v) in x {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(v, y.get(k).unwrap_or(&Value::Null), &p, out);
                }
            }
            _ if a != b => out.push(path.to_string()),
            _ => {}
        }
    }
    let (a, b) = (serde_json::to_value(a), serde_json::to_value(b));
    let mut out = Vec::new();
    walk(
        &a.expect("config serialises"),
        &b.expect("config serialises"),
        "",
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(epoch: usize, val: Option<f64>, test: Option<f64>) -> EpochScore {
        EpochScore {
            epoch,
            val_acc: val,
            test_acc: test,
        }
    }

    #[test]
    fn selection_is_strictly_better_on_each_split() {
        let mut s = RunState::default();
        assert!(s.record(score(0, Some(50.0), Some(40.0))));
        assert!(!s.record(score(1, Some(50.0), Some(45.0)))); // a tie keeps the first
        assert!(s.record(score(2, Some(51.0), Some(30.0))));
        assert!(!s.record(score(3, None, None)));
        assert_eq!(s.best_val.unwrap().epoch, 2);
        assert_eq!(s.best_test.unwrap().epoch, 1);
    }

    #[test]
    fn config_diff_names_nested_fields() {
        let a = serde_json::json!({"epochs": 3, "model": {"psi": 0.5, "d": 1}});
        let b = serde_json::json!({"epochs": 4, "model": {"psi": 0.5, "d": 2}});
        assert_eq!(config_diff(&a, &b), ["epochs", "model.d"]);
        assert!(config_diff(&a, &a).is_empty());
    }
}
