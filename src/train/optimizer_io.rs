//! Saving and loading the Adam state of a run (`last/optimizer.safetensors`): both moments of
//! every parameter, flattened, with the per-parameter step counts in the metadata.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};

use crate::checkpoint::native;
use crate::model::state::ParamList;
use crate::optim::{Adam, AdamConfig, AdamState};
use crate::to_vec;

pub fn save(path: &Path, adam: &Adam) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let mut keys: Vec<&String> = adam.state.keys().collect();
    keys.sort();
    let mut blobs = Vec::new();
    let mut steps = std::collections::BTreeMap::new();
    for k in &keys {
        let st = &adam.state[*k];
        steps.insert((*k).clone(), st.step);
        for (kind, t) in [("exp_avg", &st.exp_avg), ("exp_avg_sq", &st.exp_avg_sq)] {
            let v = to_vec(t.clone());
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            blobs.push((format!("{kind}/{k}"), v.len(), bytes));
        }
    }
    let views = blobs
        .iter()
        .map(|(n, len, b)| Ok((n.clone(), TensorView::new(Dtype::F32, vec![*len], b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let meta = HashMap::from([("steps".to_string(), serde_json::to_string(&steps)?)]);
    native::write_atomic(path, &safetensors::serialize(views, Some(meta))?)
}

/// Reads the Adam state for a model with the parameters `params`: every moment must be the F32
/// vector of one of them, so a damaged or foreign file is an error naming the file and the
/// tensor rather than a shape mismatch in the first step.
pub fn load(path: &Path, config: AdamConfig, params: &ParamList, device: &Device) -> Result<Adam> {
    use safetensors::SafeTensors;
    let bytes =
        fs::read(path).with_context(|| format!("reading optimizer state {}", path.display()))?;
    let not_safetensors = || format!("{}: not a valid safetensors file", path.display());
    let st = SafeTensors::deserialize(&bytes).with_context(not_safetensors)?;
    let (_, header) = SafeTensors::read_metadata(&bytes).with_context(not_safetensors)?;
    let steps: HashMap<String, u64> = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("steps"))
        .with_context(|| format!("{}: no step counts", path.display()))
        .and_then(|s| {
            serde_json::from_str(s).with_context(|| {
                format!(
                    "{}: step counts are not a JSON map of names to counts",
                    path.display()
                )
            })
        })?;
    let sizes: HashMap<&str, usize> = params
        .entries
        .iter()
        .map(|(k, _, shape)| (k.as_str(), shape.iter().product()))
        .collect();
    let read = |name: String, size: usize| -> Result<Tensor<1>> {
        let v = st
            .tensor(&name)
            .with_context(|| format!("{}: missing {name}", path.display()))?;
        if v.dtype() != safetensors::Dtype::F32 || v.shape() != [size] {
            bail!(
                "{}: `{name}` is {:?} of shape {:?}; expected F32 of shape [{size}] (the parameter's size)",
                path.display(),
                v.dtype(),
                v.shape()
            );
        }
        let data: Vec<f32> = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4-byte chunks")))
            .collect();
        Ok(Tensor::from_data(TensorData::new(data, [size]), device))
    };
    let mut adam = Adam::new(config);
    for (k, step) in steps {
        let size = *sizes.get(k.as_str()).with_context(|| {
            format!(
                "{}: step count of `{k}`, which is not a parameter of the model",
                path.display()
            )
        })?;
        let exp_avg = read(format!("exp_avg/{k}"), size)?;
        let exp_avg_sq = read(format!("exp_avg_sq/{k}"), size)?;
        adam.state.insert(
            k,
            AdamState {
                step,
                exp_avg,
                exp_avg_sq,
            },
        );
    }
    Ok(adam)
}
