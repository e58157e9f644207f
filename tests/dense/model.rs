//! The dense (UnAV-100) model's forward pass equals the official `LocPointTransformer`.
//!
//! `tests/fixtures/dense/model_golden.safetensors` comes from `tools/make_dense_model_golden.py`
//! (the official code, small widths, random weights, eval mode): the full state dict under its
//! official keys, two padded input batches and the official per-level outputs and points.
//!
//! Tolerance: |ours − official| ≤ 1e-4 · max(1, max |official|) per level and output. The
//! outputs pass ~25 sequential blocks (LayerNorms, softmax attention, convolutions summing up
//! to 640·3 products) in f32 on both sides with different summation orders; the measured worst
//! error is ~1e-6 of the output scale, so 1e-4 leaves two orders of margin while a real
//! mistake (a wrong mask, a swapped modality, a mis-ordered reshape) moves outputs by 1e-2..1.

use crate::common;

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use cace_net::checkpoint::{StateDict, StoredTensor, load_state_dict};
use cace_net::dense::model::{
    DenseModel, DenseModelConfig, VideoFeatures, padded_length, preprocess,
};
use cace_net::model::state::ParamList;
use cace_net::to_vec;

const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dense/model_golden.safetensors"
);

struct Golden {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    keys: Vec<String>,
    config: DenseModelConfig,
}

fn golden() -> Golden {
    let (tensors, meta) = common::golden::read_all(std::path::Path::new(FILE));
    let keys: Vec<String> = serde_json::from_str(&meta["keys"]).unwrap();
    let config: DenseModelConfig = serde_json::from_str(&meta["config"]).unwrap();
    Golden {
        tensors,
        keys,
        config,
    }
}

impl Golden {
    fn get(&self, key: &str) -> &(Vec<usize>, Vec<f32>) {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("golden tensor {key} missing"))
    }

    fn state(&self) -> StateDict {
        StateDict {
            entries: self
                .keys
                .iter()
                .map(|k| {
                    let (shape, data) = self.get(k).clone();
                    (k.clone(), StoredTensor { shape, data })
                })
                .collect(),
        }
    }

    fn model(&self, device: &Device) -> DenseModel {
        let mut model = DenseModel::new(&self.config, device).unwrap();
        load_state_dict(&mut model, self.state(), device, Path::new(FILE)).unwrap();
        model
    }

    /// The batch of case `c` as the loader gives it: each video's features cut to its length.
    fn videos(&self, case: &str, device: &Device) -> Vec<VideoFeatures> {
        let (_, lengths) = self.get(&format!("in.{case}.lengths"));
        let cut = |name: &str, b: usize, n: usize| {
            let (shape, data) = self.get(&format!("in.{case}.{name}"));
            let (c, t) = (shape[1], shape[2]);
            let rows: Vec<f32> = (0..c)
                .flat_map(|ch| {
                    let start = (b * c + ch) * t;
                    data[start..start + n].to_vec()
                })
                .collect();
            Tensor::<2>::from_data(TensorData::new(rows, [c, n]), device)
        };
        lengths
            .iter()
            .enumerate()
            .map(|(b, &n)| VideoFeatures {
                visual: cut("visual", b, n as usize),
                audio: cut("audio", b, n as usize),
            })
            .collect()
    }
}

/// Worst |ours − ref| / max(1, max|ref|); panics naming `what` beyond `tol`.
fn compare(what: &str, ours: &[f32], reference: &[f32], tol: f64) -> f64 {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let scale = reference
        .iter()
        .fold(1.0f64, |m, &x| m.max((x as f64).abs()));
    let mut worst = 0f64;
    for (i, (&a, &b)) in ours.iter().zip(reference).enumerate() {
        let e = (a as f64 - b as f64).abs() / scale;
        assert!(
            e <= tol,
            "{what}[{i}]: ours {a} vs official {b} (relative error {e:.3e} > {tol:.0e})"
        );
        worst = worst.max(e);
    }
    worst
}

const TOL: f64 = 1e-4;

fn parity(case: &str) {
    let device = common::device::test_device();
    let g = golden();
    let model = g.model(&device);
    let videos = g.videos(case, &device);
    let batch = preprocess(&videos, &g.config, false).unwrap();
    let out = model.forward(&batch);
    let levels = g.config.arch[2] + 1;
    assert_eq!(out.cls_logits.len(), levels);
    let mut worst = 0f64;
    for l in 0..levels {
        let (shape, cls) = g.get(&format!("out.{case}.cls.{l}"));
        assert_eq!(
            &out.cls_logits[l].dims().to_vec(),
            shape,
            "cls level {l} shape"
        );
        worst = worst.max(compare(
            &format!("{case} cls level {l}"),
            &to_vec(out.cls_logits[l].clone()),
            cls,
            TOL,
        ));
        let (shape, off) = g.get(&format!("out.{case}.off.{l}"));
        assert_eq!(
            &out.offsets[l].dims().to_vec(),
            shape,
            "offsets level {l} shape"
        );
        worst = worst.max(compare(
            &format!("{case} offsets level {l}"),
            &to_vec(out.offsets[l].clone()),
            off,
            TOL,
        ));
        let (shape, mask) = g.get(&format!("out.{case}.mask.{l}"));
        assert_eq!(&out.masks[l].dims().to_vec(), shape, "mask level {l} shape");
        assert_eq!(&to_vec(out.masks[l].clone()), mask, "{case} mask level {l}");
    }
    // Points per video, from that video's own length.
    let points = g.config.point_generator().unwrap();
    for (b, &n) in batch.lengths.iter().enumerate() {
        let pts = points.points(n, false, &device).unwrap();
        assert_eq!(pts.len(), levels);
        for (l, p) in pts.into_iter().enumerate() {
            let (shape, want) = g.get(&format!("out.{case}.points.{b}.{l}"));
            assert_eq!(&p.dims().to_vec(), shape, "points {b} level {l} shape");
            assert_eq!(&to_vec(p), want, "{case} points video {b} level {l}");
        }
    }
    eprintln!("case {case}: worst relative error {worst:.3e} (tolerance {TOL:.0e})");
}

/// Valid lengths 64 and 41: padded to max_seq_len 64, position embedding sliced.
#[test]
fn forward_equals_official_padded_to_max_seq_len() {
    parity("a");
}

/// Valid lengths 90 and 53: padded to 96 (a multiple of the largest stride 32), position
/// embedding interpolated from 64 to 96 steps.
#[test]
fn forward_equals_official_beyond_max_seq_len() {
    parity("b");
}

#[test]
fn state_dict_keys_are_the_official_ones_in_order() {
    let device = common::device::test_device();
    let g = golden();
    let mut model = DenseModel::new(&g.config, &device).unwrap();
    let list = ParamList::of(&mut model);
    let ours: Vec<&str> = list.entries.iter().map(|e| e.0.as_str()).collect();
    let theirs: Vec<&str> = g.keys.iter().map(String::as_str).collect();
    assert_eq!(ours, theirs);
    for (key, _, shape) in &list.entries {
        assert_eq!(shape, &g.get(key).0, "{key} shape");
    }
}

#[test]
fn missing_or_misshaped_key_is_named() {
    let device = common::device::test_device();
    let g = golden();
    let key = "dependency_block.temporal_branch.attn.key.weight";

    let mut sd = g.state();
    sd.entries.retain(|(k, _)| k != key);
    let mut model = DenseModel::new(&g.config, &device).unwrap();
    let err = load_state_dict(&mut model, sd, &device, Path::new(FILE))
        .unwrap_err()
        .to_string();
    assert!(err.contains(key) && err.contains("has no tensor"), "{err}");

    let mut sd = g.state();
    let t = &mut sd.entries.iter_mut().find(|(k, _)| k == key).unwrap().1;
    t.shape = vec![t.shape[0], t.shape[1]];
    let mut model = DenseModel::new(&g.config, &device).unwrap();
    let err = load_state_dict(&mut model, sd, &device, Path::new(FILE))
        .unwrap_err()
        .to_string();
    assert!(err.contains(key) && err.contains("shape"), "{err}");

    // A scalar (`Scale`, PyTorch shape []) stored as [1] is mis-shaped too.
    let key = "reg_head.scale.3.scale";
    let mut sd = g.state();
    sd.entries
        .iter_mut()
        .find(|(k, _)| k == key)
        .unwrap()
        .1
        .shape = vec![1];
    let mut model = DenseModel::new(&g.config, &device).unwrap();
    let err = load_state_dict(&mut model, sd, &device, Path::new(FILE))
        .unwrap_err()
        .to_string();
    assert!(err.contains(key), "{err}");

    // A key the model does not have.
    let mut sd = g.state();
    sd.entries.push((
        "reg_head.scale.6.scale".into(),
        StoredTensor {
            shape: vec![],
            data: vec![1.0],
        },
    ));
    let mut model = DenseModel::new(&g.config, &device).unwrap();
    let err = load_state_dict(&mut model, sd, &device, Path::new(FILE))
        .unwrap_err()
        .to_string();
    assert!(err.contains("reg_head.scale.6.scale"), "{err}");
}

#[test]
fn fresh_model_follows_the_official_initialisation() {
    let device = common::device::test_device();
    let config = DenseModelConfig {
        embd_dim: 16,
        head_dim: 16,
        num_classes: 4,
        head_empty_cls: vec![2],
        ..DenseModelConfig::default()
    };
    let model = DenseModel::new(&config, &device).unwrap();
    let bias = to_vec(model.cls_head.cls_head.bias.as_ref().unwrap().val());
    let prior = -(0.99f64 / 0.01).ln() as f32;
    let empty = -((1.0 - 1e-6f64) / 1e-6).ln() as f32;
    assert_eq!(bias, vec![prior, prior, empty, prior]);
    let scale = to_vec(model.reg_head.scale[0].scale.val());
    assert_eq!(scale, vec![1.0]);
    let dp = model.backbone.self_att_v[0]
        .drop_path_attn
        .as_ref()
        .unwrap();
    assert!(to_vec(dp.scale.val()).iter().all(|&x| x == 1e-4));
}

#[test]
fn padding_follows_the_official_preprocessing() {
    assert_eq!(padded_length(10, 224, 32), 224);
    assert_eq!(padded_length(224, 224, 32), 224);
    assert_eq!(padded_length(225, 224, 32), 256);
    assert_eq!(padded_length(300, 224, 32), 320);

    let device = common::device::test_device();
    let config = DenseModelConfig {
        input_dim_v: 3,
        input_dim_a: 2,
        max_seq_len: 64,
        ..DenseModelConfig::default()
    };
    let video = |n: usize| VideoFeatures {
        visual: Tensor::ones([3, n], &device),
        audio: Tensor::ones([2, n], &device),
    };
    let batch = preprocess(&[video(5), video(70)], &config, false).unwrap();
    assert_eq!(batch.visual.dims(), [2, 3, 96]);
    assert_eq!(batch.audio.dims(), [2, 2, 96]);
    let mask = to_vec(batch.mask.clone());
    assert_eq!(mask.iter().sum::<f32>(), 75.0);
    assert_eq!(&mask[..6], &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
    // Padding is zero.
    assert_eq!(to_vec(batch.visual.clone()).iter().sum::<f32>(), 3.0 * 75.0);

    let err = preprocess(&[video(70)], &config, true)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("max_seq_len"), "{err}");
    let batch = preprocess(&[video(5)], &config, true).unwrap();
    assert_eq!(batch.visual.dims(), [1, 3, 64]);

    // Points beyond the buffer (max_seq_len × factor 1.0) are an error, as the official assert.
    let points = config.point_generator().unwrap();
    assert!(points.points(64, false, &device).is_ok());
    let err = points.points(70, false, &device).err().unwrap().to_string();
    assert!(err.contains("buffer"), "{err}");
}

/// Gradients of the official loss (class-aware targets for two videos, focal + DIoU, weight 1,
/// normaliser 250 → EMA) with respect to every parameter, case a (padding = training padding).
/// The official gradients come from eval mode (no drop path), so ours run with drop path off.
/// Every key: the L2 norm within 1e-4 relative and the sum within 1e-4 · norm · √n; tensors of
/// ≤ 128 elements (432 of 558) element-wise within 1e-4 of their largest magnitude (floor
/// 1e-3 of the largest gradient norm, for tensors whose gradient is nearly zero).
#[test]
fn gradients_equal_official() {
    use cace_net::dense::model::labels::label_points;
    use cace_net::dense::model::losses::{LossNormalizer, dense_losses};
    use cace_net::optim::KeyedGrads;

    let device = common::device::test_device().autodiff();
    let g = golden();
    let mut model = g.model(&device);
    model.set_drop_path_prob(0.0);
    let batch = preprocess(&g.videos("a", &device), &g.config, true).unwrap();
    let out = model.forward(&batch);

    let points: Vec<f32> = g
        .config
        .point_generator()
        .unwrap()
        .points(0, true, &device)
        .unwrap()
        .into_iter()
        .flat_map(to_vec)
        .collect();
    let (c, ft) = (g.config.num_classes, points.len() / 4);
    let (mut cls_t, mut reg_t) = (Vec::new(), Vec::new());
    for b in 0..2 {
        let segs: Vec<[f32; 2]> = g
            .get(&format!("grad.gt.{b}.segments"))
            .1
            .chunks_exact(2)
            .map(|x| [x[0], x[1]])
            .collect();
        let labels: Vec<usize> = g
            .get(&format!("grad.gt.{b}.labels"))
            .1
            .iter()
            .map(|&x| x as usize)
            .collect();
        let t = label_points(&points, &segs, &labels, c, true);
        cls_t.extend(t.cls);
        reg_t.extend(t.reg);
    }
    let gt_cls = Tensor::from_data(TensorData::new(cls_t, [2, ft, c]), &device);
    let gt_off = Tensor::from_data(TensorData::new(reg_t, [2, ft, c, 2]), &device);
    let mut norm = LossNormalizer::new(250.0);
    let losses = dense_losses(
        &out.cls_logits,
        &out.offsets,
        &out.masks,
        gt_cls,
        gt_off,
        &mut norm,
        1.0,
        0.0,
    );
    for (name, t) in [
        ("cls", &losses.cls),
        ("reg", &losses.reg),
        ("final", &losses.total),
    ] {
        let want = &g.get(&format!("grad.loss.{name}")).1;
        compare(&format!("{name} loss"), &to_vec(t.clone()), want, 1e-5);
    }

    let keyed = KeyedGrads::collect(&model, &losses.total.backward());
    let norms = &g.get("grad.norm").1;
    let sums = &g.get("grad.sum").1;
    let top = norms.iter().fold(0f32, |m, &x| m.max(x)) as f64;
    let (mut worst_norm, mut worst_elem, mut whole) = (0f64, 0f64, 0);
    for (i, key) in g.keys.iter().enumerate() {
        let n = g.get(key).1.len();
        let ours = keyed
            .get(key)
            .map(|t| to_vec(t.clone()))
            .unwrap_or(vec![0.0; n]);
        let norm = ours.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let sum = ours.iter().map(|&x| x as f64).sum::<f64>();
        let (want_norm, want_sum) = (norms[i] as f64, sums[i] as f64);
        let e = (norm - want_norm).abs() / want_norm.max(1e-3 * top);
        assert!(
            e <= 1e-4,
            "{key}: gradient norm {norm} vs official {want_norm}"
        );
        worst_norm = worst_norm.max(e);
        let bound = 1e-4 * want_norm.max(1e-3 * top) * (n as f64).sqrt();
        assert!(
            (sum - want_sum).abs() <= bound,
            "{key}: gradient sum {sum} vs official {want_sum}"
        );
        if let Some((_, want)) = g.tensors.get(&format!("grad.param.{key}")) {
            let scale = want
                .iter()
                .fold(1e-3 * top, |m, &x| m.max((x as f64).abs()));
            for (j, (&a, &b)) in ours.iter().zip(want).enumerate() {
                let e = (a as f64 - b as f64).abs() / scale;
                assert!(e <= 1e-4, "{key}[{j}]: gradient {a} vs official {b}");
                worst_elem = worst_elem.max(e);
            }
            whole += 1;
        }
    }
    eprintln!(
        "gradients: worst norm error {worst_norm:.3e}, worst element error {worst_elem:.3e} \
         over {whole} whole tensors"
    );
}

/// Drop path (training = autodiff device): each sample's branch is either dropped or scaled by
/// 1 / (1 − p); evaluation is `scale · x`.
#[test]
fn drop_path_is_per_sample_in_training_only() {
    use cace_net::dense::model::blocks::AffineDropPath;
    let device = common::device::test_device();
    let dp = AffineDropPath::new(3, 0.5, &device);
    let x = Tensor::<3>::ones([64, 3, 5], &device);
    assert!(to_vec(dp.forward(x)).iter().all(|&v| v == 1e-4));

    let device = device.autodiff();
    let dp = AffineDropPath::new(3, 0.5, &device);
    let out = to_vec(dp.forward(Tensor::<3>::ones([64, 3, 5], &device)));
    let mut kept = 0;
    for sample in out.chunks_exact(15) {
        let v = sample[0];
        assert!(sample.iter().all(|&s| s == v), "one decision per sample");
        assert!(v == 0.0 || (v - 2e-4).abs() < 1e-9, "{v}");
        kept += (v != 0.0) as usize;
    }
    assert!((10..=54).contains(&kept), "{kept} of 64 kept at p = 0.5");
}

/// The default config is the official UnAV-100 model: the official `LocPointTransformer` built
/// from `configs/avel_unav100.yaml` has 558 state tensors and 139,544,114 parameters (counted
/// with the official code; 78.6 M of them in the dependency block's expand/squeeze convolutions).
#[test]
fn default_config_has_the_official_size() {
    let device = common::device::test_device();
    let mut model = DenseModel::new(&DenseModelConfig::default(), &device).unwrap();
    let list = ParamList::of(&mut model);
    assert_eq!(list.entries.len(), 558);
    assert_eq!(list.total(), 139_544_114);
}
