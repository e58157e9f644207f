//! `cace extract` (resumable, sharded AVE-layout feature files) and `cace predict --video`
//! (CACE-Net on a clip), with mock encoders on clips the `ffmpeg` tool generates. Skipped (with
//! a message) only when `ffmpeg` is not installed.
#![cfg(feature = "video")]

mod video_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use cace_net::checkpoint::{self, native};
use cace_net::config::ModelConfig;
use cace_net::data::ave::{AveDir, Split};
use cace_net::encoders::{AudioEncoder, FrameEncoder, RgbFrame};
use cace_net::extract::dataset::{
    ExtractOptions, ExtractReport, Shard, extract_dataset, merge_shards, read_index,
};
use cace_net::extract::encode_clip;
use cace_net::extract::predict::{predict_video, predict_video_with, table, timeline_figure};
use cace_net::inference::{label_name, predict_split};
use cace_net::model::CaceNet;
use cace_net::plot::{ATTENTION_SIZE, timeline_size};
use video_common::*;

/// Six files, sorted: five clips (10 s, 3 s, 13 s, 10 s at 30 fps in MP4/AAC, 10 s) and, third,
/// a file that is not a video. Rows: 1 + 1 + 2 + 1 + 1 = 6.
fn collection(dir: &Path) -> PathBuf {
    let videos = dir.join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    make_clip(&videos, "a", Clip::new(10.0));
    make_clip(&videos, "b", Clip::new(3.0));
    make_garbage(&videos, "c.mp4");
    make_clip(&videos, "d", Clip::new(13.0));
    make_clip(
        &videos,
        "e",
        Clip {
            fps: 30,
            container: "mp4",
            ..Clip::new(10.0)
        },
    );
    make_clip(&videos, "f", Clip::new(10.0));
    std::fs::write(videos.join("notes.txt"), "not a video extension: ignored").unwrap();
    videos
}

fn options(videos: &Path, out: &Path, shard: Option<Shard>) -> ExtractOptions {
    ExtractOptions {
        videos: videos.to_path_buf(),
        out: out.to_path_buf(),
        encoders: "mock".into(),
        shard,
        progress: false,
    }
}

fn run(videos: &Path, out: &Path, shard: Option<Shard>) -> ExtractReport {
    extract_dataset(&options(videos, out, shard), &mut || {
        let (f, a) = vgg_like();
        Ok((
            Box::new(f) as Box<dyn FrameEncoder>,
            Box::new(a) as Box<dyn AudioEncoder>,
        ))
    })
    .unwrap()
}

/// Every file under `dir` (relative path → bytes).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        assert!(p.is_file(), "unexpected folder {}", p.display());
        out.insert(
            p.strip_prefix(dir).unwrap().to_path_buf(),
            std::fs::read(&p).unwrap(),
        );
    }
    out
}

fn assert_same_files(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (name, bytes) in &fa {
        assert!(
            bytes == &fb[name],
            "{} differs between {} and {}",
            name.display(),
            a.display(),
            b.display()
        );
    }
}

const CHILD_OUT: &str = "CACE_TEST_EXTRACT_CHILD_OUT";
const CHILD_VIDEOS: &str = "CACE_TEST_EXTRACT_CHILD_VIDEOS";

/// Not a test on its own: the interrupted extraction that
/// `interrupted_extraction_resumes_to_identical_files` runs in a child process (this test binary
/// again), killed by its frame encoder ([`KilledMidVideo`]). Does nothing when run normally.
#[test]
fn child_extraction_process() {
    let (Some(out), Some(videos)) = (std::env::var_os(CHILD_OUT), std::env::var_os(CHILD_VIDEOS))
    else {
        return;
    };
    let opts = options(Path::new(&videos), Path::new(&out), None);
    let staging = opts.out.join(".staging");
    extract_dataset(&opts, &mut || {
        let (f, a) = vgg_like();
        let frames = KilledMidVideo {
            inner: f,
            staging: staging.clone(),
        };
        Ok((
            Box::new(frames) as Box<dyn FrameEncoder>,
            Box::new(a) as Box<dyn AudioEncoder>,
        ))
    })
    .unwrap();
    panic!("the frame encoder should have killed this process");
}

/// The interrupted run's frame encoder: the mock, except that it kills its own process with
/// SIGKILL (as a crash or `kill -9` would: no unwinding, no cleanup) as soon as the run has
/// staged two videos, noted one failure and begun writing the fourth video's features.
struct KilledMidVideo {
    inner: MockFrames,
    staging: PathBuf,
}

impl FrameEncoder for KilledMidVideo {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn output_shape(&self) -> Vec<usize> {
        self.inner.output_shape()
    }
    fn encode_second(&self, frames: &[RgbFrame]) -> anyhow::Result<Vec<f32>> {
        if staged_counts(&self.staging) == (2, 1, 1) {
            let _ = Command::new("kill")
                .args(["-9", &std::process::id().to_string()])
                .status();
            std::process::abort();
        }
        self.inner.encode_second(frames)
    }
}

/// How many `.feat`, `.failed` and `.tmp` files a staging folder holds.
fn staged_counts(staging: &Path) -> (usize, usize, usize) {
    let names: Vec<String> = std::fs::read_dir(staging)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let count = |suffix: &str| names.iter().filter(|n| n.ends_with(suffix)).count();
    (count(".feat"), count(".failed"), count(".tmp"))
}

#[test]
fn interrupted_extraction_resumes_to_identical_files() {
    if !ffmpeg_or_skip("interrupted_extraction_resumes_to_identical_files") {
        return;
    }
    let dir = temp_dir("resume");
    let videos = collection(dir.path());

    // Uninterrupted.
    let whole = dir.path().join("whole");
    let report = run(&videos, &whole, None);
    assert_eq!(
        (report.videos, report.extracted_now, report.resumed),
        (6, 6, 0)
    );
    assert_eq!(report.rows, 6);
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].0.ends_with("c.mp4"));
    assert!(
        report.failed[0].1.contains("not a readable video file"),
        "{:?}",
        report.failed
    );

    // Killed (SIGKILL) while writing the fourth video's features (a, b staged, c failed).
    let resumed = dir.path().join("resumed");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_extraction_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_OUT, &resumed)
        .env(CHILD_VIDEOS, &videos)
        .status()
        .unwrap();
    assert!(!status.success());
    assert!(!resumed.join("visual_feature.h5").exists());
    let staged: Vec<String> = std::fs::read_dir(resumed.join(".staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let count = |suffix: &str| staged.iter().filter(|n| n.ends_with(suffix)).count();
    assert_eq!(
        (count(".feat"), count(".failed"), count(".tmp")),
        (2, 1, 1),
        "{staged:?}"
    );

    // Restarted: the three handled videos are not decoded again, the torn one is redone.
    let report = run(&videos, &resumed, None);
    assert_eq!(
        (report.extracted_now, report.resumed, report.rows),
        (3, 3, 6)
    );
    assert_same_files(&whole, &resumed);

    // Done is done: a rerun loads no encoder and changes nothing.
    let again = extract_dataset(&options(&videos, &whole, None), &mut || {
        panic!("a complete directory must not load encoders")
    })
    .unwrap();
    assert!(again.already_complete);
    assert_eq!((again.rows, again.failed.len()), (6, 1));
    let other = ExtractOptions {
        encoders: "other".into(),
        ..options(&videos, &whole, None)
    };
    let e = extract_dataset(&other, &mut || unreachable!())
        .unwrap_err()
        .to_string();
    assert!(e.contains("already holds a finished extraction"), "{e}");

    // What was written: the AVE layout, one row per window, in list order.
    let data = AveDir::open(&whole).unwrap();
    assert_eq!(data.num_rows(), 6);
    assert_eq!(data.visual_shape(), [10, 7, 7, 512]);
    assert_eq!(data.audio_dim(), 128);
    assert!(!data.has_labels());
    assert_eq!(data.order(Split::Test).unwrap(), (0..6).collect::<Vec<_>>());
    let index = read_index(&whole).unwrap();
    type Line = (Option<usize>, usize, String, Option<(usize, usize)>);
    let rows: Vec<Line> = index
        .iter()
        .map(|e| {
            let name = Path::new(&e.video)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (e.row, e.list_index, name, e.window)
        })
        .collect();
    assert_eq!(
        rows,
        [
            (Some(0), 0, "a.mkv".into(), Some((0, 10))),
            (Some(1), 1, "b.mkv".into(), Some((0, 3))),
            (None, 2, "c.mp4".into(), None),
            (Some(2), 3, "d.mkv".into(), Some((0, 10))),
            (Some(3), 3, "d.mkv".into(), Some((10, 3))),
            (Some(4), 4, "e.mp4".into(), Some((0, 10))),
            (Some(5), 5, "f.mkv".into(), Some((0, 10))),
        ]
    );
    let tsv = std::fs::read_to_string(whole.join("index.tsv")).unwrap();
    assert!(tsv.contains("\t3\t7\tok\t\n"), "{tsv}");
    assert!(tsv.contains("c.mp4\t-\t-\t-\tfailed\t"), "{tsv}");

    // Row 3 holds d's second window exactly as the clip pipeline computes it.
    let (frames, audio) = vgg_like();
    let mut windows = Vec::new();
    encode_clip(&videos.join("d.mkv"), &frames, &audio, &mut |w| {
        windows.push(w);
        Ok(())
    })
    .unwrap();
    let (mut v, mut a) = (Vec::new(), Vec::new());
    data.read_visual(&[3], &mut v).unwrap();
    data.read_audio(&[3], &mut a).unwrap();
    assert_eq!(v, windows[1].visual);
    assert_eq!(a, windows[1].audio);

    // The written folder works with the rest of cace: predict on it as it is, train on it
    // once labels and a train split are added.
    let ckpt = random_checkpoint(&dir.path().join("ckpt"), 512);
    let out = dir.path().join("pred.json");
    let (ok, stdout, stderr) = cace(&[
        "predict",
        "--checkpoint",
        s(&ckpt),
        "--data",
        s(&whole),
        "--out",
        s(&out),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("6 videos (no labels)"), "{stdout}");
    let mut ann = String::new();
    for (cat, start, end) in [
        ("Church bell", 0, 10),
        ("Bark", 2, 3),
        ("Bark", 0, 10),
        ("Bus", 5, 10),
        ("Cat", 0, 4),
        ("Goat", 1, 9),
    ] {
        ann.push_str(&format!("{cat}&vid&good&{start}&{end}\n"));
    }
    std::fs::write(whole.join("Annotations.txt"), ann).unwrap();
    write_order(&whole.join("train_order.h5"), &[0, 1, 2, 3]);
    write_order(&whole.join("val_order.h5"), &[4, 5]);
    let (ok, _, stderr) = cace(&[
        "train",
        "--data",
        s(&whole),
        "--out",
        s(&dir.path().join("run")),
        "--epochs",
        "1",
        "--batch-size",
        "2",
    ]);
    assert!(ok, "cace train on the extracted folder: {stderr}");
}

#[test]
fn shards_split_the_list_and_merge_into_the_unsharded_files() {
    if !ffmpeg_or_skip("shards_split_the_list_and_merge_into_the_unsharded_files") {
        return;
    }
    let dir = temp_dir("shards");
    let videos = collection(dir.path());
    let whole = dir.path().join("whole");
    run(&videos, &whole, None);

    let shard_dirs: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(&format!("shard{i}")))
        .collect();
    let mut shard_rows = Vec::new();
    for (i, out) in shard_dirs.iter().enumerate() {
        let report = run(&videos, out, Some(Shard { index: i, count: 2 }));
        assert_eq!(report.videos, 3);
        // Each shard is a complete dataset of its own.
        let data = AveDir::open(out).unwrap();
        shard_rows.push(data.num_rows());
        let positions: Vec<usize> = read_index(out)
            .unwrap()
            .iter()
            .map(|e| e.list_index)
            .collect();
        assert!(
            positions.iter().all(|p| p % 2 == i),
            "shard {i}: {positions:?}"
        );
    }
    // Shard 0: a, c (fails), e → 2 rows; shard 1: b, d (2 windows), f → 4 rows.
    assert_eq!(shard_rows, [2, 4]);

    let e = merge_shards(&shard_dirs[..1], &dir.path().join("m"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("shards 1/2 are missing"), "{e}");
    let merged = dir.path().join("merged");
    let report = merge_shards(&shard_dirs, &merged).unwrap();
    assert_eq!((report.videos, report.rows, report.failed.len()), (6, 6, 1));
    assert_same_files(&whole, &merged);

    // The same merge through the command: the files are written, and the exit status is 1
    // because a video failed (the rule `extract` and `predict --video` share).
    let by_cli = dir.path().join("merged_cli");
    let mut args = vec!["extract", "--merge"];
    args.extend(shard_dirs.iter().map(|p| s(p)));
    args.extend(["--out", s(&by_cli)]);
    let (ok, _, stderr) = cace(&args);
    assert!(!ok, "a failed video must give a non-zero exit: {stderr}");
    assert!(stderr.contains("1 of 6 videos failed"), "{stderr}");
    assert_same_files(&whole, &by_cli);
}

fn cace(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cace"))
        .args(args)
        .output()
        .unwrap();
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write_order(path: &Path, rows: &[i64]) {
    cace_net::data::h5::write(path, "order", &[rows.len()], rows).unwrap();
}

fn config(visual_dim: usize) -> ModelConfig {
    ModelConfig {
        visual_dim,
        ..ModelConfig::default()
    }
}

/// A native checkpoint of a randomly initialised CACE-Net.
fn random_checkpoint(dir: &Path, visual_dim: usize) -> PathBuf {
    let cfg = config(visual_dim);
    let model = CaceNet::new(&cfg, &Device::flex()).unwrap();
    native::write(dir, &checkpoint::state_dict(&model), &cfg).unwrap();
    dir.to_path_buf()
}

#[test]
fn predict_video_gives_per_second_events_json_and_a_timeline() {
    if !ffmpeg_or_skip("predict_video_gives_per_second_events_json_and_a_timeline") {
        return;
    }
    let dir = temp_dir("predict");
    let device = Device::flex();
    let loaded = checkpoint::load(
        &random_checkpoint(&dir.path().join("ckpt"), 512),
        None,
        &device,
    )
    .unwrap();
    let (frames, audio) = vgg_like();
    let clips = dir.path().join("clips");
    std::fs::create_dir_all(&clips).unwrap();
    let ten = make_clip(&clips, "ten", Clip::new(10.0));
    let three = make_clip(&clips, "three", Clip::new(3.0));
    let long = make_clip(&clips, "long", Clip::new(23.0));
    let predict = |p: &Path| {
        predict_video(&loaded.model, &loaded.config, p, &frames, &audio, &device).unwrap()
    };

    let r = predict(&ten);
    assert_eq!(r.segments.len(), 10);
    assert_eq!((r.seconds, r.padded_seconds, r.windows.len()), (10, 0, 1));
    assert_eq!(r.class_logits.len(), 28);
    assert_eq!(r.class_logits, r.windows[0].class_logits);
    let best = (0..28).fold(0, |b, i| {
        if r.class_logits[i] > r.class_logits[b] {
            i
        } else {
            b
        }
    });
    for (t, seg) in r.segments.iter().enumerate() {
        assert_eq!(seg.t, t);
        assert!(!seg.padded);
        let logit = r.windows[0].event_logits[t] as f64;
        assert!((seg.event_prob as f64 - 1.0 / (1.0 + (-logit).exp())).abs() < 1e-6);
        // The official rule: the clip's best category where σ(event) > 0.5, else background.
        assert_eq!(seg.class, if seg.event_prob > 0.5 { best } else { 28 });
        assert_eq!(seg.label, label_name(seg.class));
    }
    assert_eq!(
        (r.encoders.visual.as_str(), r.encoders.audio.as_str()),
        ("mock-frames", "mock-audio")
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["video"], s(&ten));
    assert_eq!(json["segments"].as_array().unwrap().len(), 10);
    assert_eq!(json["segments"][0]["t"], 0);
    assert!(json["segments"][3]["label"].is_string());
    assert_eq!(json["class_logits"].as_array().unwrap().len(), 28);
    assert_eq!(json["padded_seconds"], 0);
    assert!(json["timings_s"]["total"].as_f64().unwrap() > 0.0);
    let text = table(&r);
    assert_eq!(text.lines().count(), 12, "{text}");
    let png = dir.path().join("ten.png");
    timeline_figure(&r, &png).unwrap();
    assert_eq!(png_size(&png), timeline_size(1));

    // Figure 5 over the frames: one attention overlay per second of content, and the same
    // predictions as without it.
    let att = dir.path().join("attention");
    let with = predict_video_with(
        &loaded.model,
        &loaded.config,
        &three,
        &frames,
        &audio,
        &device,
        Some(&att),
    )
    .unwrap();
    for kind in ["audio-guided", "self-calibration"] {
        for t in 0..3 {
            let png = att.join(format!("three_{kind}_t{t}.png"));
            assert_eq!(png_size(&png), ATTENTION_SIZE);
        }
        let padded = att.join(format!("three_{kind}_t3.png"));
        assert!(!padded.exists(), "padded seconds get no overlay");
    }
    assert_eq!(
        with.windows[0].event_logits,
        predict(&three).windows[0].event_logits
    );

    // The same numbers as extracting a dataset and running `predict --data` on it
    // (batch of 2 rows vs 1: float summation order may differ, hence 1e-5).
    let ave = dir.path().join("ave");
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "clips/ten.mkv\nclips/long.mkv\n").unwrap();
    extract_dataset(&options(&list, &ave, None), &mut || {
        let (f, a) = vgg_like();
        Ok((
            Box::new(f) as Box<dyn FrameEncoder>,
            Box::new(a) as Box<dyn AudioEncoder>,
        ))
    })
    .unwrap();
    let split = predict_split(
        &loaded.model,
        &AveDir::open(&ave).unwrap(),
        Split::Test,
        64,
        &device,
    )
    .unwrap();
    assert_eq!(split.videos.len(), 4);
    let close = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
    };
    assert!(close(
        &r.windows[0].event_logits,
        &split.videos[0].event_logits
    ));
    assert!(close(
        &r.windows[0].class_logits,
        &split.videos[0].class_logits
    ));

    // 3 s: ten segments, the last seven padding, and said so.
    let r = predict(&three);
    assert_eq!((r.seconds, r.padded_seconds, r.segments.len()), (3, 7, 10));
    let padded: Vec<bool> = r.segments.iter().map(|s| s.padded).collect();
    assert_eq!(
        padded,
        [
            false, false, false, true, true, true, true, true, true, true
        ]
    );
    assert!(table(&r).contains("last 7 s padded"));

    // 23 s: three windows, absolute times 0..30, the class scores averaged over windows.
    let r = predict(&long);
    assert_eq!(
        (r.windows.len(), r.segments.len(), r.padded_seconds),
        (3, 30, 7)
    );
    assert_eq!(
        r.segments.iter().map(|s| s.t).collect::<Vec<_>>(),
        (0..30).collect::<Vec<_>>()
    );
    assert_eq!(r.segments.iter().filter(|s| s.padded).count(), 7);
    let mean0 = r.windows.iter().map(|w| w.class_logits[0]).sum::<f32>() / 3.0;
    assert!((r.class_logits[0] - mean0).abs() < 1e-6);
    for w in 0..3 {
        assert!(
            close(
                &r.windows[w].event_logits,
                &split.videos[1 + w].event_logits
            ),
            "window {w}"
        );
    }
    let png = dir.path().join("long.png");
    timeline_figure(&r, &png).unwrap();
    assert_eq!(png_size(&png), timeline_size(3));

    // Encoders that do not fit the checkpoint.
    let wide = checkpoint::load(
        &random_checkpoint(&dir.path().join("wide"), 2048),
        None,
        &device,
    )
    .unwrap();
    let e = predict_video(&wide.model, &wide.config, &ten, &frames, &audio, &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("expects 2048-d visual") && e.contains("--encoders"),
        "{e}"
    );
}

fn png_size(path: &Path) -> (u32, u32) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let info = dec.read_info().unwrap().info().clone();
    (info.width, info.height)
}

#[test]
fn commands_name_the_bad_input() {
    if !ffmpeg_or_skip("commands_name_the_bad_input") {
        return;
    }
    let dir = temp_dir("cli");
    let ckpt = random_checkpoint(&dir.path().join("ckpt"), 512);
    let weights = dir.path().join("weights");
    std::fs::create_dir_all(&weights).unwrap();
    std::fs::write(weights.join("vgg19.pth"), b"placeholder").unwrap();
    let silent = make_clip(
        dir.path(),
        "silent",
        Clip {
            sound: Sound::None,
            ..Clip::new(4.0)
        },
    );
    let garbage = make_garbage(dir.path(), "garbage.mp4");
    let good = make_clip(dir.path(), "good", Clip::new(3.0));

    let predict = |video: &Path| {
        cace(&[
            "predict",
            "--video",
            s(video),
            "--checkpoint",
            s(&ckpt),
            "--weights",
            s(&weights),
        ])
    };
    for (video, needles) in [
        (&silent, &["silent.mkv", "has no audio track"][..]),
        (&garbage, &["garbage.mp4", "not a readable video file"]),
        (&dir.path().join("nope.mp4"), &["nope.mp4: no such file"]),
        // The clip is fine; the weights folder lacks vggish.pth.
        (&good, &["vggish.pth: missing", "vggish-10086976.pth"]),
    ] {
        let (ok, _, stderr) = predict(video);
        assert!(!ok);
        for n in needles {
            assert!(
                stderr.contains(n),
                "predict --video {}: `{n}` not in {stderr}",
                video.display()
            );
        }
    }
    let (ok, _, stderr) = cace(&[
        "predict",
        "--video",
        s(&good),
        "--checkpoint",
        s(&ckpt),
        "--weights",
        s(&weights),
        "--encoders",
        "resnet-cnn14",
    ]);
    assert!(!ok && stderr.contains("expects 512-d visual"), "{stderr}");

    let videos = dir.path().join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    std::fs::copy(&good, videos.join("good.mkv")).unwrap();
    let (ok, _, stderr) = cace(&[
        "extract",
        "--videos",
        s(&videos),
        "--out",
        s(&dir.path().join("o")),
        "--weights",
        s(&dir.path().join("empty")),
    ]);
    assert!(!ok && stderr.contains("empty: not found"), "{stderr}");
    let (ok, _, stderr) = cace(&[
        "extract",
        "--videos",
        s(&dir.path().join("none")),
        "--out",
        s(&dir.path().join("o")),
        "--weights",
        s(&weights),
        "--encoders",
        "vgg",
    ]);
    assert!(!ok && stderr.contains("vggish.pth: missing"), "{stderr}");
    let (ok, _, stderr) = cace(&[
        "extract",
        "--merge",
        s(&videos),
        "--out",
        s(&dir.path().join("m")),
    ]);
    assert!(
        !ok && stderr.contains("not a complete cace extract directory"),
        "{stderr}"
    );
    let (ok, _, stderr) = cace(&[
        "extract",
        "--videos",
        s(&videos),
        "--out",
        s(&dir.path().join("o")),
        "--weights",
        s(&weights),
        "--shard",
        "2/2",
    ]);
    assert!(!ok && stderr.contains("expected i/n"), "{stderr}");
}

/// `cace predict --video` end to end with the real encoders. Their weight files are large and
/// not in the repository: run with `CACE_ENCODER_WEIGHTS=<folder with vgg19.pth and vggish.pth>
/// cargo test --release --test extract -- --ignored`.
#[test]
#[ignore = "needs the real encoders' weight files: set CACE_ENCODER_WEIGHTS and pass --ignored"]
fn predict_video_command_with_real_encoders() {
    let weights = PathBuf::from(
        std::env::var_os("CACE_ENCODER_WEIGHTS")
            .expect("CACE_ENCODER_WEIGHTS: a folder with vgg19.pth and vggish.pth"),
    );
    if !ffmpeg_or_skip("predict_video_command_with_real_encoders") {
        return;
    }
    let dir = temp_dir("e2e");
    let ckpt = random_checkpoint(&dir.path().join("ckpt"), 512);
    let clips = dir.path().join("clips");
    std::fs::create_dir_all(&clips).unwrap();
    let ten = make_clip(&clips, "ten", Clip::new(10.0));
    make_clip(&clips, "three", Clip::new(3.0));
    let (json, png) = (dir.path().join("r.json"), dir.path().join("r.png"));
    let (ok, stdout, stderr) = cace(&[
        "predict",
        "--video",
        s(&ten),
        "--checkpoint",
        s(&ckpt),
        "--weights",
        s(&weights),
        "--out",
        s(&json),
        "--figure",
        s(&png),
    ]);
    assert!(ok, "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["segments"].as_array().unwrap().len(), 10);
    assert_eq!(r["class_logits"].as_array().unwrap().len(), 28);
    assert_eq!(
        (
            r["encoders"]["visual"].as_str(),
            r["encoders"]["audio"].as_str()
        ),
        (Some("vgg19"), Some("vggish"))
    );
    for seg in r["segments"].as_array().unwrap() {
        assert!(stdout.contains(seg["label"].as_str().unwrap()), "{stdout}");
    }
    assert_eq!(png_size(&png), timeline_size(1));

    // A folder: one entry per video, the 3 s one padded.
    let figs = dir.path().join("figs");
    let (ok, stdout, stderr) = cace(&[
        "predict",
        "--video",
        s(&clips),
        "--checkpoint",
        s(&ckpt),
        "--weights",
        s(&weights),
        "--out",
        s(&json),
        "--figure",
        s(&figs),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("last 7 s padded"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let videos = r["videos"].as_array().unwrap();
    assert_eq!(videos.len(), 2);
    assert_eq!(videos[1]["padded_seconds"], 7);
    assert!(figs.join("ten.png").exists() && figs.join("three.png").exists());
}

/// `cace predict --video --dense` and `cace dense features` through their library functions:
/// per-second features are the cell means of `encode_clip`'s windows, the UnAV-layout files
/// read back to the same numbers, and the dense model's events lie in the clip, best first.
#[test]
fn dense_video_snippets_features_and_events() {
    use cace_net::dense::data::features::{FeatureSpec, load_video};
    use cace_net::dense::model::{DenseModel, DenseModelConfig};
    use cace_net::dense::video::{
        lanes_figure, predict_video_dense, snippets, write_unav_features,
    };
    if !ffmpeg_or_skip("dense_video_snippets_features_and_events") {
        return;
    }
    let dir = temp_dir("dense-video");
    let clips = dir.path().join("clips");
    std::fs::create_dir_all(&clips).unwrap();
    let long = make_clip(&clips, "long", Clip::new(23.0));
    let garbage = make_garbage(&clips, "bad.mp4");
    let (frames, audio) = vgg_like();

    let (f, _) = snippets(&long, &frames, &audio).unwrap();
    assert_eq!(
        (f.visual.rows, f.visual.cols, f.audio.rows, f.audio.cols),
        (512, 23, 128, 23)
    );
    let mut windows = Vec::new();
    encode_clip(&long, &frames, &audio, &mut |w| {
        windows.push(w);
        Ok(())
    })
    .unwrap();
    for s in [0usize, 9, 10, 22] {
        let (w, sec) = (&windows[s / 10], s % 10);
        for c in [0usize, 100, 511] {
            let mean = (0..49)
                .map(|i| w.visual[(sec * 49 + i) * 512 + c])
                .sum::<f32>()
                / 49.0;
            assert!(
                (mean - f.visual.data[c * 23 + s]).abs() < 1e-5,
                "second {s} channel {c}"
            );
        }
        for c in [0usize, 127] {
            assert_eq!(w.audio[sec * 128 + c], f.audio.data[c * 23 + s]);
        }
    }

    let out = dir.path().join("unav");
    let r = write_unav_features(&[long.clone(), garbage], &out, &frames, &audio, false).unwrap();
    assert_eq!((r.written, r.failed.len()), (vec!["long".to_string()], 1));
    let folder = out.join("av_features");
    let spec = FeatureSpec {
        folder: &folder,
        prefix: "",
        ext: ".npy",
        rgb_dim: 512,
        flow_dim: 0,
        audio_dim: 128,
        downsample_rate: 1,
    };
    assert_eq!(load_video(&spec, "long").unwrap(), f);
    let hint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dense_config.json")).unwrap()).unwrap();
    assert_eq!(hint["data"]["rgb_dim"], 512);

    let device = Device::flex();
    device.seed(4);
    let cfg = DenseModelConfig {
        input_dim_v: 512,
        input_dim_a: 128,
        embd_dim: 16,
        head_dim: 16,
        num_classes: 4,
        max_seq_len: 32,
        dependency_dim: 4,
        ..DenseModelConfig::default()
    };
    let model = DenseModel::new(&cfg, &device).unwrap();
    let names = vec![("dog barking".to_string(), 2)];
    let r = predict_video_dense(&model, &cfg, &names, &long, &frames, &audio, &device).unwrap();
    assert_eq!(r.seconds, 23);
    assert!(!r.events.is_empty() && r.events.len() <= 100);
    for (k, e) in r.events.iter().enumerate() {
        assert!(
            0.0 <= e.start && e.start <= e.end && e.end <= r.duration,
            "{e:?}"
        );
        assert_eq!(e.label == "dog barking", e.label_id == 2, "{e:?}");
        assert!(k == 0 || r.events[k - 1].score >= e.score);
    }
    let png = dir.path().join("lanes.png");
    lanes_figure(&r, &png, 0.0).unwrap();
    let mut ids: Vec<i64> = r.events.iter().map(|e| e.label_id).collect();
    ids.sort();
    ids.dedup();
    let spans: Vec<Vec<(f64, f64, f64)>> = ids
        .iter()
        .map(|id| {
            r.events
                .iter()
                .filter(|e| e.label_id == *id)
                .map(|e| (e.start, e.end, e.score))
                .collect()
        })
        .collect();
    let lanes: Vec<cace_net::plot::Lane> = ids
        .iter()
        .zip(&spans)
        .map(|(id, events)| cace_net::plot::Lane {
            name: "x",
            class: *id as usize,
            events,
        })
        .collect();
    assert_eq!(png_size(&png), cace_net::plot::lanes_size(&lanes));
}
