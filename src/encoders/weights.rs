//! Encoder weights from PyTorch `.pth` files, by state-dict key, with shape checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::checkpoint::pth::{PthTensor, read_state_dict};

/// A state dict read from one `.pth` file; tensors are taken out by key.
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, PthTensor>,
}

impl Weights {
    /// Reads `path` (a plain state dict, or a dict holding it under `state_dict` / `model`).
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!("encoder weights {}: file not found", path.display());
        }
        let tensors = read_state_dict(path)?.into_iter().collect();
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// The file the weights came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The values of `key`, which must have exactly `shape`; the error names the file and key.
    pub fn take(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let Some(t) = self.tensors.remove(key) else {
            bail!(
                "encoder weights {}: missing key `{key}`",
                self.path.display()
            );
        };
        if t.shape != shape {
            bail!(
                "encoder weights {}: key `{key}` has shape {:?}, expected {:?}",
                self.path.display(),
                t.shape,
                shape
            );
        }
        Ok(t.data)
    }

    /// Whether `key` is present (not yet taken).
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }
}
