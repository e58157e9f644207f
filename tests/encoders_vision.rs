//! Image encoders against PyTorch/torchvision references (`tools/make_vision_fixtures.py`):
//! preprocessing for both weight sets, slim VGG19 and ResNet-50 (same state-dict keys as
//! torchvision's, fewer channels) in both checkpoint layouts, errors for bad weight files, and two
//! ignored full-size checks (parity, and the CPU time for one 10-second clip).
//!
//! Tolerances. Preprocessing: our resize repeats ATen's float32 arithmetic; what remains is
//! summation order and fused multiply-adds, a few ulp of values up to 255 (≈ 1e-5), i.e. ≲ 1e-6
//! after /255 and /std; we allow 1e-5 absolute. Encoders: the references are float64 runs of the
//! same weights on the same float32 inputs, so the error is ours alone: float32 convolutions sum
//! up to 4608 products per output (≈ √4608 · 6e-8 ≈ 4e-6 relative each), over 16 (VGG) or 53
//! (ResNet) layers, plus BN folding; PyTorch's own float32 run is off by 4e-7 (slim VGG) and 1e-5
//! (slim ResNet) relative to the maximum. We allow 1e-4 of the largest reference magnitude.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use cace_net::encoders::image::{Geometry, INPUT_SIZE, Preprocess};
use cace_net::encoders::resnet50::{self, ResNet50Config};
use cace_net::encoders::vgg19::{self, Vgg19Config};
use cace_net::encoders::{FrameEncoder, RgbFrame};
use safetensors::{Dtype, SafeTensors};

const PRE_TOL: f32 = 1e-5;
const ENC_REL_TOL: f32 = 1e-4;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders/vision")
}

/// The tensors of a safetensors file: (shape, values as f32 or, for U8/I64, as i64).
struct Tensors {
    float: HashMap<String, (Vec<usize>, Vec<f32>)>,
    int: HashMap<String, (Vec<usize>, Vec<i64>)>,
}

fn read_safetensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (mut float, mut int) = (HashMap::new(), HashMap::new());
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        match view.dtype() {
            Dtype::F32 => {
                let v = data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()));
                float.insert(name, (shape, v.collect()));
            }
            Dtype::I64 => {
                let v = data
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()));
                int.insert(name, (shape, v.collect()));
            }
            Dtype::U8 => {
                int.insert(name, (shape, data.iter().map(|&b| b as i64).collect()));
            }
            other => panic!("{name}: unexpected dtype {other:?}"),
        }
    }
    Tensors { float, int }
}

impl Tensors {
    fn f(&self, name: &str) -> &[f32] {
        &self
            .float
            .get(name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .1
    }

    fn frames(&self) -> Vec<RgbFrame> {
        (0..)
            .map_while(|i| self.int.get(&format!("frame_{i}")))
            .map(|(shape, data)| RgbFrame {
                height: shape[0],
                width: shape[1],
                data: data.iter().map(|&v| v as u8).collect(),
            })
            .collect()
    }
}

/// Largest |a − b|, and the largest |b|.
fn max_err(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "length");
    let err = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let scale = want.iter().map(|b| b.abs()).fold(0.0, f32::max);
    (err, scale)
}

fn assert_close_rel(what: &str, got: &[f32], want: &[f32]) {
    let (err, scale) = max_err(got, want);
    println!(
        "{what}: max error {err:.3e}, max |ref| {scale:.3e}, relative {:.3e}",
        err / scale
    );
    assert!(scale > 0.0, "{what}: reference is all zeros");
    assert!(
        err <= ENC_REL_TOL * scale,
        "{what}: max error {err} > {ENC_REL_TOL} x {scale}"
    );
}

fn slim_configs() -> (Vgg19Config, ResNet50Config) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("slim.json")).unwrap()).unwrap();
    let arr = |v: &serde_json::Value| -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    };
    let vgg = Vgg19Config {
        widths: arr(&json["vgg19_widths"]).try_into().unwrap(),
        ..Vgg19Config::default()
    };
    let r = &json["resnet50"];
    let resnet = ResNet50Config {
        stem: r["stem"].as_u64().unwrap() as usize,
        planes: arr(&r["planes"]).try_into().unwrap(),
        blocks: arr(&r["blocks"]).try_into().unwrap(),
        ..ResNet50Config::default()
    };
    (vgg, resnet)
}

fn check_preprocessing(kind: Preprocess, name: &str) {
    let t = read_safetensors(&dir().join("frames.safetensors"));
    let grid: Vec<usize> = t.int["grid"].1.iter().map(|&i| i as usize).collect();
    let frames = t.frames();
    assert_eq!(frames.len(), 4);
    for (i, frame) in frames.iter().enumerate() {
        let x = kind.frame(frame).unwrap();
        assert_eq!(x.len(), 3 * INPUT_SIZE * INPUT_SIZE);
        let mut picked = Vec::new();
        for c in 0..3 {
            for &r in &grid {
                for &col in &grid {
                    picked.push(x[(c * INPUT_SIZE + r) * INPUT_SIZE + col]);
                }
            }
        }
        let (err, scale) = max_err(&picked, t.f(&format!("pre_{name}_{i}")));
        println!(
            "{name} frame {i} ({}x{}): max error {err:.3e}",
            frame.height, frame.width
        );
        assert!(scale > 1.0, "reference looks empty");
        assert!(
            err <= PRE_TOL,
            "{name} frame {i}: max error {err} > {PRE_TOL}"
        );
    }
    // The batch is the frames stacked.
    let batch = kind.batch(&frames, &Device::flex()).unwrap();
    assert_eq!(batch.dims(), [4, 3, INPUT_SIZE, INPUT_SIZE]);
    let values = cace_net::to_vec(batch);
    let one = 3 * INPUT_SIZE * INPUT_SIZE;
    assert_eq!(
        values[2 * one..3 * one],
        kind.frame(&frames[2]).unwrap()[..]
    );
}

#[test]
fn preprocessing_vgg19_matches_torch_interpolate() {
    check_preprocessing(Preprocess::Vgg19, "vgg19");
}

#[test]
fn preprocessing_resnet50_matches_torchvision_transforms() {
    check_preprocessing(Preprocess::ResNet50, "resnet50");
}

#[test]
fn resnet50_geometry_follows_torchvision() {
    // Values from torchvision 0.29: `_compute_resized_output_size(size, [232])` and
    // `center_crop`'s `int(round((s - 224) / 2))`, whose halves round to even (44.5 → 44).
    let g = |h, w| Preprocess::ResNet50.geometry(h, w);
    let geo = |resize, crop_top, crop_left| Geometry {
        resize,
        crop_top,
        crop_left,
    };
    assert_eq!(g(97, 131), geo([232, 313], 4, 44));
    assert_eq!(g(240, 320), geo([232, 309], 4, 42));
    assert_eq!(g(250, 160), geo([362, 232], 69, 4));
    assert_eq!(g(232, 232), geo([232, 232], 4, 4));
    assert_eq!(g(1080, 1920), geo([232, 412], 4, 94));
    assert_eq!(Preprocess::Vgg19.geometry(97, 131), geo([224, 224], 0, 0));
}

#[test]
fn bad_frames_are_rejected() {
    let short = RgbFrame {
        width: 4,
        height: 4,
        data: vec![0; 47],
    };
    let msg = format!("{:#}", Preprocess::Vgg19.frame(&short).unwrap_err());
    assert!(msg.contains("needs 48 bytes, has 47"), "{msg}");
    let empty = RgbFrame {
        width: 0,
        height: 4,
        data: vec![],
    };
    assert!(Preprocess::ResNet50.frame(&empty).is_err());
    let msg = format!(
        "{:#}",
        Preprocess::Vgg19
            .batch(&[empty], &Device::flex())
            .unwrap_err()
    );
    assert!(msg.contains("frame 0"), "{msg}");
}

#[test]
fn vgg19_slim_matches_torchvision() {
    let (config, _) = slim_configs();
    let frames = read_safetensors(&dir().join("frames.safetensors")).frames();
    let want = read_safetensors(&dir().join("outputs.safetensors"));
    let device = Device::flex();
    let path = dir().join("vgg19_slim.pth");
    let enc = vgg19::load_with(config.clone(), &path, &device).unwrap();
    assert_eq!(enc.name(), "vgg19");
    assert_eq!(enc.output_shape(), vec![7, 7, config.widths[4]]);
    assert_close_rel(
        "vgg19 slim",
        &enc.encode_second(&frames).unwrap(),
        want.f("vgg19"),
    );

    // In batches of three (3 + 1 frames): the same mean.
    let chunked = Vgg19Config {
        max_batch: 3,
        ..config
    };
    let enc = vgg19::load_with(chunked, &path, &device).unwrap();
    assert_close_rel(
        "vgg19 slim, batches of 3",
        &enc.encode_second(&frames).unwrap(),
        want.f("vgg19"),
    );
    assert!(enc.encode_second(&[]).is_err());
}

#[test]
fn resnet50_slim_matches_torchvision_in_all_layouts() {
    let (_, config) = slim_configs();
    let frames = read_safetensors(&dir().join("frames.safetensors")).frames();
    let want = read_safetensors(&dir().join("outputs.safetensors"));
    let device = Device::flex();
    let c = config.planes[3] * 4;
    for file in [
        "resnet50_slim.pth",
        "resnet50_slim_cace.pth",
        "resnet50_slim_cace_ddp.pth",
    ] {
        let path = dir().join(file);
        let map = resnet50::load_with(config.clone(), &path, &device, false).unwrap();
        assert_eq!(map.name(), "resnet50");
        assert_eq!(map.output_shape(), vec![7, 7, c]);
        assert_close_rel(
            file,
            &map.encode_second(&frames).unwrap(),
            want.f("resnet50"),
        );

        let small_batches = ResNet50Config {
            max_batch: 3,
            ..config.clone()
        };
        let pooled = resnet50::load_with(small_batches, &path, &device, true).unwrap();
        assert_eq!(pooled.output_shape(), vec![c]);
        let got = pooled.encode_second(&frames).unwrap();
        assert_close_rel(&format!("{file} pooled"), &got, want.f("resnet50_pooled"));
    }
}

fn load_error(result: anyhow::Result<impl Sized>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bad_weight_files_name_the_file_and_key() {
    let (vgg_config, resnet_config) = slim_configs();
    let device = Device::flex();

    let path = dir().join("vgg19_slim_missing_key.pth");
    let msg = load_error(vgg19::load_with(vgg_config.clone(), &path, &device));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("missing key `features.30.bias`"), "{msg}");

    // The slim file read as full-size VGG19: the first conv already disagrees.
    let path = dir().join("vgg19_slim.pth");
    let msg = load_error(vgg19::load(&path, &device));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("`features.0.weight` has shape [8, 3, 3, 3], expected [64, 3, 3, 3]"),
        "{msg}"
    );

    // Wider layer3 than the file: the error names the first mismatching key, in the file's layout.
    let wider = ResNet50Config {
        planes: [4, 8, 16, 16],
        ..resnet_config
    };
    for (file, key) in [
        (
            "resnet50_slim.pth",
            "`layer3.0.conv1.weight` has shape [8, 32, 1, 1]",
        ),
        (
            "resnet50_slim_cace.pth",
            "`6.0.conv1.weight` has shape [8, 32, 1, 1]",
        ),
    ] {
        let path = dir().join(file);
        let msg = load_error(resnet50::load_with(wider.clone(), &path, &device, false));
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(key), "{msg}");
    }

    // A VGG file given to the ResNet loader.
    let path = dir().join("vgg19_slim.pth");
    let msg = load_error(resnet50::load(&path, &device, false));
    assert!(msg.contains("missing key `conv1.weight`"), "{msg}");

    let path = dir().join("no_such_file.pth");
    let msg = load_error(resnet50::load(&path, &device, true));
    assert!(
        msg.contains("no_such_file.pth") && msg.contains("not found"),
        "{msg}"
    );
}

fn full_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("CACE_VISION_FULL_DIR").expect(
            "set CACE_VISION_FULL_DIR to the output of tools/make_vision_fixtures.py --full",
        ),
    )
}

/// Full-size random-weight VGG19 and ResNet-50 against float64 PyTorch.
#[test]
#[ignore = "needs CACE_VISION_FULL_DIR (tools/make_vision_fixtures.py --full); ~1.2 GB"]
fn full_size_parity() {
    let dir = full_dir();
    let frames = read_safetensors(&dir.join("frames.safetensors")).frames();
    let want = read_safetensors(&dir.join("outputs.safetensors"));
    let device = Device::flex();
    {
        let enc = vgg19::load(&dir.join("vgg19.pth"), &device).unwrap();
        assert_close_rel(
            "full vgg19",
            &enc.encode_second(&frames).unwrap(),
            want.f("vgg19"),
        );
    }
    let enc = resnet50::load(&dir.join("resnet50.pth"), &device, false).unwrap();
    assert_close_rel(
        "full resnet50",
        &enc.encode_second(&frames).unwrap(),
        want.f("resnet50"),
    );
    let enc = resnet50::load(&dir.join("resnet50.pth"), &device, true).unwrap();
    let got = enc.encode_second(&frames).unwrap();
    assert_close_rel("full resnet50 pooled", &got, want.f("resnet50_pooled"));
}

/// User + system CPU seconds of this process so far (Linux `/proc/self/stat`, 100 ticks/s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// One 10-second clip (160 frames at 224×224, 16 per second) through each full-size encoder.
#[test]
#[ignore = "needs CACE_VISION_FULL_DIR; prints timings, takes ~2 minutes"]
fn full_size_clip_timing() {
    let dir = full_dir();
    let device = Device::flex();
    let frames: Vec<RgbFrame> = (0..160)
        .map(|i| RgbFrame {
            width: 224,
            height: 224,
            data: (0..224 * 224 * 3)
                .map(|p| ((p * 7 + i * 13) % 256) as u8)
                .collect(),
        })
        .collect();
    let encoders: Vec<Box<dyn FrameEncoder>> = vec![
        Box::new(vgg19::load(&dir.join("vgg19.pth"), &device).unwrap()),
        Box::new(resnet50::load(&dir.join("resnet50.pth"), &device, false).unwrap()),
    ];
    for enc in encoders {
        let (cpu, wall) = (cpu_seconds(), std::time::Instant::now());
        for second in frames.chunks(16) {
            enc.encode_second(second).unwrap();
        }
        println!(
            "{}: one 10 s clip (160 frames): {:.1} CPU s, {:.1} wall s",
            enc.name(),
            cpu_seconds() - cpu,
            wall.elapsed().as_secs_f64()
        );
    }
}
