//! `cace finetune` end to end on clips the `ffmpeg` tool generates, with a slim ResNet-50 (the
//! real layout, few channels) so that it runs in seconds: frames cached once, metrics per
//! epoch, the encoder written in both layouts and readable, `--resume` continuing to the same
//! weights as an uninterrupted run, and bad inputs refused with the culprit named.
#![cfg(feature = "video")]

mod video_common;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use cace_net::checkpoint::pth::read_state_dict;
use cace_net::encoders::resnet50::ResNet50Config;
use cace_net::finetune::backbone::{BackboneConfig, BackboneKind};
use cace_net::finetune::weights::{I_STATE_DICT_FILE, save_backbone};
use cace_net::finetune::{FinetuneConfig, FinetuneOptions, finetune};
use video_common::*;

fn slim() -> BackboneConfig {
    BackboneConfig::Resnet50(ResNet50Config {
        stem: 8,
        planes: [2, 4, 4, 8],
        ..ResNet50Config::default()
    })
}

/// Ten 10-second clips named by AVE ids, the synthetic AVE features of those ids, and slim
/// pretrained weights: `(videos, features, weights)`.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let features = dir.join("features");
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_cace"))
        .args(["synth", "--videos", "40", "--f32", "--out"])
        .arg(&features)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let text = std::fs::read_to_string(features.join("Annotations.txt")).unwrap();
    let videos = dir.join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    let clip = Clip {
        fps: 4,
        sound: Sound::None,
        ..Clip::new(10.0)
    };
    for line in text.lines().take(10) {
        make_clip(&videos, line.split('&').nth(1).unwrap(), clip.clone());
    }
    let weights = dir.join("weights");
    std::fs::create_dir_all(&weights).unwrap();
    let device = Device::flex();
    device.seed(3);
    let backbone = slim().init(&device);
    save_backbone(&backbone, BackboneKind::Resnet50, 0, &weights).unwrap();
    (videos, features, weights)
}

fn options(
    videos: &Path,
    features: &Path,
    weights: &Path,
    out: &Path,
    epochs: usize,
) -> FinetuneOptions {
    let config = FinetuneConfig {
        epochs,
        batch_size: 4,
        local_batch: 2,
        held_out: 3,
        ..FinetuneConfig::default()
    };
    FinetuneOptions {
        videos: videos.into(),
        features: features.into(),
        weights: weights.into(),
        out: out.into(),
        config,
        resume: false,
        device: Device::flex(),
        verbose: false,
        backbone: Some(slim()),
    }
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn finetunes_resumes_and_writes_both_encoder_files() {
    if !ffmpeg_or_skip("finetunes_resumes_and_writes_both_encoder_files") {
        return;
    }
    let dir = temp_dir("finetune");
    let (videos, features, weights) = setup(dir.path());

    let whole = dir.path().join("whole");
    assert_eq!(
        finetune(&options(&videos, &features, &weights, &whole, 3)).unwrap(),
        3
    );
    let m = metrics(&whole);
    assert_eq!(m.len(), 3);
    for line in &m {
        assert!(line["loss"].as_f64().unwrap().is_finite(), "{line}");
        assert!(line["a2v_top5"].as_f64().is_some(), "{line}");
    }
    // Of the ten clips, the ones in the synthetic set's test split are left out; the rest
    // are cached once.
    let skipped = std::fs::read_to_string(whole.join("skipped.tsv")).unwrap_or_default();
    let cached = std::fs::read_dir(whole.join("frames")).unwrap().count();
    assert_eq!(cached + skipped.lines().count(), 10, "{skipped}");
    assert!(whole.join("curves.png").exists());
    // The 3 held-out videos are named, each a cached video that is not skipped.
    let held = std::fs::read_to_string(whole.join("held_out.tsv")).unwrap();
    assert_eq!(held.lines().count(), 3, "{held}");
    for id in held.lines() {
        assert!(!skipped.contains(id), "{id} held out and skipped");
        let frames = whole.join("frames").join(format!("{id}.rgb"));
        assert!(frames.exists(), "{id} has no cached frames");
    }

    // Both files hold the same trained encoder, under torchvision's and the official keys.
    let tv = read_state_dict(&whole.join("resnet50.pth")).unwrap();
    let seq = read_state_dict(&whole.join(I_STATE_DICT_FILE)).unwrap();
    let get = |sd: &[(String, cace_net::checkpoint::pth::PthTensor)], k: &str| {
        sd.iter()
            .find(|(key, _)| key == k)
            .unwrap_or_else(|| panic!("no {k}"))
            .1
            .data
            .clone()
    };
    assert_eq!(
        get(&tv, "layer4.2.conv3.weight"),
        get(&seq, "7.2.conv3.weight")
    );
    assert_eq!(get(&tv, "bn1.num_batches_tracked"), vec![3.0 * 2.0]); // 3 steps × 2 shares
    let before = read_state_dict(&weights.join("resnet50.pth")).unwrap();
    assert_ne!(get(&tv, "conv1.weight"), get(&before, "conv1.weight"));

    // Two epochs, then --resume to three: the same encoder as the uninterrupted run.
    let resumed = dir.path().join("resumed");
    finetune(&options(&videos, &features, &weights, &resumed, 2)).unwrap();
    let mut again = options(&videos, &features, &weights, &resumed, 3);
    again.resume = true;
    finetune(&again).unwrap();
    assert_eq!(metrics(&resumed).len(), 3);
    let a = std::fs::read(whole.join("resnet50.pth")).unwrap();
    let b = std::fs::read(resumed.join("resnet50.pth")).unwrap();
    assert!(a == b, "resumed run differs from the uninterrupted one");

    // A finished run is not overwritten without --resume.
    let err = finetune(&options(&videos, &features, &weights, &whole, 3)).unwrap_err();
    assert!(
        format!("{err:#}").contains("already holds a run"),
        "{err:#}"
    );
}

#[test]
fn bad_inputs_are_named() {
    if !ffmpeg_or_skip("bad_inputs_are_named") {
        return;
    }
    let dir = temp_dir("finetune-bad");
    let (videos, features, weights) = setup(dir.path());
    let run = |opts: FinetuneOptions| format!("{:#}", finetune(&opts).unwrap_err());

    // No encoder file in --weights.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = run(options(
        &videos,
        &features,
        &empty,
        &dir.path().join("r1"),
        1,
    ));
    assert!(
        err.contains("resnet50.pth") && err.contains("not found"),
        "{err}"
    );

    // Features whose ids match none of the videos.
    let other = dir.path().join("other");
    std::process::Command::new(env!("CARGO_BIN_EXE_cace"))
        .args(["synth", "--videos", "12", "--seed", "5", "--f32", "--out"])
        .arg(&other)
        .output()
        .unwrap();
    std::fs::write(
        other.join("Annotations.txt"),
        "Church bell&nomatch&good&0&10\n".repeat(12),
    )
    .unwrap();
    let err = run(options(
        &videos,
        &other,
        &weights,
        &dir.path().join("r2"),
        1,
    ));
    assert!(err.contains("has an audio row"), "{err}");

    // More videos per step than there are.
    let mut big = options(&videos, &features, &weights, &dir.path().join("r3"), 1);
    big.config.batch_size = 64;
    big.config.local_batch = 16;
    let err = run(big);
    assert!(err.contains("fewer than one batch"), "{err}");

    // Every video held out: refused before any frame is decoded (it used to index an empty
    // training list).
    let mut all_held = options(&videos, &features, &weights, &dir.path().join("r5"), 1);
    all_held.config.held_out = 100;
    let err = run(all_held);
    assert!(err.contains("0 videos to train on"), "{err}");
    assert!(
        !dir.path().join("r5/frames").exists(),
        "decoded frames before refusing"
    );

    // A config field out of range is named.
    let mut bad = options(&videos, &features, &weights, &dir.path().join("r4"), 1);
    bad.config.tau = 0.0;
    assert!(run(bad).contains("tau"));
}
