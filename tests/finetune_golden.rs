//! Equality with the official fine-tuning step (REFERENCE §6.3): golden vectors made by
//! `tools/make_finetune_golden.py` from the official `clip/model.py` `CLIP` module with slim
//! backbones (same layer types as VGG19-BN and ResNet-50, few channels), a batch of 4 videos of
//! 10 frames, torch's SGD (momentum 0.9, weight decay 1e-4, lr 0.05 so a step moves f32 weights
//! visibly), two steps. Checked: logits, loss, the gradient of every parameter, every parameter
//! and BatchNorm running statistic after each step, and the eval-mode encoder output after them.
//!
//! Each stage starts from the golden state before it (step 2 from `step1.*` with torch's
//! momentum buffers, `grad + wd·init`; evaluation from `step2.*`): chained, float32 rounding in
//! step 1 is amplified in step 2 even between PyTorch's own f32 and f64 runs (up to 1e-2 for the
//! ResNet, `tests/fixtures/finetune/README.md`), which would hide a real difference.
//!
//! Tolerance: `max |ours − torch| ≤ tol · max(1, max |torch|)` per tensor, `tol` 1e-4 for the
//! logits and losses and 1e-3 for gradients, weights and maps. PyTorch f32 against f64 on these
//! inputs stays within 5e-5 (gradients) and 4e-4 (every stage); float32 rounding can flip a
//! ReLU or max-pool decision and move a gradient by ~1e-3 relative, so 1e-3 is the floor a
//! correct f32 implementation can promise. A wrong formula (layout, statistics, momentum,
//! weight decay) moves these tensors by 1e-2 or more. The worst error is printed.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use cace_net::checkpoint::{StateDict, StoredTensor, load_state_dict, state_dict, transpose2};
use cace_net::encoders::resnet50::ResNet50Config;
use cace_net::encoders::vgg19::Vgg19Config;
use cace_net::finetune::backbone::{BackboneConfig, BackboneKind, torchvision_key};
use cace_net::finetune::clip::{Clip, ClipConfig, symmetric_info_nce};
use cace_net::optim::{KeyedGrads, Sgd, SgdConfig};

struct Golden {
    path: PathBuf,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    meta: HashMap<String, String>,
}

fn golden(name: &str) -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/finetune")
        .join(name);
    let (tensors, meta) = common::golden::read_all(&path);
    Golden {
        path,
        tensors,
        meta,
    }
}

impl Golden {
    fn get(&self, key: &str) -> &(Vec<usize>, Vec<f32>) {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("golden has no {key}"))
    }

    fn list(&self, key: &str) -> Vec<usize> {
        serde_json::from_str(&self.meta[key]).unwrap()
    }

    fn kind(&self) -> BackboneKind {
        match self.meta["backbone"].as_str() {
            "resnet50-slim" => BackboneKind::Resnet50,
            _ => BackboneKind::Vgg19Bn,
        }
    }

    fn config(&self) -> ClipConfig {
        let backbone = match self.kind() {
            BackboneKind::Resnet50 => BackboneConfig::Resnet50(ResNet50Config {
                stem: self.meta["resnet_stem"].parse().unwrap(),
                planes: self.list("resnet_planes").try_into().unwrap(),
                blocks: self.list("resnet_blocks").try_into().unwrap(),
                ..ResNet50Config::default()
            }),
            BackboneKind::Vgg19Bn => {
                // torchvision cfg list: widths of the five blocks, 'M' between them.
                let cfg: Vec<serde_json::Value> =
                    serde_json::from_str(&self.meta["vgg_cfg"]).unwrap();
                let mut widths: Vec<usize> = Vec::new();
                for w in cfg.windows(2) {
                    if w[1].is_string() {
                        widths.push(w[0].as_u64().unwrap() as usize);
                    }
                }
                BackboneConfig::Vgg19Bn(Vgg19Config {
                    widths: widths.try_into().unwrap(),
                    ..Vgg19Config::default()
                })
            }
        };
        ClipConfig {
            hidden_dim: self.meta["hidden_dim"].parse().unwrap(),
            tau: self.meta["tau"].parse().unwrap(),
            ..ClipConfig::new(backbone)
        }
    }

    /// Our key for an official `CLIP` key: the encoder's under torchvision's names.
    fn ours(&self, key: &str) -> String {
        match key.strip_prefix("encoder_I.") {
            Some(k) => format!("encoder_I.{}", torchvision_key(self.kind(), k).unwrap()),
            None => key.to_string(),
        }
    }

    /// The state dict `prefix.*` under our keys (without `num_batches_tracked`).
    fn state(&self, prefix: &str) -> StateDict {
        let mut entries: Vec<(String, StoredTensor)> = self
            .tensors
            .iter()
            .filter_map(|(k, (shape, data))| {
                let k = k.strip_prefix(prefix)?.strip_prefix('.')?;
                (!k.ends_with("num_batches_tracked")).then(|| {
                    let t = StoredTensor {
                        shape: shape.clone(),
                        data: data.clone(),
                    };
                    (self.ours(k), t)
                })
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        StateDict { entries }
    }

    fn tensor<const D: usize>(&self, key: &str, device: &Device) -> Tensor<D> {
        let (shape, data) = self.get(key);
        Tensor::from_data(TensorData::new(data.clone(), shape.clone()), device)
    }
}

/// Largest `|a − b| / max(1, max |b|)`; panics past `tol`, naming `what`.
fn check_tol(what: &str, ours: &[f32], torch: &[f32], tol: f64, worst: &mut f64) {
    assert_eq!(ours.len(), torch.len(), "{what}: length");
    let scale = torch.iter().fold(1.0f32, |m, v| m.max(v.abs())) as f64;
    let err = ours
        .iter()
        .zip(torch)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max)
        / scale;
    assert!(err <= tol, "{what}: relative error {err:.2e} > {tol:.0e}");
    *worst = worst.max(err);
}

fn check(what: &str, ours: &[f32], torch: &[f32], worst: &mut f64) {
    check_tol(what, ours, torch, 1e-3, worst);
}

fn check_state(g: &Golden, model: &Clip, prefix: &str, worst: &mut f64) {
    let expected = g.state(prefix);
    let ours: HashMap<String, StoredTensor> = state_dict(model).entries.into_iter().collect();
    assert_eq!(
        ours.len(),
        expected.entries.len(),
        "{prefix}: number of tensors"
    );
    for (k, t) in &expected.entries {
        let o = ours
            .get(k)
            .unwrap_or_else(|| panic!("{prefix}: we have no {k}"));
        assert_eq!(o.shape, t.shape, "{prefix}.{k}: shape");
        check(&format!("{prefix}.{k}"), &o.data, &t.data, worst);
    }
}

/// One step as `cace finetune` takes it (one share); returns the loss.
fn step(
    g: &Golden,
    model: &mut Clip,
    sgd: &mut Sgd,
    input: &str,
    device: &Device,
    worst: &mut f64,
) -> f32 {
    let images = g.tensor::<5>(&format!("{input}.images"), device);
    let audio = g.tensor::<3>(&format!("{input}.audio"), device);
    let e = model.embed(images, audio);
    let logits = model.logits(&e);
    if input == "input" {
        check(
            "logits",
            &cace_net::to_vec(logits.clone()),
            &g.get("logits").1,
            worst,
        );
    }
    let loss = symmetric_info_nce(logits);
    let value = cace_net::to_vec(loss.clone())[0];
    let grads = KeyedGrads::collect(model, &loss.backward());
    if input == "input" {
        let expected: Vec<&String> = g
            .tensors
            .keys()
            .filter(|k| k.starts_with("grad."))
            .collect();
        assert_eq!(grads.grads.len(), expected.len(), "number of gradients");
        for key in expected {
            let ours = grads
                .get(&g.ours(&key[5..]))
                .unwrap_or_else(|| panic!("no gradient for {key}"));
            let (shape, torch) = g.get(key);
            // KeyedGrads hold burn's layout: the projections are stored transposed.
            let ours = match key.contains("alignment") {
                true => transpose2(&cace_net::to_vec(ours.clone()), shape[1], shape[0]),
                false => cace_net::to_vec(ours.clone()),
            };
            check(key, &ours, torch, worst);
        }
    }
    sgd.step(model, &grads, sgd.config.lr);
    value
}

fn parity(name: &str) {
    let g = golden(name);
    let base = Device::flex();
    let device = base.clone().autodiff();
    let mut model = g.config().init(&device);
    load_state_dict(&mut model, g.state("init"), &device, &g.path).unwrap();
    let config = SgdConfig {
        lr: g.meta["lr"].parse().unwrap(),
        momentum: g.meta["momentum"].parse().unwrap(),
        weight_decay: g.meta["weight_decay"].parse().unwrap(),
    };
    let mut sgd = Sgd::new(config.clone());
    let mut worst = 0.0;
    let loss = step(&g, &mut model, &mut sgd, "input", &device, &mut worst);
    check_tol("loss", &[loss], &g.get("loss").1, 1e-4, &mut worst);
    check_state(&g, &model, "step1", &mut worst);

    // Step 2 from torch's state after step 1: its weights, and momentum = grad + wd·init.
    load_state_dict(&mut model, g.state("step1"), &device, &g.path).unwrap();
    let mut sgd = Sgd::new(config.clone());
    for (k, (_, grad)) in g.tensors.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let key = g.ours(&k[5..]);
        let init = &g.get(&format!("init.{}", &k[5..])).1;
        let mut buf: Vec<f32> = grad
            .iter()
            .zip(init)
            .map(|(g, p)| g + config.weight_decay as f32 * p)
            .collect();
        if key.contains("alignment") {
            let (shape, _) = g.get(k);
            buf = transpose2(&buf, shape[0], shape[1]);
        }
        let n = buf.len();
        sgd.momentum
            .insert(key, Tensor::from_data(TensorData::new(buf, [n]), &base));
    }
    let loss2 = step(&g, &mut model, &mut sgd, "input2", &device, &mut worst);
    check_tol("loss2", &[loss2], &g.get("loss2").1, 1e-4, &mut worst);
    check_state(&g, &model, "step2", &mut worst);

    // Evaluation mode, from torch's weights and running statistics after step 2.
    load_state_dict(&mut model, g.state("step2"), &device, &g.path).unwrap();
    let valid = model.valid();
    let frames: Tensor<5> = g.tensor("input.images", &base);
    let [_, t, c, h, w] = frames.dims();
    let first = frames.slice([0..1]).reshape([t, c, h, w]);
    let maps = valid.encoder_i.forward(first);
    check(
        "eval.features",
        &cace_net::to_vec(maps),
        &g.get("eval.features").1,
        &mut worst,
    );
    println!("{name}: worst relative error {worst:.2e}");
}

#[test]
fn resnet50_step_equals_the_official() {
    parity("resnet50_slim.safetensors");
}

#[test]
fn vgg19_bn_step_equals_the_official() {
    parity("vgg19bn_slim.safetensors");
}
