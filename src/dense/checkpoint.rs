//! Dense model checkpoints. Ours: a directory with `model.safetensors` (the trained weights),
//! `ema.safetensors` (their moving average, what evaluation scores, as the official `eval.py`)
//! and `train_config.json` (model, data and training settings), under the official state-dict
//! keys. Official: the `.pth.tar` of the UnAV `train.py` (`state_dict`, `state_dict_ema` with
//! `nn.DataParallel`'s `module.` prefix, optimizer, scheduler), whose config is not in the file
//! and is given separately.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;

use super::model::DenseModel;
use super::train::DenseTrainConfig;
use crate::checkpoint::{self, StateDict, StoredTensor, native, pth};
use crate::fsutil::write_file;
use crate::train::run_dir::read_json;

pub const MODEL_FILE: &str = "model.safetensors";
pub const EMA_FILE: &str = "ema.safetensors";
pub const CONFIG_FILE: &str = "train_config.json";
/// The class names of the training annotations, `[[name, id], ...]`.
pub const CLASSES_FILE: &str = "classes.json";

/// Which weights of a checkpoint to use.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// The moving average (official evaluation).
    Ema,
    /// The weights as trained.
    Model,
}

pub fn save(
    dir: &Path,
    model: &StateDict,
    ema: &StateDict,
    cfg: &DenseTrainConfig,
    names: &[(String, i64)],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_file(
        &dir.join(CLASSES_FILE),
        serde_json::to_string(names)?.as_bytes(),
    )?;
    write_file(&dir.join(MODEL_FILE), &native::to_safetensors(model, None)?)?;
    write_file(&dir.join(EMA_FILE), &native::to_safetensors(ema, None)?)?;
    write_file(
        &dir.join(CONFIG_FILE),
        serde_json::to_string_pretty(cfg)?.as_bytes(),
    )
}

/// A run directory means its `best/`; a directory is ours, a file an official `.pth.tar`.
fn resolve(path: &Path) -> PathBuf {
    let best = path.join("best");
    if path.is_dir() && best.join(CONFIG_FILE).exists() && !path.join(MODEL_FILE).exists() {
        best
    } else {
        path.to_path_buf()
    }
}

/// Reads a checkpoint's config and state dict. `config` is required for an official file and
/// overrides the stored one of ours (shapes must still match).
pub fn read(
    path: &Path,
    which: Weights,
    config: Option<DenseTrainConfig>,
) -> Result<(StateDict, DenseTrainConfig, PathBuf)> {
    let path = resolve(path);
    if path.is_dir() {
        let cfg_file = path.join(CONFIG_FILE);
        let cfg = match config {
            Some(c) => c,
            None if !cfg_file.exists() => {
                bail!(
                    "{}: not a dense checkpoint (no {CONFIG_FILE})",
                    path.display()
                )
            }
            None => read_json(&cfg_file, "config")?,
        };
        let file = path.join(match which {
            Weights::Ema => EMA_FILE,
            Weights::Model => MODEL_FILE,
        });
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        return Ok((native::from_safetensors(&bytes, &file)?, cfg, file));
    }
    if !path.exists() {
        bail!("checkpoint {}: no such file or directory", path.display());
    }
    let Some(cfg) = config else {
        bail!(
            "{}: an official UnAV checkpoint does not hold its model config; pass --config JSON \
             (the `model` settings it was trained with)",
            path.display()
        );
    };
    let wrappers: &[&str] = match which {
        Weights::Ema => &["state_dict_ema"],
        Weights::Model => &["state_dict"],
    };
    let entries = pth::read_state_dict_under(&path, wrappers)?
        .into_iter()
        .map(|(k, t)| {
            let t = StoredTensor {
                shape: t.shape,
                data: t.data,
            };
            (k, t)
        })
        .collect();
    let sd = StateDict { entries }.strip_data_parallel_prefix();
    Ok((sd, cfg, path))
}

/// The class names a checkpoint of ours was trained with (empty for an official file or when
/// the file is absent).
pub fn class_names(path: &Path) -> Result<Vec<(String, i64)>> {
    let file = resolve(path).join(CLASSES_FILE);
    if !file.exists() {
        return Ok(Vec::new());
    }
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a list of [name, id]", file.display()))
}

/// The model of a checkpoint on `device`, with the config it was built from.
pub fn load(
    path: &Path,
    which: Weights,
    config: Option<DenseTrainConfig>,
    device: &Device,
) -> Result<(DenseModel, DenseTrainConfig)> {
    let (sd, cfg, file) = read(path, which, config)?;
    cfg.validate()
        .with_context(|| format!("checkpoint {}: invalid config", file.display()))?;
    let mut model = DenseModel::new(&cfg.model, device)?;
    checkpoint::load_state_dict(&mut model, sd, device, &file)?;
    Ok((model, cfg))
}
