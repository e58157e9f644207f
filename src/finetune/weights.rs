//! The two files a fine-tuning run leaves (reading them back: [`crate::encoders::backbone::load_backbone`]): `resnet50.pth` /
//! `vgg19_bn.pth` under torchvision's keys (what `cace extract --weights` reads) and
//! `I_state_dict.pth.tar`, `{"I_state_dict": ...}` under the official `Sequential` keys (what
//! the official extractor and other Python tools load).

use std::path::Path;

use anyhow::Result;

use crate::checkpoint::torch_save::{self, SaveTensor, TensorValues};
use crate::checkpoint::{StateDict, state_dict};
use crate::encoders::backbone::{Backbone, BackboneKind, sequential_key};

/// The official file name of the wrapped encoder.
pub const I_STATE_DICT_FILE: &str = "I_state_dict.pth.tar";

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
