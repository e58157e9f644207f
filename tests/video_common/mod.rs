//! Helpers of the video tests: clips generated with the `ffmpeg` tool, and small deterministic
//! mock encoders (the real networks need weight files the tests do not have).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Result;
use cace_net::encoders::{AudioEncoder, FrameEncoder, RgbFrame};

/// The real AudioSet clip the test clips loop as their sound (32 kHz mono, 7 s).
pub fn source_wav() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/audio/R9_ZSCveAHg_7s.wav")
}

pub const WAV_RATE: usize = 32_000;

/// The source WAV's samples as f32 (`s16 / 32768`), read without FFmpeg.
pub fn wav_samples() -> Vec<f32> {
    let bytes = std::fs::read(source_wav()).unwrap();
    // RIFF: find the "data" chunk.
    let mut pos = 12;
    loop {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if id == b"data" {
            return bytes[pos + 8..pos + 8 + len]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
                .collect();
        }
        pos += 8 + len + (len & 1);
    }
}

/// Whether the `ffmpeg` tool is installed; prints why a test is skipped when not.
pub fn ffmpeg_or_skip(test: &str) -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // A missing tool fails the test (CI installs it) unless skipping is asked for explicitly,
    // so a broken install can never turn these tests into silent passes.
    if !ok {
        let msg = format!(
            "{test}: the `ffmpeg` tool is not installed (Debian: apt-get install ffmpeg); \
             the tests generate their clips with it"
        );
        if std::env::var_os("CACE_SKIP_VIDEO_TESTS").is_none() {
            panic!("{msg} (set CACE_SKIP_VIDEO_TESTS=1 to skip)");
        }
        eprintln!("SKIPPED {msg}");
    }
    ok
}

/// A fresh directory under the system temp dir (named after `tag`), removed on drop.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("cace-test-{tag}-"))
        .tempdir()
        .unwrap()
}

pub const WIDTH: usize = 64;
pub const HEIGHT: usize = 48;

/// Colour that encodes frame number `k` (< 1000): each channel is `30 + 20·digit`, so a decoded
/// value within ±9 of the original still gives the right digit.
pub fn frame_colour(k: usize) -> [u8; 3] {
    let d = |x: usize| (30 + 20 * x) as u8;
    [d(k % 10), d(k / 10 % 10), d(k / 100 % 10)]
}

/// The frame number a colour encodes.
pub fn decode_colour(c: [u8; 3]) -> usize {
    let digit = |v: u8| ((v as f32 - 30.0) / 20.0).round().clamp(0.0, 9.0) as usize;
    digit(c[0]) + 10 * digit(c[1]) + 100 * digit(c[2])
}

/// Frame `k`: its code colour everywhere but a white top-left quarter-size block (so a flip or
/// transposition would show).
pub fn frame_pixels(k: usize) -> Vec<u8> {
    let c = frame_colour(k);
    let mut data = Vec::with_capacity(WIDTH * HEIGHT * 3);
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            if x < WIDTH / 4 && y < HEIGHT / 4 {
                data.extend_from_slice(&[255, 255, 255]);
            } else {
                data.extend_from_slice(&c);
            }
        }
    }
    data
}

/// Pixel `(x, y)` of a frame.
pub fn pixel(f: &RgbFrame, x: usize, y: usize) -> [u8; 3] {
    let i = (y * f.width + x) * 3;
    [f.data[i], f.data[i + 1], f.data[i + 2]]
}

/// The frame number shown by a decoded frame (read at the centre).
pub fn frame_number(f: &RgbFrame) -> usize {
    decode_colour(pixel(f, f.width / 2, f.height / 2))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sound {
    /// No audio track.
    None,
    /// The WAV looped, mono.
    Mono,
    /// The WAV looped on the left channel, silence on the right.
    LeftOnly,
}

/// How to encode a clip.
#[derive(Debug, Clone, Copy)]
pub struct Clip {
    pub seconds: f64,
    pub fps: usize,
    pub sound: Sound,
    /// `mkv` (H.264 lossless + PCM), `mp4` (H.264 + AAC) or `webm` (VP9 + Opus).
    pub container: &'static str,
}

impl Clip {
    pub fn new(seconds: f64) -> Self {
        Self {
            seconds,
            fps: 25,
            sound: Sound::Mono,
            container: "mkv",
        }
    }
}

/// Writes `dir/name.<container>` with frames [`frame_pixels`]`(k)` at `fps` and the WAV looped
/// as sound; returns its path.
pub fn make_clip(dir: &Path, name: &str, clip: Clip) -> PathBuf {
    let out = dir.join(format!("{name}.{}", clip.container));
    let frames = (clip.seconds * clip.fps as f64).round() as usize;
    let size = format!("{WIDTH}x{HEIGHT}");
    let fps = clip.fps.to_string();
    let secs = format!("{}", clip.seconds);
    let wav = source_wav();
    let mut args: Vec<&str> = vec![
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        &size,
        "-r",
        &fps,
        "-i",
        "-",
    ];
    if clip.sound != Sound::None {
        args.extend(["-stream_loop", "-1", "-i", wav.to_str().unwrap()]);
        args.extend(["-map", "0:v", "-map", "1:a", "-t", &secs]);
    }
    match clip.container {
        "mkv" => args.extend(["-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p"]),
        "mp4" => args.extend(["-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p"]),
        "webm" => args.extend([
            "-c:v",
            "libvpx-vp9",
            "-lossless",
            "1",
            "-pix_fmt",
            "yuv420p",
        ]),
        other => panic!("container {other}"),
    }
    if clip.sound != Sound::None {
        match clip.container {
            "mkv" => args.extend(["-c:a", "pcm_s16le"]),
            "mp4" => args.extend(["-c:a", "aac", "-b:a", "192k"]),
            _ => args.extend(["-c:a", "libopus", "-b:a", "128k"]),
        }
        if clip.sound == Sound::LeftOnly {
            args.extend(["-af", "pan=stereo|c0=c0|c1=0*c0"]);
        }
    }
    args.push(out.to_str().unwrap());
    let mut child = Command::new("ffmpeg")
        .args(&args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run ffmpeg");
    {
        let mut stdin = child.stdin.take().unwrap();
        for k in 0..frames {
            stdin.write_all(&frame_pixels(k)).unwrap();
        }
    }
    assert!(child.wait().unwrap().success(), "ffmpeg failed for {name}");
    out
}

/// A file that is not media at all.
pub fn make_garbage(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let bytes: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&p, bytes).unwrap();
    p
}

// ------------------------------------------------------------------------------------------------
// Mock encoders

/// Visual mock: the mean colour of each cell of a 7×7 grid, scaled to [0, 1], as channel
/// `c % 3` of every channel `c` (so any channel count works), averaged over the frames.
pub struct MockFrames {
    pub channels: usize,
}

impl MockFrames {
    /// `[7, 7, 3]` cell means of one frame.
    pub fn cell_means(f: &RgbFrame) -> Vec<f32> {
        let mut out = vec![0.0f32; 7 * 7 * 3];
        for gy in 0..7 {
            for gx in 0..7 {
                let (y0, y1) = (gy * f.height / 7, (gy + 1) * f.height / 7);
                let (x0, x1) = (gx * f.width / 7, (gx + 1) * f.width / 7);
                let n = ((y1 - y0) * (x1 - x0)) as f32;
                for y in y0..y1 {
                    for x in x0..x1 {
                        let p = pixel(f, x, y);
                        for ch in 0..3 {
                            out[(gy * 7 + gx) * 3 + ch] += p[ch] as f32 / 255.0 / n;
                        }
                    }
                }
            }
        }
        out
    }
}

impl FrameEncoder for MockFrames {
    fn name(&self) -> &'static str {
        "mock-frames"
    }
    fn output_shape(&self) -> Vec<usize> {
        vec![7, 7, self.channels]
    }
    fn encode_second(&self, frames: &[RgbFrame]) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; 49 * self.channels];
        for f in frames {
            let m = Self::cell_means(f);
            for cell in 0..49 {
                for c in 0..self.channels {
                    out[cell * self.channels + c] += m[cell * 3 + c % 3] / frames.len() as f32;
                }
            }
        }
        Ok(out)
    }
}

/// Audio mock: per second, the RMS of `dim` consecutive equal blocks of samples.
pub struct MockAudio {
    pub rate: u32,
    pub dim: usize,
}

impl MockAudio {
    pub fn rms_blocks(second: &[f32], dim: usize) -> Vec<f32> {
        let block = second.len() / dim;
        (0..dim)
            .map(|j| {
                let b = &second[j * block..(j + 1) * block];
                (b.iter().map(|x| x * x).sum::<f32>() / block as f32).sqrt()
            })
            .collect()
    }
}

impl AudioEncoder for MockAudio {
    fn name(&self) -> &'static str {
        "mock-audio"
    }
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn encode(&self, samples: &[f32], seconds: usize) -> Result<Vec<f32>> {
        assert_eq!(samples.len(), seconds * self.rate as usize);
        Ok(samples
            .chunks_exact(self.rate as usize)
            .flat_map(|s| Self::rms_blocks(s, self.dim))
            .collect())
    }
}

/// The shapes of the real `vgg` pair (512-d maps, 128-d audio at 16 kHz).
pub fn vgg_like() -> (MockFrames, MockAudio) {
    (
        MockFrames { channels: 512 },
        MockAudio {
            rate: 16_000,
            dim: 128,
        },
    )
}
