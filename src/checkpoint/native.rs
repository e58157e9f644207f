//! Native checkpoint: a directory with `model.safetensors` (float32, official key names and
//! PyTorch shapes) and `config.json`. Written atomically: each file goes to a temporary name in
//! the same directory and is renamed into place, so an interrupted save never leaves a torn file.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{StateDict, StoredTensor};
use crate::config::ModelConfig;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

/// `(weights file, config file)` for a checkpoint path (the directory or its weights file).
pub fn paths(path: &Path) -> (PathBuf, PathBuf) {
    if path.is_dir() {
        (path.join(WEIGHTS_FILE), path.join(CONFIG_FILE))
    } else {
        let dir = path.parent().unwrap_or(Path::new("."));
        (path.to_path_buf(), dir.join(CONFIG_FILE))
    }
}

/// Replaces `path` with `bytes` atomically and durably, naming the path in the error.
pub use crate::fsutil::write_file as write_atomic;

pub fn write(dir: &Path, sd: &StateDict, config: &ModelConfig) -> Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("creating checkpoint directory {}", dir.display()))?;
    write_atomic(&dir.join(WEIGHTS_FILE), &to_safetensors(sd, None)?)?;
    write_atomic(
        &dir.join(CONFIG_FILE),
        serde_json::to_string_pretty(config)?.as_bytes(),
    )?;
    Ok(())
}

/// `sd` as safetensors bytes (F32), its key order kept in the metadata, with one more
/// metadata entry `extra = (name, value)` if given.
pub fn to_safetensors(sd: &StateDict, extra: Option<(&str, String)>) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = sd
        .entries
        .iter()
        .map(|(_, t)| t.data.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = sd
        .entries
        .iter()
        .zip(&bytes)
        .map(|((k, t), b)| Ok((k.clone(), TensorView::new(Dtype::F32, t.shape.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    // safetensors orders its header by name; the key order (the official state-dict order) is
    // kept in the metadata.
    let keys: Vec<&str> = sd.entries.iter().map(|(k, _)| k.as_str()).collect();
    // Few entries: safetensors writes a map's entries in hash order, and the file bytes are
    // reproducible only with one (a native checkpoint has one).
    let mut metadata = std::collections::HashMap::from([(
        "cace-net.keys".to_string(),
        serde_json::to_string(&keys)?,
    )]);
    if let Some((name, value)) = extra {
        metadata.insert(name.to_string(), value);
    }
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// Reads a native checkpoint; tensors come back in the order they were written.
pub fn read(path: &Path) -> Result<(StateDict, ModelConfig)> {
    let (weights, config_path) = paths(path);
    let config_text = fs::read_to_string(&config_path).with_context(|| {
        format!(
            "checkpoint {}: cannot read its config {}",
            path.display(),
            config_path.display()
        )
    })?;
    let config: ModelConfig = serde_json::from_str(&config_text)
        .with_context(|| format!("{}: not a valid model config", config_path.display()))?;
    let bytes = fs::read(&weights).with_context(|| {
        format!(
            "checkpoint {}: cannot read {}",
            path.display(),
            weights.display()
        )
    })?;
    Ok((from_safetensors(&bytes, &weights)?, config))
}

/// The state dict in safetensors `bytes` read from `weights` (named in errors), in the order
/// it was written.
pub fn from_safetensors(bytes: &[u8], weights: &Path) -> Result<StateDict> {
    let st = SafeTensors::deserialize(bytes).with_context(|| {
        format!(
            "{}: not a valid safetensors file (truncated?)",
            weights.display()
        )
    })?;
    let mut named: Vec<(String, TensorView<'_>)> = st.tensors();
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let order: Vec<String> = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("cace-net.keys"))
        .and_then(|k| serde_json::from_str(k).ok())
        .unwrap_or_default();
    let rank = |name: &str| order.iter().position(|k| k == name).unwrap_or(usize::MAX);
    named.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    let mut sd = StateDict::default();
    for (name, view) in named {
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            other => bail!(
                "{}: tensor `{name}` has dtype {other:?}; expected F32 or F64",
                weights.display()
            ),
        };
        sd.entries.push((
            name,
            StoredTensor {
                shape: view.shape().to_vec(),
                data,
            },
        ));
    }
    Ok(sd)
}
