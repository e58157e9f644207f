//! The audio encoders against their reference implementations, on real AudioSet audio.
//!
//! Fixtures: `tests/fixtures/encoders/audio/`, written by `tools/make_audio_fixtures.py` (see its
//! header for the command and what each array is). The signals are excerpts of three AudioSet
//! clips already converted to 16 kHz / 32 kHz mono by the reference pipelines, so both sides read
//! identical samples. References are the reference code run in float64; the port computes its
//! front ends in f64 and its networks in f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use cace_net::checkpoint::pth::read_state_dict;
use cace_net::encoders::AudioEncoder;
use cace_net::encoders::cnn14::{self, Cnn14, Cnn14Config};
use cace_net::encoders::logmel::{PannsFrontEnd, VggishFrontEnd};
use cace_net::encoders::vggish::{self, Vggish, VggishConfig};
use safetensors::{Dtype, SafeTensors};

const CLIPS: [(&str, usize); 3] = [("train_horn", 2), ("church_bell", 2), ("demo", 1)];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/encoders/audio")
        .join(name)
}

/// A safetensors file's arrays as f64 values with their shapes.
struct Arrays(HashMap<String, (Vec<usize>, Vec<f64>)>);

impl Arrays {
    fn open(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut map = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f64> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                d => panic!("{name}: unexpected dtype {d:?}"),
            };
            map.insert(name, (view.shape().to_vec(), values));
        }
        Self(map)
    }

    fn get(&self, name: &str) -> &(Vec<usize>, Vec<f64>) {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("fixture array `{name}` missing"))
    }

    fn f64s(&self, name: &str) -> &[f64] {
        &self.get(name).1
    }

    fn f32s(&self, name: &str) -> Vec<f32> {
        self.f64s(name).iter().map(|&v| v as f32).collect()
    }
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).abs())
        .fold(0.0, f64::max)
}

/// `max|a − b| / max|b|`: relative to the output's scale, since ReLU outputs have many values
/// at or near zero where an element-wise relative error means nothing.
fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "reference is all zeros");
    max_abs_diff(a, b) / scale
}

fn device() -> Device {
    Device::flex()
}

// ------------------------------------------------------------------------------------------------
// Front ends
// ------------------------------------------------------------------------------------------------

#[test]
fn vggish_mel_matrix_matches_mel_features() {
    let refs = Arrays::open(&fixture("vggish_ref.safetensors"));
    let (shape, want) = refs.get("mel_matrix");
    assert_eq!(shape, &[257, 64]);
    let fe = VggishFrontEnd::new();
    let err = fe
        .mel_matrix()
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!("vggish mel matrix: max |Δ| {err:.2e}");
    // Same f64 operations in the same order; only `ln` may differ by an ulp.
    assert!(err <= 1e-12, "max |Δ| {err:e}");
}

/// The log-mel examples of `vggish_input.waveform_to_examples` on real audio.
#[test]
fn vggish_log_mel_matches_torchvggish() {
    let signals = Arrays::open(&fixture("signals.safetensors"));
    let refs = Arrays::open(&fixture("vggish_ref.safetensors"));
    let fe = VggishFrontEnd::new();
    let mut worst = 0f64;
    for (clip, seconds) in CLIPS {
        let samples = signals.f32s(&format!("{clip}.16k"));
        let (shape, want) = refs.get(&format!("{clip}.examples"));
        let (n, got) = fe.examples(&samples);
        assert_eq!(&[n, 96, 64][..], &shape[..], "{clip}");
        assert_eq!(n, seconds, "{clip}: one example per second");
        let err = max_abs_diff(&got, want);
        eprintln!("vggish log-mel {clip}: max |Δ| {err:.2e}");
        worst = worst.max(err);
    }
    // The issue asks for ≤ 1e-3. Both sides compute in f64, so what remains is the port's final
    // rounding to f32: ≤ 2^-24·|x| ≈ 3e-7 for the values here (|x| < 6).
    assert!(worst <= 1e-5, "max |Δ| {worst:e}");
}

/// Our filterbank and STFT kernels against torchlibrosa's (melW from the slim checkpoint,
/// selected kernel rows from the reference file).
#[test]
fn panns_filterbank_and_kernels_match_torchlibrosa() {
    let fe = PannsFrontEnd::default();
    let sd: HashMap<_, _> = read_state_dict(&fixture("cnn14_slim.pth"))
        .unwrap()
        .into_iter()
        .collect();
    let mel_w = &sd["logmel_extractor.melW"];
    assert_eq!(mel_w.shape, [513, 64]);
    let err = mel_w
        .data
        .iter()
        .zip(fe.mel_filterbank())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let max = mel_w.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!("melW: max |Δ| {err:.2e} (largest weight {max:.2e})");
    // librosa's float32 values; an ulp of the largest weight is ~2e-9.
    assert!(err <= 1e-8, "melW max |Δ| {err:e}");

    let refs = Arrays::open(&fixture("cnn14_ref.safetensors"));
    let rows: Vec<usize> = refs.f64s("stft_rows").iter().map(|&r| r as usize).collect();
    let (real, imag) = fe.stft_kernels();
    for (name, ours) in [("stft_real", &real), ("stft_imag", &imag)] {
        let theirs = refs.f64s(name);
        let mut err = 0f64;
        for (i, &r) in rows.iter().enumerate() {
            err = err.max(max_abs_diff(
                &ours[r * 1024..(r + 1) * 1024],
                &theirs[i * 1024..(i + 1) * 1024],
            ));
        }
        eprintln!("{name} rows {rows:?}: max |Δ| {err:.2e}");
        // Both are f32 roundings of the same values in [-1, 1] (one ulp ≤ 6e-8).
        assert!(err <= 1.2e-7, "{name} max |Δ| {err:e}");
    }
}

/// Cnn14's log-mel per one-second window on real audio, against the exact (float64) reference
/// and against torchlibrosa in float32, which is what PANNs runs.
#[test]
fn panns_log_mel_matches_reference() {
    let signals = Arrays::open(&fixture("signals.safetensors"));
    let refs = Arrays::open(&fixture("cnn14_ref.safetensors"));
    let fe = PannsFrontEnd::default();
    let (mut worst_exact, mut worst_t32, mut worst_t32_loud) = (0f64, 0f64, 0f64);
    for (clip, seconds) in CLIPS {
        let samples = signals.f32s(&format!("{clip}.32k"));
        let (shape, exact) = refs.get(&format!("{clip}.log_mel"));
        assert_eq!(&shape[..], &[seconds, 101, 64]);
        let t32 = refs.f64s(&format!("{clip}.log_mel_torch32"));
        let mut got = Vec::new();
        for s in 0..seconds {
            let lm = fe.log_mel(&samples[s * 32_000..(s + 1) * 32_000]).unwrap();
            assert_eq!((lm.frames, lm.bins), (101, 64));
            got.extend(lm.data);
        }
        let e = max_abs_diff(&got, exact);
        let t = max_abs_diff(&got, t32);
        let loud = got
            .iter()
            .zip(t32)
            .zip(exact)
            .filter(|(_, x)| **x >= -80.0)
            .map(|((&a, b), _)| (a as f64 - b).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "cnn14 log-mel {clip}: vs exact {e:.2e} dB; vs torchlibrosa f32 {t:.2e} dB \
             (bins ≥ −80 dB: {loud:.2e})"
        );
        worst_exact = worst_exact.max(e);
        worst_t32 = worst_t32.max(t);
        worst_t32_loud = worst_t32_loud.max(loud);
    }
    // Against exact arithmetic: only the final f32 rounding, ≤ 2^-24·100 dB ≈ 6e-6.
    assert!(worst_exact <= 2e-5, "vs exact: {worst_exact:e} dB");
    // Against float32 torchlibrosa the 1e-3 dB holds except in the quietest bins
    // (< −80 dB, the church bell's top band), where its f32 conv STFT itself is off by up to
    // ~3.6e-3 dB from exact arithmetic (a power error of 0.08 %).
    assert!(
        worst_t32_loud <= 1e-3,
        "vs torchlibrosa f32, bins ≥ −80 dB: {worst_t32_loud:e}"
    );
    assert!(worst_t32 <= 5e-3, "vs torchlibrosa f32: {worst_t32:e} dB");
}

// ------------------------------------------------------------------------------------------------
// Networks
// ------------------------------------------------------------------------------------------------

fn slim_vggish() -> Vggish {
    let config = VggishConfig {
        convs: [4, 8, 8, 8, 16, 16],
        hidden: 32,
        dim: 128,
    };
    Vggish::load(&fixture("vggish_slim.pth"), config, &device()).unwrap()
}

fn slim_cnn14() -> Cnn14 {
    let config = Cnn14Config {
        channels: [4, 8, 8, 16, 16, 32],
    };
    Cnn14::load(&fixture("cnn14_slim.pth"), config, &device()).unwrap()
}

// Tolerance for embeddings, 1e-4 of the output's scale: the references are float64, the port
// runs the networks in f32 (its front ends in f64). f32 rounding over these depths (8 layers,
// sums of ≤ 12·10³ terms) gives ~1e-6–1e-5 relative; float32 PyTorch itself differs from the
// float64 reference by up to 5e-7 (VGGish) and 4e-7 (Cnn14) of the scale. 1e-4 leaves room
// for summation-order differences yet catches any layout or layer error (those change the
// outputs at order 1).
const EMBED_TOL: f64 = 1e-4;

#[test]
fn vggish_slim_matches_torchvggish() {
    let model = slim_vggish();
    assert_eq!(
        (model.name(), model.sample_rate(), model.dim()),
        ("vggish", 16_000, 128)
    );
    let signals = Arrays::open(&fixture("signals.safetensors"));
    let refs = Arrays::open(&fixture("vggish_ref.safetensors"));
    for (clip, seconds) in CLIPS {
        let want = refs.f64s(&format!("{clip}.embedding"));
        // The network alone, on the reference's own examples.
        let examples = refs.f32s(&format!("{clip}.examples"));
        let x = Tensor::from_data(TensorData::new(examples, [seconds, 1, 96, 64]), &device());
        let net = cace_net::to_vec(model.forward(x));
        // End to end from the waveform.
        let samples = signals.f32s(&format!("{clip}.16k"));
        let got = model.encode(&samples, seconds).unwrap();
        assert_eq!(got.len(), seconds * 128);
        let (e_net, e_all) = (rel_err(&net, want), rel_err(&got, want));
        eprintln!("vggish slim {clip}: network {e_net:.2e}, end to end {e_all:.2e} (relative)");
        assert!(
            e_net <= EMBED_TOL && e_all <= EMBED_TOL,
            "{clip}: {e_net:e} / {e_all:e}"
        );
    }
}

#[test]
fn cnn14_slim_matches_panns() {
    let model = slim_cnn14();
    assert_eq!(
        (model.name(), model.sample_rate(), model.dim()),
        ("cnn14", 32_000, 32)
    );
    let signals = Arrays::open(&fixture("signals.safetensors"));
    let refs = Arrays::open(&fixture("cnn14_ref.safetensors"));
    for (clip, seconds) in CLIPS {
        let want = refs.f64s(&format!("{clip}.embedding"));
        let log_mel = refs.f32s(&format!("{clip}.log_mel"));
        let x = Tensor::from_data(TensorData::new(log_mel, [seconds, 1, 101, 64]), &device());
        let net = cace_net::to_vec(model.forward(x));
        let samples = signals.f32s(&format!("{clip}.32k"));
        let got = model.encode(&samples, seconds).unwrap();
        assert_eq!(got.len(), seconds * 32);
        // What PANNs itself computes: float32 torchlibrosa + float32 network, from the waveform.
        let deployed = refs.f64s(&format!("{clip}.embedding_torch32"));
        let (e_net, e_all, e_dep) = (
            rel_err(&net, want),
            rel_err(&got, want),
            rel_err(&got, deployed),
        );
        eprintln!(
            "cnn14 slim {clip}: network {e_net:.2e}, end to end {e_all:.2e}, \
             vs float32 PANNs {e_dep:.2e} (relative)"
        );
        assert!(
            e_net <= EMBED_TOL && e_all <= EMBED_TOL,
            "{clip}: {e_net:e} / {e_all:e}"
        );
        assert!(e_dep <= EMBED_TOL, "{clip} vs float32 PANNs: {e_dep:e}");
    }
}

// ------------------------------------------------------------------------------------------------
// Bad input
// ------------------------------------------------------------------------------------------------

fn load_error<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("loading should have failed"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn missing_file_key_or_wrong_shape_names_file_and_key() {
    let d = device();
    let e = load_error(vggish::load(Path::new("/nonexistent/vggish.pth"), &d));
    assert!(
        e.contains("/nonexistent/vggish.pth") && e.contains("not found"),
        "{e}"
    );

    // A Cnn14 checkpoint given as VGGish: the first key VGGish needs is missing.
    let e = load_error(Vggish::load(
        &fixture("cnn14_slim.pth"),
        VggishConfig::full(),
        &d,
    ));
    assert!(
        e.contains("cnn14_slim.pth") && e.contains("missing key `features.0.weight`"),
        "{e}"
    );
    let e = load_error(Cnn14::load(
        &fixture("vggish_slim.pth"),
        Cnn14Config::full(),
        &d,
    ));
    assert!(
        e.contains("vggish_slim.pth") && e.contains("missing key `bn0.weight`"),
        "{e}"
    );

    // Full-size widths on slim files: the first layer's shape is wrong.
    let e = load_error(vggish::load(&fixture("vggish_slim.pth"), &d));
    assert!(
        e.contains("vggish_slim.pth") && e.contains("`features.0.weight` has shape [4, 1, 3, 3]"),
        "{e}"
    );
    let e = load_error(cnn14::load(&fixture("cnn14_slim.pth"), &d));
    assert!(
        e.contains("cnn14_slim.pth")
            && e.contains(
                "`conv_block1.conv1.weight` has shape [4, 1, 3, 3], expected [64, 1, 3, 3]"
            ),
        "{e}"
    );
    let slim = VggishConfig {
        convs: [4, 8, 8, 8, 16, 16],
        hidden: 64,
        dim: 128,
    };
    let e = load_error(Vggish::load(&fixture("vggish_slim.pth"), slim, &d));
    assert!(
        e.contains("`embeddings.0.weight` has shape [32, 384], expected [64, 384]"),
        "{e}"
    );

    // Checkpoints of other PANNs front ends fail on their frozen filterbank.
    let slim = Cnn14Config {
        channels: [4, 8, 8, 16, 16, 32],
    };
    let e = load_error(Cnn14::load(
        &fixture("cnn14_melw_16k.pth"),
        slim.clone(),
        &d,
    ));
    assert!(
        e.contains("cnn14_melw_16k.pth")
            && e.contains("`logmel_extractor.melW` has shape [257, 64]"),
        "{e}"
    );
    let e = load_error(Cnn14::load(&fixture("cnn14_melw_fmax16k.pth"), slim, &d));
    assert!(
        e.contains("cnn14_melw_fmax16k.pth")
            && e.contains("`logmel_extractor.melW` differs from the Cnn14 front end"),
        "{e}"
    );
}

#[test]
fn wrong_sample_count_is_a_clear_error() {
    let vgg = slim_vggish();
    let e = vgg.encode(&vec![0.0; 31_999], 2).unwrap_err().to_string();
    assert!(
        e.contains("vggish: expected 32000 samples (2 s of mono audio at 16000 Hz), got 31999"),
        "{e}"
    );
    assert!(vgg.encode(&[], 0).is_err());
    let cnn = slim_cnn14();
    // 2 s at VGGish's rate given to Cnn14.
    let e = cnn.encode(&vec![0.0; 32_000], 2).unwrap_err().to_string();
    assert!(
        e.contains("cnn14: expected 64000 samples (2 s of mono audio at 32000 Hz), got 32000"),
        "{e}"
    );
}

fn as_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Seconds are independent clips for Cnn14: encoding a clip equals encoding each second alone.
/// VGGish examples of a 30-s clip: the first `seconds` of the 31 the front end yields.
/// (Batches of different sizes may sum in another order, hence 1e-5 rather than equality; a
/// window mix-up would differ at order 1.)
#[test]
fn per_second_windows_and_long_clips() {
    let signals = Arrays::open(&fixture("signals.safetensors"));
    let cnn = slim_cnn14();
    let x = signals.f32s("church_bell.32k");
    let both = cnn.encode(&x, 2).unwrap();
    let second = cnn.encode(&x[32_000..], 1).unwrap();
    assert!(rel_err(&both[32..], &as_f64(&second)) <= 1e-5);

    let vgg = slim_vggish();
    let one = signals.f32s("train_horn.16k");
    let long: Vec<f32> = one.iter().copied().cycle().take(30 * 16_000).collect();
    assert_eq!(vgg.front_end().examples(&long).0, 31);
    let out = vgg.encode(&long, 30).unwrap();
    assert_eq!(out.len(), 30 * 128);
    // The first two 0.96-s examples lie inside the first (repeated) 2-s block.
    let first = vgg.encode(&one, 2).unwrap();
    assert!(rel_err(&out[..256], &as_f64(&first)) <= 1e-5);
    // ...and the later ones see other audio (the 2-s block is not a multiple of 0.96 s).
    assert!(rel_err(&out[256..512], &as_f64(&first)) > 1e-2);
}

// ------------------------------------------------------------------------------------------------
// Full size (needs `tools/make_audio_fixtures.py --full DIR`, ~700 MB outside the repo)
// ------------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs CACE_AUDIO_FULL_DIR from tools/make_audio_fixtures.py --full"]
fn full_size_random_weights() {
    let dir = PathBuf::from(
        std::env::var("CACE_AUDIO_FULL_DIR")
            .expect("set CACE_AUDIO_FULL_DIR (see tools/make_audio_fixtures.py)"),
    );
    let refs = Arrays::open(&dir.join("full_ref.safetensors"));
    let d = device();

    let vgg = vggish::load(&dir.join("vggish_full.pth"), &d).unwrap();
    let samples = refs.f32s("signal.16k");
    let t = Instant::now();
    let got = vgg.encode(&samples, 10).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let e = rel_err(&got, refs.f64s("vggish.embedding"));
    let e32 = rel_err(&got, refs.f64s("vggish.embedding_f32"));
    eprintln!(
        "vggish full, 10 s: relative error {e:.2e} (vs float32 torch {e32:.2e}); encode {secs:.2} s wall"
    );
    assert!(e <= EMBED_TOL, "vggish full: {e:e}");
    drop(vgg);

    // Loading also checks the checkpoint's melW and both STFT kernels against ours.
    let cnn = cnn14::load(&dir.join("cnn14_full.pth"), &d).unwrap();
    let samples = refs.f32s("signal.32k");
    let t = Instant::now();
    let got = cnn.encode(&samples, 10).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let e = rel_err(&got, refs.f64s("cnn14.embedding"));
    let e32 = rel_err(&got, refs.f64s("cnn14.embedding_torch32"));
    eprintln!(
        "cnn14 full, 10 s: relative error {e:.2e} (vs float32 PANNs {e32:.2e}); encode {secs:.2} s wall"
    );
    assert!(e <= EMBED_TOL, "cnn14 full: {e:e}");
    assert!(e32 <= EMBED_TOL, "cnn14 full vs float32 PANNs: {e32:e}");
}
