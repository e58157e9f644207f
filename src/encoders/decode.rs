//! Decoding users' video files with the FFmpeg libraries (through `ffmpeg-next`): stream info,
//! RGB frames sampled 16 per second, and mono audio resampled to an encoder's rate.
//!
//! Needs the cargo feature `video` (on by default). Built without it, every function here fails
//! with [`NOT_BUILT`], which says how to enable it.
//!
//! ## Time and seconds
//!
//! Time 0 is the start of the video stream (its first frame); audio is placed on the same clock
//! by its timestamps, so picture and sound stay in sync when the sound starts later. A clip has `seconds =
//! floor(duration + 0.1)` whole one-second segments ([`SECOND_TOLERANCE`]: encoders often leave
//! a clip a frame or two short of its nominal length, and a 9.96 s clip should count as 10 s); a
//! trailing partial second beyond that is not used. `duration` is the container's, i.e. that of
//! the longest stream.
//!
//! ## Frames: 16 per second, by time
//!
//! For second `s` and `i` in `0..16` the frame is **the one shown at time `s + i/16`**: the
//! latest decoded frame whose presentation time is `<= s + i/16` (exact rational comparison on the
//! stream's timestamps); before the first frame, the first frame. After the last frame, the last
//! frame is repeated (a video stream shorter than the clip). At 25 fps, second 0 takes frames
//! 0, 1, 3, 4, 6, 7, 9, 10, 12, 14, 15, 17, 18, 20, 21, 23; below 16 fps frames repeat.
//!
//! The original AVE/CACE-Net extraction (REFERENCE §6.1) picks frame indices instead:
//! `int(l·fi + (i/16)·fi)` with `fi = int(frame_count / 10)`, which spreads the 160 samples over
//! the whole file whatever its length. For a 10 s constant-rate clip both pick nearly the same
//! frames; by time, every clip length and variable frame rate get a well-defined answer and
//! second `s` really is `[s, s+1)`.
//!
//! Frames are converted to RGB24 at their native size with swscale's defaults (bilinear chroma
//! upsampling, BT.601 coefficients whatever matrix the stream declares — as OpenCV's FFmpeg
//! backend, which the original extraction used, does). Rotation metadata is not applied. Only
//! sampled frames are converted, and [`VideoFrames`] holds one second's frames at a time, so
//! long videos stream (the video and the audio reader each demux the file once).
//!
//! ## Audio
//!
//! The best audio stream is decoded, resampled by swresample (its default windowed-sinc
//! resampler) to the requested rate as float, and downmixed to mono as **the mean of the
//! channels** (librosa's `to_mono`, which the PANNs and VGGish pipelines use). Samples are placed
//! by the first frame's timestamp: silence before an audio stream that starts late, leading
//! samples dropped when it starts early. [`AudioSamples::read_seconds`] hands out whole seconds
//! and pads with zeros after the end of the stream.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::RgbFrame;

/// Frames sampled per second of video (the AVE protocol).
pub const FRAMES_PER_SECOND: usize = 16;

/// A clip of `d` seconds has `floor(d + SECOND_TOLERANCE)` whole seconds.
pub const SECOND_TOLERANCE: f64 = 0.1;

/// The error of every decoding function when the crate was built without the `video` feature.
pub const NOT_BUILT: &str = "this build of cace cannot decode video: it was built without the \
    optional `video` cargo feature. Install the FFmpeg development packages once (Debian/Ubuntu: \
    `apt-get install -y pkg-config libavcodec-dev libavformat-dev libavutil-dev libswscale-dev \
    libswresample-dev clang libclang-dev`), then rebuild with the feature: \
    `cargo install --path . --features video`, or run `cargo run --release --features video -- ...` \
    (README: \"Your own videos\")";

/// Whether this build can decode video (the `video` feature).
pub const fn available() -> bool {
    cfg!(feature = "video")
}

/// What a media file holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MediaInfo {
    pub path: PathBuf,
    /// Container (demuxer) name, e.g. `"mov,mp4,m4a,3gp,3g2,mj2"`.
    pub container: String,
    /// Seconds, the container's duration (longest stream).
    pub duration: f64,
    /// Whole one-second segments: `floor(duration + SECOND_TOLERANCE)`.
    pub seconds: usize,
    pub video: Option<VideoStreamInfo>,
    pub audio: Option<AudioStreamInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoStreamInfo {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Average frame rate when the container states one.
    pub fps: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioStreamInfo {
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u16,
}

/// Whole seconds of a clip of `duration` seconds.
pub fn whole_seconds(duration: f64) -> usize {
    if duration.is_finite() && duration > 0.0 {
        (duration + SECOND_TOLERANCE).floor() as usize
    } else {
        0
    }
}

/// Streams and duration of `path`, without requiring any stream. Errors: missing file, a file
/// FFmpeg cannot read (not media, truncated, corrupt).
pub fn probe(path: &Path) -> Result<MediaInfo> {
    imp::probe(path)
}

/// [`probe`], then checks that `path` can be a CACE-Net input: a video stream, an audio stream
/// and at least one second. Every error names the file.
pub fn open_clip(path: &Path) -> Result<MediaInfo> {
    let info = probe(path)?;
    check_clip(&info)?;
    Ok(info)
}

/// The checks of [`open_clip`] on what [`probe`] found.
fn check_clip(info: &MediaInfo) -> Result<()> {
    let p = info.path.display();
    let streams = || {
        let mut s = Vec::new();
        if let Some(v) = &info.video {
            s.push(format!("video {}", v.codec));
        }
        if let Some(a) = &info.audio {
            s.push(format!("audio {}", a.codec));
        }
        if s.is_empty() {
            "none".to_string()
        } else {
            s.join(", ")
        }
    };
    if info.video.is_none() {
        anyhow::bail!("{p}: has no video stream (streams: {})", streams());
    }
    if info.audio.is_none() {
        anyhow::bail!(
            "{p}: has no audio track; CACE-Net needs both picture and sound. To run it anyway \
             on silence, add a silent track: ffmpeg -i IN -f lavfi -i anullsrc=r=48000 -shortest \
             -c:v copy OUT"
        );
    }
    check_length(info)
}

/// A clip needs at least one whole second ([`whole_seconds`]).
fn check_length(info: &MediaInfo) -> Result<()> {
    if info.seconds == 0 {
        anyhow::bail!(
            "{}: is {:.2} s long; at least one second is needed",
            info.path.display(),
            info.duration
        );
    }
    Ok(())
}

/// The sampled frames of a clip, one second at a time (see the module doc for which frames).
pub struct VideoFrames {
    inner: imp::VideoFrames,
}

impl VideoFrames {
    /// Opens the best video stream of `path` for [`MediaInfo::seconds`] seconds.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            inner: imp::VideoFrames::open(path)?,
        })
    }

    /// Seconds this reader yields.
    pub fn seconds(&self) -> usize {
        self.inner.seconds()
    }

    /// The [`FRAMES_PER_SECOND`] frames of the next second; `None` after the last second.
    pub fn next_second(&mut self) -> Result<Option<Vec<RgbFrame>>> {
        self.inner.next_second()
    }

    /// When the decoded frames stopped more than a second before a sample time the clip's
    /// duration promised (a truncated or damaged file), the time in seconds of the last frame
    /// decoded; those later samples repeat that frame. `None` for a complete stream (so far).
    pub fn frames_end_early(&self) -> Option<f64> {
        self.inner.frames_end_early()
    }
}

/// Mono audio of a clip at a chosen rate, handed out in whole seconds.
pub struct AudioSamples {
    inner: imp::AudioSamples,
}

impl AudioSamples {
    /// Opens the best audio stream of `path`, resampling to `rate` Hz.
    pub fn open(path: &Path, rate: u32) -> Result<Self> {
        Ok(Self {
            inner: imp::AudioSamples::open(path, rate)?,
        })
    }

    /// The next `seconds · rate` samples, zero-padded after the end of the stream.
    pub fn read_seconds(&mut self, seconds: usize) -> Result<Vec<f32>> {
        self.inner.read_seconds(seconds)
    }
}

/// Decodes the whole audio track of `path` as mono at `rate` (convenience for short clips and
/// tests; `seconds` whole seconds, zero-padded).
pub fn read_audio(path: &Path, rate: u32, seconds: usize) -> Result<Vec<f32>> {
    AudioSamples::open(path, rate)?.read_seconds(seconds)
}

// ------------------------------------------------------------------------------------------------
// Without FFmpeg

#[cfg(not(feature = "video"))]
mod imp {
    use std::path::Path;

    use anyhow::{Result, bail};

    use super::{MediaInfo, NOT_BUILT, RgbFrame};

    pub fn probe(_: &Path) -> Result<MediaInfo> {
        bail!(NOT_BUILT)
    }

    /// Uninhabited: cannot be opened in this build.
    pub enum VideoFrames {}
    pub enum AudioSamples {}

    impl VideoFrames {
        pub fn open(_: &Path) -> Result<Self> {
            bail!(NOT_BUILT)
        }
        pub fn seconds(&self) -> usize {
            match *self {}
        }
        pub fn next_second(&mut self) -> Result<Option<Vec<RgbFrame>>> {
            match *self {}
        }
        pub fn frames_end_early(&self) -> Option<f64> {
            match *self {}
        }
    }

    impl AudioSamples {
        pub fn open(_: &Path, _: u32) -> Result<Self> {
            bail!(NOT_BUILT)
        }
        pub fn read_seconds(&mut self, _: usize) -> Result<Vec<f32>> {
            match *self {}
        }
    }
}

// ------------------------------------------------------------------------------------------------
// With FFmpeg

// The sampling clock is plain arithmetic: built (and unit-tested) without FFmpeg too.
#[cfg_attr(not(feature = "video"), allow(dead_code))]
mod clock;
#[cfg(feature = "video")]
mod ffmpeg;
#[cfg(feature = "video")]
use ffmpeg as imp;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_allow_a_tenth_of_a_second_short() {
        assert_eq!(whole_seconds(10.0), 10);
        assert_eq!(whole_seconds(9.95), 10);
        assert_eq!(whole_seconds(9.9), 10);
        assert_eq!(whole_seconds(9.89), 9);
        assert_eq!(whole_seconds(23.0), 23);
        assert_eq!(whole_seconds(23.7), 23);
        assert_eq!(whole_seconds(0.95), 1);
        assert_eq!(whole_seconds(0.5), 0);
        for bad in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            assert_eq!(whole_seconds(bad), 0, "{bad}");
        }
    }

    fn clip(duration: f64, video: bool, audio: bool) -> MediaInfo {
        MediaInfo {
            path: PathBuf::from("/v/clip.mp4"),
            container: "mov,mp4,m4a,3gp,3g2,mj2".into(),
            duration,
            seconds: whole_seconds(duration),
            video: video.then(|| VideoStreamInfo {
                codec: "h264".into(),
                width: 320,
                height: 240,
                fps: Some(25.0),
            }),
            audio: audio.then(|| AudioStreamInfo {
                codec: "aac".into(),
                sample_rate: 48000,
                channels: 2,
            }),
        }
    }

    #[test]
    fn clips_need_both_streams_and_a_second() {
        check_clip(&clip(9.95, true, true)).unwrap();
        check_clip(&clip(1.0, true, true)).unwrap();
        let err = |info: MediaInfo| check_clip(&info).unwrap_err().to_string();
        assert_eq!(
            err(clip(0.5, true, true)),
            "/v/clip.mp4: is 0.50 s long; at least one second is needed"
        );
        assert_eq!(
            err(clip(10.0, false, true)),
            "/v/clip.mp4: has no video stream (streams: audio aac)"
        );
        assert!(
            err(clip(10.0, true, false)).starts_with("/v/clip.mp4: has no audio track"),
            "{}",
            err(clip(10.0, true, false))
        );
        assert_eq!(
            err(clip(10.0, false, false)),
            "/v/clip.mp4: has no video stream (streams: none)"
        );
    }
}
