//! Checkpoints: the official PyTorch `.pth.tar` (read only) and our native format.
//!
//! Both are state dicts with the official key names (REFERENCE §3.2, without the `module.`
//! prefix that `nn.DataParallel` adds); [`load_state_dict`] maps one onto a [`CaceNet`] through
//! [`HasState`], so the two formats share one code path and one set of error messages.
//!
//! Native format (a directory): `model.safetensors` (float32, PyTorch shapes and names, the 242
//! keys of the official file) and `config.json` (the [`ModelConfig`]).

pub mod native;
pub mod pth;
pub mod torch_save;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use crate::config::{Guide, ModelConfig};
use crate::model::CaceNet;
use crate::model::state::{HasState, Layout, ParamList, Prefix, StateVisitor, stored_shape};
use crate::model::temporal::TemporalKind;

/// A tensor as a state dict stores it: PyTorch shape, row-major f32 values.
#[derive(Debug, Clone)]
pub struct StoredTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Named tensors: a native checkpoint's in the order written, an official one's sorted by name
/// (its reader cannot give file order); [`load`] puts them in the model's (official) order.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    pub entries: Vec<(String, StoredTensor)>,
}

impl StateDict {
    /// Drops the `module.` prefix of `nn.DataParallel` when every key carries it.
    pub fn strip_data_parallel_prefix(mut self) -> Self {
        if !self.entries.is_empty() && self.entries.iter().all(|(k, _)| k.starts_with("module.")) {
            for (k, _) in self.entries.iter_mut() {
                *k = k["module.".len()..].to_string();
            }
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&StoredTensor> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, t)| t)
    }

    pub fn numel(&self) -> usize {
        self.entries.iter().map(|(_, t)| t.data.len()).sum()
    }

    /// The entries in the order of `keys`; entries not listed keep their order after them.
    pub fn ordered_by<'a>(mut self, keys: impl IntoIterator<Item = &'a str>) -> Self {
        let rank: HashMap<&str, usize> =
            keys.into_iter().enumerate().map(|(i, k)| (k, i)).collect();
        self.entries
            .sort_by_key(|(k, _)| rank.get(k.as_str()).copied().unwrap_or(usize::MAX));
        self
    }
}

/// A row-major `rows × cols` matrix transposed (PyTorch's `[out, in]` ↔ burn's `[in, out]`).
pub fn transpose2(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

struct Loader<'a> {
    tensors: HashMap<String, StoredTensor>,
    device: &'a Device,
    error: Option<String>,
}

impl StateVisitor for Loader<'_> {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        _used: bool,
        param: &mut Param<Tensor<D>>,
        layout: Layout,
    ) {
        if self.error.is_some() {
            return;
        }
        let Some(t) = self.tensors.remove(key) else {
            self.error = Some(format!("has no tensor `{key}`, which the model needs"));
            return;
        };
        let dims = param.lazy_shape().dims::<D>().to_vec();
        let expected = stored_shape(&dims, layout);
        if t.shape != expected {
            self.error = Some(format!(
                "tensor `{key}` has shape {:?} but the model config expects {:?}",
                t.shape, expected
            ));
            return;
        }
        if let Some(i) = t.data.iter().position(|x| !x.is_finite()) {
            self.error = Some(format!(
                "tensor `{key}` holds a non-finite value ({}) at flat index {i}",
                t.data[i]
            ));
            return;
        }
        let data = match layout {
            Layout::Same | Layout::Scalar => t.data,
            Layout::Transposed => transpose2(&t.data, t.shape[0], t.shape[1]),
        };
        *param = Param::from_tensor(Tensor::from_data(TensorData::new(data, dims), self.device));
    }
}

/// Copies a state dict into `model`. Every key the model has must be present with the right
/// shape, and the file may hold no other key; the first offending key is named.
pub fn load_state_dict<M: HasState>(
    model: &mut M,
    sd: StateDict,
    device: &Device,
    source: &Path,
) -> Result<()> {
    let order: Vec<String> = sd.entries.iter().map(|(k, _)| k.clone()).collect();
    let mut loader = Loader {
        tensors: sd.entries.into_iter().collect(),
        device,
        error: None,
    };
    model.visit_state(&Prefix::root(), &mut loader);
    if let Some(e) = loader.error {
        bail!("checkpoint {}: {e}", source.display());
    }
    if let Some(extra) = order.iter().find(|k| loader.tensors.contains_key(*k)) {
        bail!(
            "checkpoint {}: tensor `{extra}` does not belong to a model with this config",
            source.display()
        );
    }
    Ok(())
}

struct Saver {
    sd: StateDict,
}

impl StateVisitor for Saver {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        _used: bool,
        param: &mut Param<Tensor<D>>,
        layout: Layout,
    ) {
        let value = param.val();
        let dims = value.dims().to_vec();
        let data = crate::to_vec(value);
        let data = match layout {
            Layout::Same | Layout::Scalar => data,
            Layout::Transposed => transpose2(&data, dims[0], dims[1]),
        };
        self.sd.entries.push((
            key.to_string(),
            StoredTensor {
                shape: stored_shape(&dims, layout),
                data,
            },
        ));
    }
}

/// The model's parameters under their official keys, in official order.
pub fn state_dict<M: HasState + Clone>(model: &M) -> StateDict {
    let mut saver = Saver {
        sd: StateDict::default(),
    };
    model.clone().visit_state(&Prefix::root(), &mut saver);
    saver.sd
}

/// Reads an official `torch.save` state dict (any torch container, f64/f32 storages; see
/// [`pth`]) without executing any pickle code, and drops the `module.` prefix. Keys come
/// sorted by name.
pub fn read_official(path: &Path) -> Result<StateDict> {
    let entries = pth::read_state_dict(path)?
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                StoredTensor {
                    shape: t.shape,
                    data: t.data,
                },
            )
        })
        .collect();
    Ok(StateDict { entries }.strip_data_parallel_prefix())
}

/// Which file format a checkpoint path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Official `torch.save` state dict (`.pth` / `.pth.tar`).
    Official,
    /// Our directory (or its `model.safetensors`).
    Native,
}

pub fn detect_format(path: &Path) -> Result<Format> {
    if path.is_dir() || path.extension().is_some_and(|e| e == "safetensors") {
        return Ok(Format::Native);
    }
    if !path.exists() {
        bail!("checkpoint {}: no such file or directory", path.display());
    }
    Ok(Format::Official)
}

/// The model config an official state dict was trained with: the published config, with the
/// input widths read from `v_fc` / `a_fc` (so ResNet50/Cnn14 checkpoints load too).
pub fn infer_official_config(sd: &StateDict) -> ModelConfig {
    let mut config = ModelConfig::default();
    if let Some(t) = sd.get("v_fc.weight").filter(|t| t.shape.len() == 2) {
        config.visual_dim = t.shape[1];
    }
    if let Some(t) = sd.get("a_fc.weight").filter(|t| t.shape.len() == 2) {
        config.audio_dim = t.shape[1];
        config.audio_fc = config.audio_dim != 128;
    }
    // Variants made by editing the official code (REFERENCE §3.3) show in the key set.
    let has = |k: &str| sd.get(k).is_some();
    let rnn = "audio_visual_rnn_layer.audio_rnn";
    config.temporal = if has(&format!("{rnn}.weight_ih_l0_reverse")) {
        TemporalKind::BiLstm
    } else if has(&format!("{rnn}.weight_ih_l0")) {
        TemporalKind::Lstm
    } else if has(&format!("{rnn}.weight")) {
        TemporalKind::Fc
    } else if has("audio_visual_rnn_layer.audio_snn.fc.0.weight") {
        TemporalKind::Snn
    } else {
        TemporalKind::None
    };
    if !has("spatial_channel_att.video_query.weight") {
        config.guide = Guide::None;
    } else if !has("spatial_channel_att.video_query2.weight") {
        config.guide = Guide::VisualGuide;
    }
    config
}

/// A loaded model with where it came from.
pub struct Loaded {
    pub model: CaceNet,
    pub config: ModelConfig,
    pub format: Format,
    /// The tensors read, in the model's state-dict order.
    pub state: StateDict,
}

/// Reads the state dict and config of either format.
pub fn read_checkpoint(path: &Path) -> Result<(StateDict, ModelConfig, Format)> {
    match detect_format(path)? {
        Format::Native => {
            let (sd, config) = native::read(path)?;
            Ok((sd, config, Format::Native))
        }
        Format::Official => {
            let sd = read_official(path)?;
            let config = infer_official_config(&sd);
            Ok((sd, config, Format::Official))
        }
    }
}

/// Checks the tensors whose shapes hold the config's unbounded sizes (`visual_dim`,
/// `audio_dim`, `d_model`) before the model is built: a config that does not match its file
/// (`"d_model": 1099511627776` in a 70-byte `config.json`) is then an error like any other
/// mismatch, instead of the model's weights being allocated first (terabytes). Once these
/// match, the model is no bigger than a small multiple of the file. Same messages as
/// [`load_state_dict`].
fn check_sizes_against(sd: &StateDict, config: &ModelConfig, source: &Path) -> Result<()> {
    let d = config.d_model;
    let probes = [
        ("v_fc.weight", [512, config.visual_dim]),
        ("a_fc.weight", [128, config.audio_dim]),
        (
            "AVInter.video_multihead.in_proj_weight",
            [d.saturating_mul(3), d],
        ),
    ];
    for (key, expected) in probes {
        match sd.get(key) {
            None => bail!(
                "checkpoint {}: has no tensor `{key}`, which the model needs",
                source.display()
            ),
            Some(t) if t.shape != expected => bail!(
                "checkpoint {}: tensor `{key}` has shape {:?} but the model config expects {:?}",
                source.display(),
                t.shape,
                expected
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Loads either format onto `device`. `config` overrides the stored/inferred config (its
/// shapes must still match the file).
pub fn load(path: &Path, config: Option<ModelConfig>, device: &Device) -> Result<Loaded> {
    let (sd, stored_config, format) = read_checkpoint(path)?;
    let config = config.unwrap_or(stored_config);
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("checkpoint {}: invalid model config: {e}", path.display()))?;
    check_sizes_against(&sd, &config, path)?;
    let mut model = CaceNet::new(&config, device)?;
    load_state_dict(&mut model, sd.clone(), device, path)?;
    let order = ParamList::of(&mut model);
    let state = sd.ordered_by(order.entries.iter().map(|(k, _, _)| k.as_str()));
    Ok(Loaded {
        model,
        config,
        format,
        state,
    })
}
