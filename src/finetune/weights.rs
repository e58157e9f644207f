//! Encoder weights in and out of the fine-tuning: torchvision's pretrained `.pth` files (or an
//! earlier fine-tuning's output) in, and the two files a run leaves out: `resnet50.pth` /
//! `vgg19_bn.pth` under torchvision's keys (what `cace extract --weights` reads) and
//! `I_state_dict.pth.tar`, `{"I_state_dict": ...}` under the official `Sequential` keys (what
//! the official extractor and other Python tools load).

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;

use super::backbone::{Backbone, BackboneKind, sequential_key, torchvision_key};
use crate::checkpoint::torch_save::{self, SaveTensor, TensorValues};
use crate::checkpoint::{StateDict, StoredTensor, load_state_dict, pth, state_dict};
use crate::model::state::ParamList;

/// The official file name of the wrapped encoder.
pub const I_STATE_DICT_FILE: &str = "I_state_dict.pth.tar";

/// Reads encoder weights into `backbone`. Accepts torchvision's keys (`conv1.weight`,
/// `features.0.weight`) or the official `Sequential` ones (`0.weight`), optionally under
/// `module.` and/or `encoder_I.`, plain or wrapped (`I_state_dict`, `state_dict`, `model`).
/// Keys of other heads (`fc.*`, `classifier.*`) are ignored; every tensor the encoder needs must
/// be there with its shape. Returns BatchNorm's `num_batches_tracked` (0 if absent).
pub fn load_backbone(
    backbone: &mut Backbone,
    kind: BackboneKind,
    path: &Path,
    device: &Device,
) -> Result<u64> {
    if !path.is_file() {
        bail!("encoder weights {}: file not found", path.display());
    }
    let wanted: std::collections::HashSet<String> = ParamList::of(backbone)
        .entries
        .into_iter()
        .map(|e| e.0)
        .collect();
    let mut tracked = 0;
    let mut sd = StateDict::default();
    for (key, t) in pth::read_state_dict(path)? {
        let key = torchvision_name(kind, &key, &wanted);
        if key.ends_with(".num_batches_tracked") {
            tracked = t.data.first().copied().unwrap_or(0.0) as u64;
        } else if wanted.contains(&key) {
            let (shape, data) = (t.shape, t.data);
            sd.entries.push((key, StoredTensor { shape, data }));
        }
    }
    load_state_dict(backbone, sd, device, path).with_context(|| {
        format!(
            "loading {kind:?} weights (torchvision `{}` layout)",
            kind.weights_file()
        )
    })?;
    Ok(tracked)
}

/// `key` under torchvision's name: prefixes dropped, a `Sequential` index mapped.
fn torchvision_name(
    kind: BackboneKind,
    key: &str,
    wanted: &std::collections::HashSet<String>,
) -> String {
    let mut k = key;
    for prefix in ["module.", "encoder_I."] {
        k = k.strip_prefix(prefix).unwrap_or(k);
    }
    let running_var = format!("{}.running_var", k.trim_end_matches(".num_batches_tracked"));
    if wanted.contains(k) || wanted.contains(&running_var) {
        return k.to_string();
    }
    torchvision_key(kind, k).unwrap_or_else(|| k.to_string())
}

/// Writes the encoder as `dir/<resnet50|vgg19_bn>.pth` and `dir/I_state_dict.pth.tar`.
pub fn save_backbone(
    backbone: &Backbone,
    kind: BackboneKind,
    batches_tracked: u64,
    dir: &Path,
) -> Result<()> {
    let sd = state_dict(backbone);
    let torchvision = with_batch_counts(sd, batches_tracked);
    torch_save::save(&dir.join(kind.weights_file()), &torchvision, None)?;
    let sequential: Vec<(String, SaveTensor)> = torchvision
        .into_iter()
        .map(|(k, t)| (sequential_key(kind, &k), t))
        .collect();
    torch_save::save(
        &dir.join(I_STATE_DICT_FILE),
        &sequential,
        Some("I_state_dict"),
    )
}

/// The state dict as PyTorch has it: each BatchNorm's `num_batches_tracked` (int64, 0-d) after
/// its `running_var`.
fn with_batch_counts(sd: StateDict, batches_tracked: u64) -> Vec<(String, SaveTensor)> {
    let mut out = Vec::with_capacity(sd.entries.len() * 5 / 4);
    for (key, t) in sd.entries {
        let bn = key.strip_suffix(".running_var").map(str::to_string);
        out.push((
            key,
            SaveTensor {
                shape: t.shape,
                values: TensorValues::F32(t.data),
            },
        ));
        if let Some(bn) = bn {
            out.push((
                format!("{bn}.num_batches_tracked"),
                SaveTensor {
                    shape: vec![],
                    values: TensorValues::I64(vec![batches_tracked as i64]),
                },
            ));
        }
    }
    out
}
