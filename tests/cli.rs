//! The `cace` binary end to end: `import`, `predict` and `info` on the golden checkpoint and
//! inputs written into an AVE-layout directory (the acceptance check), both checkpoint
//! formats, a float32 official checkpoint, and clear errors on bad input.

mod common;

use std::path::Path;
use std::process::Command;

use cace_net::checkpoint::pth::DType;
use cace_net::checkpoint::{native, pth};
use cace_net::data::ave::{FeatureDType, Split, write_features};
use common::golden::{assert_close, checkpoint as golden_ckpt, golden};
use serde_json::Value;

fn cace(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cace"))
        .args(args)
        .output()
        .expect("run cace");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked at") && !err.contains("internal error"),
        "cace {args:?} panicked (a bug): {err}"
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `python3 tools/pth_f64_to_f32.py src dst` (standard library only); python3 must be
/// on PATH, or the test fails saying so.
fn run_f64_to_f32(src: &Path, dst: &Path) -> std::process::Output {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/pth_f64_to_f32.py");
    Command::new("python3")
        .arg(&tool)
        .args([src, dst])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs python3 (standard library only) on PATH to run {}: {e}",
                tool.display()
            )
        })
}

/// `src` rewritten with float32 storages into `dst`, as torch would have written it.
fn f64_to_f32(src: &Path, dst: &Path) {
    let out = run_f64_to_f32(src, dst);
    assert!(
        out.status.success(),
        "tools/pth_f64_to_f32.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The converter on the many-dtype fixture: the f64 storage becomes f32 (rounded), every
/// other tensor, view and storage sharing stays as it was.
#[test]
fn python_tool_rewrites_f64_storages_as_f32() {
    let scratch = tmp("convert");
    let dir = scratch.path();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_f32.pth");
    let dst = dir.join("tiny_converted.pth");
    f64_to_f32(&src, &dst);
    let (got, want) = (
        pth::read_state_dict(&dst).unwrap(),
        pth::read_state_dict(&src).unwrap(),
    );
    assert_eq!(got.len(), want.len());
    for ((k, a), (k0, b)) in got.iter().zip(&want) {
        assert_eq!((k, &a.shape, &a.data), (k0, &b.shape, &b.data));
        let dtype = if b.dtype == DType::F64 {
            DType::F32
        } else {
            b.dtype
        };
        assert_eq!(a.dtype, dtype, "{k}");
    }
    assert!(want.iter().any(|(_, t)| t.dtype == DType::F64));
    // a legacy (non-zip) file is refused, and nothing is written
    let legacy = src.with_file_name("tiny_legacy.pth");
    let not_written = dir.join("legacy_converted.pth");
    assert!(!run_f64_to_f32(&legacy, &not_written).status.success());
    assert!(!not_written.exists());
}

/// A scratch folder for one test, removed when the test ends (`tempfile`), pass or fail.
fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("cace-cli-{name}-"))
        .tempdir()
        .expect("a scratch folder")
}

/// The golden inputs as a 3-row AVE dataset (float64 features, like the real files); the test
/// split lists the rows in order.
fn golden_dataset(dir: &Path) {
    let g = golden();
    let (vs, v) = g.f32("input/visual");
    let (as_, a) = g.f32("input/audio");
    let (_, l) = g.f32("input/labels");
    let v64: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
    let orders = vec![(Split::Test, vec![0, 1, 2])];
    write_features(
        dir,
        &v64,
        &vs,
        &a64,
        &as_,
        Some(&l),
        &orders,
        FeatureDType::F64,
    )
    .unwrap();
}

fn predict_json(checkpoint: &Path, data: &Path, out: &Path) -> Value {
    let (ok, stdout, stderr) = cace(&[
        "predict",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--split",
        "test",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "cace predict failed: {stderr}");
    assert!(stdout.contains("accuracy: 23.33 %"), "stdout: {stdout}");
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Checks `cace predict` output against `out64/*`, `out/pred` and `out/accuracy`.
fn check_against_golden(json: &Value) {
    let g = golden();
    let videos = json["videos"].as_array().unwrap();
    assert_eq!(videos.len(), 3);
    let logits: Vec<f32> = videos
        .iter()
        .flat_map(|v| floats(&v["event_logits"]))
        .collect();
    let scores: Vec<f32> = videos
        .iter()
        .flat_map(|v| floats(&v["class_logits"]))
        .collect();
    let pred: Vec<f64> = videos
        .iter()
        .flat_map(|v| {
            v["pred"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
        })
        .collect();
    let rows: Vec<u64> = videos.iter().map(|v| v["row"].as_u64().unwrap()).collect();
    assert_eq!(rows, [0, 1, 2]);
    // f32 port vs f64 reference: golden README §4 (atol 1e-5, rtol 1e-4).
    assert_close(
        "event_logits",
        &logits,
        &g.get("out64/is_event_scores").batch_first().data,
        1e-5,
        1e-4,
    );
    assert_close(
        "class_logits",
        &scores,
        &g.get("out64/event_scores").data,
        1e-5,
        1e-4,
    );
    assert_eq!(pred, g.get("out/pred").data, "pred");
    assert_eq!(json["accuracy"].as_f64().unwrap(), g.scalar("out/accuracy"));
    let prob = floats(&videos[0]["event_prob"]);
    assert!((prob[0] - 1.0 / (1.0 + (-logits[0]).exp())).abs() < 1e-6);
    // pred 14 at t = 7 of video 1 (golden README §2.2) and background at t = 4 of video 0.
    assert_eq!(videos[1]["pred_names"][7], "Acoustic guitar");
    assert_eq!(videos[0]["pred_names"][4], "background");
}

#[test]
#[cfg_attr(
    golden_absent,
    ignore = "golden vectors absent: set CACE_GOLDEN_DIR or provide ../shared/golden"
)]
fn predict_reproduces_official_outputs_with_both_formats_and_f32() {
    let scratch = tmp("golden");
    let dir = scratch.path();
    let data = dir.join("ave");
    golden_dataset(&data);

    // Official float64 checkpoint.
    let official = predict_json(&golden_ckpt(), &data, &dir.join("official.json"));
    check_against_golden(&official);

    // Imported native checkpoint: same f32 weights, so the same numbers exactly.
    let native_dir = dir.join("native");
    let (ok, _, stderr) = cace(&[
        "import",
        golden_ckpt().to_str().unwrap(),
        "--out",
        native_dir.to_str().unwrap(),
    ]);
    assert!(ok, "import failed: {stderr}");
    let imported = predict_json(&native_dir, &data, &dir.join("native.json"));
    assert_eq!(imported["videos"], official["videos"]);

    // The same official checkpoint saved with float32 storages (as torch would write it).
    let f32_ckpt = dir.join("cace_f32.pth.tar");
    f64_to_f32(&golden_ckpt(), &f32_ckpt);
    let sd = pth::read_state_dict(&f32_ckpt).unwrap();
    assert!(sd.len() == 242 && sd.iter().all(|(_, t)| t.dtype == DType::F32));
    let from_f32 = predict_json(&f32_ckpt, &data, &dir.join("f32.json"));
    assert_eq!(from_f32["videos"], official["videos"]);

    // `eval` prints the official accuracy line and writes the breakdown.
    let eval_json = dir.join("eval.json");
    let (ok, stdout, stderr) = cace(&[
        "eval",
        "--checkpoint",
        native_dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
        eval_json.to_str().unwrap(),
    ]);
    assert!(ok, "eval failed: {stderr}");
    assert!(stdout.contains("accuracy: 23.33 %"), "{stdout}");
    let b: Value = serde_json::from_slice(&std::fs::read(&eval_json).unwrap()).unwrap();
    assert_eq!(b["segments"], 30);
    // Video 1 (Bark at t = 3, 4) is right on 7 background segments; t = 7 predicted 14.
    assert_eq!(b["confusion"][28][28], 7);
    assert_eq!(b["confusion"][28][14], 1);
    assert_eq!(b["per_class"][1]["segments"], 10);

    // `info` on the imported checkpoint reports the paper's Table S6 counts.
    let (ok, stdout, _) = cace(&["info", "--checkpoint", native_dir.to_str().unwrap()]);
    assert!(ok);
    assert!(stdout.contains("13118681 total, 9283417 used"), "{stdout}");
}

fn expect_error(args: &[&str], needles: &[&str]) {
    let (ok, _, stderr) = cace(args);
    assert!(!ok, "cace {args:?} should fail");
    for n in needles {
        assert!(
            stderr.contains(n),
            "error for {args:?} should mention `{n}`: {stderr}"
        );
    }
}

#[test]
#[cfg_attr(
    golden_absent,
    ignore = "golden vectors absent: set CACE_GOLDEN_DIR or provide ../shared/golden"
)]
fn bad_checkpoints_name_the_file_and_the_key() {
    let scratch = tmp("bad");
    let dir = scratch.path();
    let data = dir.join("ave");
    golden_dataset(&data);
    let native_dir = dir.join("native");
    assert!(
        cace(&[
            "import",
            golden_ckpt().to_str().unwrap(),
            "--out",
            native_dir.to_str().unwrap()
        ])
        .0
    );
    let (sd, config) = native::read(&native_dir).unwrap();

    // A missing tensor.
    let mut missing = sd.clone();
    missing
        .entries
        .retain(|(k, _)| k != "video_encoder.encoder.layers.1.linear2.bias");
    let ck = dir.join("missing");
    native::write(&ck, &missing, &config).unwrap();
    let out = dir.join("o.json");
    let args = |ck: &Path| {
        vec![
            "predict".to_string(),
            "--checkpoint".into(),
            ck.display().to_string(),
            "--data".into(),
            data.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let run = |ck: &Path, needles: &[&str]| {
        expect_error(
            &args(ck).iter().map(String::as_str).collect::<Vec<_>>(),
            needles,
        )
    };
    run(
        &ck,
        &["missing", "video_encoder.encoder.layers.1.linear2.bias"],
    );

    // A wrong shape.
    let mut reshaped = sd.clone();
    let t = &mut reshaped
        .entries
        .iter_mut()
        .find(|(k, _)| k == "v_fc.weight")
        .unwrap()
        .1;
    t.shape = vec![256, 1024];
    let ck = dir.join("reshaped");
    native::write(&ck, &reshaped, &config).unwrap();
    run(&ck, &["v_fc.weight", "[256, 1024]", "[512, 512]"]);

    // An extra tensor.
    let mut extra = sd.clone();
    extra.entries.push((
        "head.bonus".into(),
        cace_net::checkpoint::StoredTensor {
            shape: vec![2],
            data: vec![1.0, 2.0],
        },
    ));
    let ck = dir.join("extra");
    native::write(&ck, &extra, &config).unwrap();
    run(&ck, &["head.bonus"]);

    // A NaN weight.
    let mut nan = sd;
    nan.entries[0].1.data[5] = f32::NAN;
    let ck = dir.join("nan");
    native::write(&ck, &nan, &config).unwrap();
    run(
        &ck,
        &["non-finite", "spatial_channel_att.affine_video_1.weight"],
    );

    // A truncated official checkpoint and a pickle that calls os.system.
    let cut = dir.join("cut.pth.tar");
    let bytes = std::fs::read(golden_ckpt()).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    run(&cut, &["cut.pth.tar"]);
    let evil = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/evil_os_system.pth");
    run(&evil, &["evil_os_system.pth", "posix.system"]);

    // Missing checkpoint and missing dataset files.
    run(&dir.join("nope.pth.tar"), &["nope.pth.tar"]);
    std::fs::remove_file(data.join("audio_feature.h5")).unwrap();
    run(&native_dir, &["audio_feature.h5"]);
}

/// Without the optional `video` feature, the two video commands fail and say how to enable it.
#[cfg(not(feature = "video"))]
#[test]
fn video_commands_say_how_to_enable_the_feature() {
    let scratch = tmp("no-video");
    let dir = scratch.path();
    let clip = dir.join("clip.mp4");
    std::fs::write(&clip, b"not decoded").unwrap();
    let (clip, out) = (clip.to_str().unwrap(), dir.join("out"));
    let out = out.to_str().unwrap();
    for args in [
        vec!["extract", "--videos", clip, "--weights", "w", "--out", out],
        vec![
            "predict",
            "--video",
            clip,
            "--weights",
            "w",
            "--checkpoint",
            "c",
            "--out",
            out,
        ],
    ] {
        let (ok, _, stderr) = cace(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(
            stderr.contains("--features video") && stderr.contains("libavcodec-dev"),
            "{args:?}: {stderr}"
        );
        assert!(!Path::new(out).exists(), "{args:?} wrote {out}");
    }
}

/// Features of another width than the checkpoint's model: a clear error naming the data
/// directory and both widths, never a panic (issue #13, bug 1).
#[test]
#[cfg_attr(
    golden_absent,
    ignore = "golden vectors not found: set CACE_GOLDEN_DIR or add ../shared/golden"
)]
fn feature_width_mismatch_is_an_error_not_a_panic() {
    let scratch = tmp("width");
    let dir = scratch.path();
    for (name, vdim, adim) in [("visual256", 256, 128), ("audio64", 512, 64)] {
        let data = dir.join(name);
        let v = vec![0.5f32; 3 * 10 * 49 * vdim];
        let au = vec![0.25f32; 3 * 10 * adim];
        let orders = vec![(Split::Test, vec![0, 1, 2])];
        let labels = {
            let mut l = vec![0f32; 3 * 10 * 29];
            l.chunks_mut(29).for_each(|c| c[28] = 1.0);
            l
        };
        write_features(
            &data,
            &v,
            &[3, 10, 7, 7, vdim],
            &au,
            &[3, 10, adim],
            Some(&labels),
            &orders,
            FeatureDType::F32,
        )
        .unwrap();
        let (ckpt, data_s) = (golden_ckpt(), data.to_str().unwrap().to_string());
        let out = dir.join(format!("{name}.json"));
        for args in [
            vec![
                "eval",
                "--checkpoint",
                ckpt.to_str().unwrap(),
                "--data",
                &data_s,
            ],
            vec![
                "predict",
                "--checkpoint",
                ckpt.to_str().unwrap(),
                "--data",
                &data_s,
                "--out",
                out.to_str().unwrap(),
            ],
        ] {
            let (ok, _, stderr) = cace(&args);
            assert!(!ok, "{args:?} succeeded");
            let want = format!("features are visual {vdim}-d / audio {adim}-d");
            assert!(stderr.contains(&want), "{args:?}: {stderr}");
            assert!(stderr.contains(&data_s), "{args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        }
        assert!(!out.exists());
    }
}

/// `predict --out` naming a directory: an error saying so, no stray temporary file; `--json`
/// on a FIFO is written through, the FIFO stays a FIFO (issue #13, bug 3).
#[cfg(unix)]
#[test]
#[cfg_attr(
    golden_absent,
    ignore = "golden vectors not found: set CACE_GOLDEN_DIR or add ../shared/golden"
)]
fn outputs_onto_directories_and_fifos() {
    use std::os::unix::fs::FileTypeExt;
    let scratch = tmp("special-out");
    let dir = scratch.path();
    let data = dir.join("ave");
    golden_dataset(&data);
    let ckpt = golden_ckpt();
    let outdir = dir.join("already-a-dir");
    std::fs::create_dir_all(&outdir).unwrap();
    let (ok, _, stderr) = cace(&[
        "predict",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        outdir.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("is a directory"), "{stderr}");
    assert_eq!(std::fs::read_dir(&outdir).unwrap().count(), 0);
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");

    let fifo = dir.join("eval.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let (ok, _, stderr) = cace(&[
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
        fifo.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let json: Value = serde_json::from_str(&reader.join().unwrap()).unwrap();
    assert!(json["accuracy"].is_number(), "{json}");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

/// A native checkpoint whose `config.json` asks for a model far larger than its tensors is
/// refused, naming the file and the tensor that disagrees; the model's weights used to be
/// allocated before any shape was compared (`"d_model": 2^40` asked for 4 TB and aborted; seen
/// while fuzzing the native reader). Such a width is now a config error (`MAX_WIDTH`), so this
/// uses the largest valid one, 16384: the model would still need tens of GB, over the limit
/// below, and the shapes are compared first.
#[test]
fn huge_config_sizes_are_refused_before_allocating() {
    use cace_net::checkpoint::{StateDict, StoredTensor};
    use cace_net::config::ModelConfig;
    let scratch = tmp("huge-config");
    let dir = scratch.path();
    let t = |shape: Vec<usize>| StoredTensor {
        data: vec![0.5; shape.iter().product()],
        shape,
    };
    let sd = StateDict {
        entries: vec![
            ("v_fc.weight".into(), t(vec![512, 4])),
            ("a_fc.weight".into(), t(vec![128, 128])),
            (
                "AVInter.video_multihead.in_proj_weight".into(),
                t(vec![24, 8]),
            ),
        ],
    };
    let config = ModelConfig {
        visual_dim: 4,
        d_model: cace_net::config::MAX_WIDTH,
        heads: 1,
        ..ModelConfig::default()
    };
    let ck = dir.join("ck");
    native::write(&ck, &sd, &config).unwrap();
    // Under an 8 GB address-space limit (`ulimit -v`): without the check the weights are
    // zeroed page by page until the kernel's OOM killer stops the process, which starves the
    // whole machine first; with the limit the allocation just fails.
    let out = Command::new("sh")
        .args(["-c", "ulimit -v 8000000 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_cace"))
        .args(["info", "--checkpoint"])
        .arg(&ck)
        .output()
        .expect("run cace under sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    for needle in [
        ck.to_str().unwrap(),
        "AVInter.video_multihead.in_proj_weight",
        "[24, 8]",
    ] {
        assert!(err.contains(needle), "should mention `{needle}`: {err}");
    }
}
