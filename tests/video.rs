//! Decoding (`encoders::decode`) and the clip pipeline (`extract::encode_clip`) on clips the
//! `ffmpeg` tool generates: frames whose colour encodes their frame number, and a real AudioSet
//! recording looped as the sound. Skipped (with a message) only when `ffmpeg` is not installed.
#![cfg(feature = "video")]

mod video_common;

use cace_net::encoders::decode::{
    AudioSamples, FRAMES_PER_SECOND, VideoFrames, open_clip, probe, read_audio,
};
use cace_net::extract::{WindowFeatures, encode_clip};
use video_common::*;

/// The frame shown at `s + i/16` s of a clip at `fps` frames per second starting at 0: the
/// latest frame `k` with `k / fps <= s + i/16`, i.e. `floor((16 s + i) · fps / 16)`.
fn expected_frame(s: usize, i: usize, fps: usize) -> usize {
    (16 * s + i) * fps / 16
}

fn check_frames(path: &std::path::Path, fps: usize, seconds: usize) {
    let mut video = VideoFrames::open(path).unwrap();
    assert_eq!(video.seconds(), seconds);
    let last_frame = (seconds * fps) - 1;
    for s in 0..seconds {
        let frames = video.next_second().unwrap().unwrap();
        assert_eq!(frames.len(), FRAMES_PER_SECOND);
        for (i, f) in frames.iter().enumerate() {
            assert_eq!((f.width, f.height), (WIDTH, HEIGHT));
            assert_eq!(f.data.len(), WIDTH * HEIGHT * 3);
            let want = expected_frame(s, i, fps).min(last_frame);
            assert_eq!(
                frame_number(f),
                want,
                "{}: second {s} sample {i}: centre {:?}",
                path.display(),
                pixel(f, WIDTH / 2, HEIGHT / 2)
            );
            // Not flipped or transposed: white block at the top left only. Lossy codecs
            // blur it a little, hence > 235 and not 255.
            assert!(
                pixel(f, 3, 3).iter().all(|&v| v > 235),
                "{:?}",
                pixel(f, 3, 3)
            );
            assert_eq!(
                frame_number(f),
                decode_colour(pixel(f, WIDTH - 3, HEIGHT - 3))
            );
        }
    }
    assert!(video.next_second().unwrap().is_none());
}

#[test]
fn frames_are_sampled_sixteen_per_second_by_time() {
    if !ffmpeg_or_skip("frames_are_sampled_sixteen_per_second_by_time") {
        return;
    }
    let dir = temp_dir("frames");
    // H.264 (with B-frames) in Matroska at 25 fps, in MP4 at 30 fps, VP9 in WebM at 12 fps
    // (fewer than 16 frames a second: frames repeat).
    for (container, fps) in [("mkv", 25), ("mp4", 30), ("webm", 12)] {
        let clip = make_clip(
            dir.path(),
            &format!("c{fps}"),
            Clip {
                fps,
                container,
                ..Clip::new(10.0)
            },
        );
        let info = open_clip(&clip).unwrap();
        assert_eq!(info.seconds, 10, "{info:?}");
        assert!((info.duration - 10.0).abs() < 0.1, "{info:?}");
        let v = info.video.as_ref().unwrap();
        assert_eq!((v.width, v.height), (WIDTH as u32, HEIGHT as u32));
        assert!((v.fps.unwrap() - fps as f64).abs() < 1e-6, "{v:?}");
        check_frames(&clip, fps, 10);
    }
    // Second 0 at 25 fps, spelled out.
    let ks: Vec<usize> = (0..16).map(|i| expected_frame(0, i, 25)).collect();
    assert_eq!(
        ks,
        [0, 1, 3, 4, 6, 7, 9, 10, 12, 14, 15, 17, 18, 20, 21, 23]
    );
}

#[test]
fn audio_is_the_source_recording_at_the_requested_rate() {
    if !ffmpeg_or_skip("audio_is_the_source_recording_at_the_requested_rate") {
        return;
    }
    let dir = temp_dir("audio");
    let wav = wav_samples();
    assert_eq!(wav.len(), 7 * WAV_RATE);
    let looped: Vec<f32> = (0..10 * WAV_RATE).map(|n| wav[n % wav.len()]).collect();

    // Lossless PCM at the source rate: the very samples (s16 → f32 is exact).
    let mkv = make_clip(dir.path(), "pcm", Clip::new(10.0));
    let info = open_clip(&mkv).unwrap();
    let a = info.audio.as_ref().unwrap();
    assert_eq!((a.sample_rate, a.channels), (32_000, 1));
    let got = read_audio(&mkv, 32_000, 10).unwrap();
    assert_eq!(got.len(), 320_000);
    let max = got
        .iter()
        .zip(&looped)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert_eq!(max, 0.0, "PCM audio must come back exactly");

    // Stereo with the recording on the left only: the mono mix is the channel mean, wav / 2.
    let stereo = make_clip(
        dir.path(),
        "stereo",
        Clip {
            sound: Sound::LeftOnly,
            ..Clip::new(10.0)
        },
    );
    assert_eq!(open_clip(&stereo).unwrap().audio.unwrap().channels, 2);
    let got = read_audio(&stereo, 32_000, 10).unwrap();
    let max = got
        .iter()
        .zip(&looped)
        .map(|(x, y)| (x - y / 2.0).abs())
        .fold(0.0, f32::max);
    assert!(max <= 1.0 / 65536.0, "stereo → mono mean: max error {max}");

    // Resampled to 16 kHz (VGGish's rate): compare with the `ffmpeg` tool's own resampling
    // of the same clip (same swresample defaults).
    let ours = read_audio(&mkv, 16_000, 10).unwrap();
    assert_eq!(ours.len(), 160_000);
    let reference = ffmpeg_f32(&mkv, 16_000);
    let n = reference.len().min(ours.len());
    assert!(n >= 159_000, "reference has {} samples", reference.len());
    let max = ours[..n]
        .iter()
        .zip(&reference[..n])
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    eprintln!("16 kHz vs the ffmpeg tool: max abs error {max:e}");
    // Same library, same default resampler: identical up to float rounding (measured 0).
    assert!(max < 1e-6, "16 kHz vs ffmpeg tool: max error {max}");

    // Lossy AAC in MP4, resampled: the same sound, in time (no shift), up to coding noise.
    let mp4 = make_clip(
        dir.path(),
        "aac",
        Clip {
            container: "mp4",
            ..Clip::new(10.0)
        },
    );
    let aac = read_audio(&mp4, 16_000, 10).unwrap();
    let (snr, lag) = snr_and_lag(&aac, &reference[..n]);
    eprintln!("AAC vs source: SNR {snr:.1} dB, lag {lag} samples");
    assert_eq!(lag, 0, "AAC audio is shifted by {lag} samples");
    // 192 kb/s AAC codes this recording at ~40 dB SNR; 20 dB still rules out a wrong or
    // shifted track (a one-sample shift of this recording alone gives far less).
    assert!(snr > 20.0, "AAC SNR {snr:.1} dB");

    // Seconds handed out one call at a time continue each other.
    let mut reader = AudioSamples::open(&mkv, 32_000).unwrap();
    let mut joined = reader.read_seconds(3).unwrap();
    joined.extend(reader.read_seconds(7).unwrap());
    assert_eq!(joined, looped);
    // After the end: zeros.
    assert!(reader.read_seconds(2).unwrap().iter().all(|&x| x == 0.0));
}

/// The `ffmpeg` tool's decoding of `clip` as mono f32 at `rate`.
fn ffmpeg_f32(clip: &std::path::Path, rate: u32) -> Vec<f32> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(clip)
        .args([
            "-vn",
            "-ac",
            "1",
            "-ar",
            &rate.to_string(),
            "-f",
            "f32le",
            "-",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// SNR (dB) of `x` against `reference` and the lag in `-40..=40` maximising their correlation.
fn snr_and_lag(x: &[f32], reference: &[f32]) -> (f64, i64) {
    let n = x.len().min(reference.len()) - 100;
    let corr = |lag: i64| -> f64 {
        (50..n)
            .map(|i| x[i] as f64 * reference[(i as i64 + lag) as usize] as f64)
            .sum()
    };
    let lag = (-40..=40)
        .max_by(|&a, &b| corr(a).total_cmp(&corr(b)))
        .unwrap();
    let (mut s, mut e) = (0.0, 0.0);
    for i in 0..n {
        s += (reference[i] as f64).powi(2);
        e += (x[i] as f64 - reference[i] as f64).powi(2);
    }
    (10.0 * (s / e).log10(), lag)
}

fn encode(path: &std::path::Path) -> (cace_net::extract::ClipSummary, Vec<WindowFeatures>) {
    let (frames, audio) = vgg_like();
    let mut windows = Vec::new();
    let summary = encode_clip(path, &frames, &audio, &mut |w| {
        windows.push(w);
        Ok(())
    })
    .unwrap();
    (summary, windows)
}

#[test]
fn short_clips_are_padded_and_long_ones_cut_into_windows() {
    if !ffmpeg_or_skip("short_clips_are_padded_and_long_ones_cut_into_windows") {
        return;
    }
    let dir = temp_dir("pad");
    let (mock_frames, _) = vgg_like();

    // 3 s: one window, 7 padded seconds.
    let short = make_clip(dir.path(), "short", Clip::new(3.0));
    let (summary, windows) = encode(&short);
    assert_eq!((summary.plan.seconds, summary.plan.windows), (3, 1));
    assert_eq!(summary.plan.padded_seconds, 7);
    assert_eq!(windows.len(), 1);
    let w = &windows[0];
    assert_eq!((w.start, w.content_seconds), (0, 3));
    let per = 49 * 512;
    assert_eq!(w.visual.len(), 10 * per);
    assert_eq!(w.audio.len(), 10 * 128);
    // Padded seconds show the last sampled frame: t = 2 + 15/16 s → frame 73 at 25 fps.
    use cace_net::encoders::FrameEncoder;
    let last = cace_net::encoders::RgbFrame {
        width: WIDTH,
        height: HEIGHT,
        data: frame_pixels(73),
    };
    let pad = mock_frames.encode_second(&[last]).unwrap();
    for s in 3..10 {
        let got = &w.visual[s * per..(s + 1) * per];
        // Decoded (lossless H.264 in 4:2:0, then YUV → RGB) vs the original pixels: within
        // a few levels (/255) per cell.
        let max = got
            .iter()
            .zip(&pad)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!("padded second {s}: max cell error {max:e}");
        assert!(max < 4.0 / 255.0, "padded second {s}: {max}");
        assert_eq!(
            got,
            &w.visual[3 * per..4 * per],
            "every padded second is the same"
        );
    }
    // Silence after the end; sound before it.
    assert!(w.audio[3 * 128..].iter().all(|&x| x == 0.0));
    assert!(w.audio[..3 * 128].iter().all(|&x| x > 0.0));

    // 23 s: windows 0–10, 10–20, 20–30 (3 s of content, 7 padded).
    let long = make_clip(dir.path(), "long", Clip::new(23.0));
    let (summary, windows) = encode(&long);
    assert_eq!(summary.plan.windows, 3);
    assert_eq!(summary.plan.padded_seconds, 7);
    let starts: Vec<(usize, usize)> = windows
        .iter()
        .map(|w| (w.start, w.content_seconds))
        .collect();
    assert_eq!(starts, [(0, 10), (10, 10), (20, 3)]);
    // Absolute time: the first second of window 1 is second 10, whose first frame is 250.
    let reference = |k: usize| {
        mock_frames
            .encode_second(&[cace_net::encoders::RgbFrame {
                width: WIDTH,
                height: HEIGHT,
                data: frame_pixels(k),
            }])
            .unwrap()
    };
    let frames_of = |s: usize| -> Vec<f32> {
        let per_frame: Vec<Vec<f32>> = (0..16)
            .map(|i| reference(expected_frame(s, i, 25)))
            .collect();
        (0..per)
            .map(|j| per_frame.iter().map(|f| f[j]).sum::<f32>() / 16.0)
            .collect()
    };
    for (w, s) in [(0, 0), (0, 9), (1, 0), (2, 2)] {
        let got = &windows[w].visual[s * per..(s + 1) * per];
        let want = frames_of(10 * w + s);
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!("window {w} second {s}: max cell error {max:e}");
        assert!(max < 4.0 / 255.0, "window {w} second {s}: {max}");
    }
    // The audio continues across windows: second 10 of the looped recording is window 1's
    // second 0, recomputed from the source at 16 kHz by the ffmpeg tool.
    let at16 = ffmpeg_f32(&long, 16_000);
    let want = cace_net_mock_rms(&at16[160_000..176_000]);
    let got = &windows[1].audio[..128];
    let max = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    eprintln!("audio of second 10: max error {max:e}");
    assert!(max < 1e-4, "audio of second 10: {max}");
}

fn cace_net_mock_rms(second: &[f32]) -> Vec<f32> {
    MockAudio::rms_blocks(second, 128)
}

#[test]
fn bad_inputs_are_named_and_explained() {
    if !ffmpeg_or_skip("bad_inputs_are_named_and_explained") {
        return;
    }
    let dir = temp_dir("bad");
    let err = |p: &std::path::Path| format!("{:#}", open_clip(p).unwrap_err());

    let silent = make_clip(
        dir.path(),
        "silent",
        Clip {
            sound: Sound::None,
            ..Clip::new(4.0)
        },
    );
    let e = err(&silent);
    assert!(
        e.contains("silent.mkv") && e.contains("has no audio track"),
        "{e}"
    );
    // The picture alone still decodes.
    assert!(probe(&silent).unwrap().audio.is_none());
    assert_eq!(VideoFrames::open(&silent).unwrap().seconds(), 4);

    let garbage = make_garbage(dir.path(), "garbage.mp4");
    let e = err(&garbage);
    assert!(
        e.contains("garbage.mp4") && e.contains("not a readable video file"),
        "{e}"
    );

    // An MP4 cut in half (its index is at the end): unreadable.
    let whole = make_clip(
        dir.path(),
        "whole",
        Clip {
            container: "mp4",
            ..Clip::new(4.0)
        },
    );
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&cut);
    assert!(
        e.contains("cut.mp4") && e.contains("not a readable video file"),
        "{e}"
    );

    // Sound without picture: the test recording itself.
    let e = err(&source_wav());
    assert!(
        e.contains("R9_ZSCveAHg_7s.wav") && e.contains("has no video stream"),
        "{e}"
    );

    let e = err(&dir.path().join("nope.mp4"));
    assert!(e.contains("nope.mp4: no such file"), "{e}");

    let tiny = make_clip(dir.path(), "tiny", Clip::new(0.5));
    let e = err(&tiny);
    assert!(
        e.contains("tiny.mkv") && e.contains("at least one second"),
        "{e}"
    );

    // encode_clip reports the same errors.
    let (frames, audio) = vgg_like();
    let e = format!(
        "{:#}",
        encode_clip(&silent, &frames, &audio, &mut |_| Ok(())).unwrap_err()
    );
    assert!(e.contains("has no audio track"), "{e}");
}

/// A file whose data ends before the duration its index declares (an MP4 with its index at the
/// front, cut in half) still decodes; the summary says where the frames stopped.
#[test]
fn truncated_data_is_flagged() {
    if !ffmpeg_or_skip("truncated_data_is_flagged") {
        return;
    }
    let dir = temp_dir("truncated");
    let whole = make_clip(
        dir.path(),
        "whole",
        Clip {
            container: "mp4",
            ..Clip::new(10.0)
        },
    );
    let front = dir.path().join("front.mp4");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(&whole)
        .args(["-c", "copy", "-movflags", "+faststart"])
        .arg(&front)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg remux");
    let (summary, _) = encode(&front);
    assert_eq!(
        summary.frames_end_early, None,
        "an intact file is not flagged"
    );

    let bytes = std::fs::read(&front).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (summary, windows) = encode(&cut);
    assert_eq!(summary.plan.seconds, 10, "the index still declares 10 s");
    let end = summary.frames_end_early.expect("flagged");
    assert!((1.0..9.0).contains(&end), "frames end at {end} s");
    assert_eq!(windows.len(), 1);
}
