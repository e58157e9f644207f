//! Decoding with the FFmpeg libraries (the `video` feature): probing, the video stream sampled
//! by time, and the audio stream resampled and downmixed.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, Result, anyhow, bail};
use ff::format::context::Input;
use ff::format::stream::Disposition;
use ff::media::Type;
use ff::{ChannelLayout, Rational, Rescale};
use ffmpeg_next as ff;

use super::clock::{FrameClock, Shown, TimeBase};
use super::{
    AudioStreamInfo, FRAMES_PER_SECOND, MediaInfo, RgbFrame, VideoStreamInfo, check_length,
    whole_seconds,
};

/// Consecutive failed packet reads (or undecodable frames) after which a file counts as
/// unreadable.
const MAX_READ_ERRORS: usize = 32;

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // `init` only registers (no-op on FFmpeg >= 4) and cannot fail in practice.
        let _ = ff::init();
        // Our errors carry the messages; FFmpeg's own log would interleave with progress.
        ff::log::set_level(ff::log::Level::Fatal);
    });
}

fn open_input(path: &Path) -> Result<Input> {
    init();
    match path.try_exists() {
        Ok(true) if path.is_dir() => {
            bail!("{}: is a directory, not a video file", path.display())
        }
        Ok(true) => {}
        Ok(false) => bail!("{}: no such file", path.display()),
        Err(e) => bail!("{}: cannot access: {e}", path.display()),
    }
    ff::format::input(path).map_err(|e| {
        anyhow!(
            "{}: not a readable video file (FFmpeg: {e}); is it truncated or not a media file?",
            path.display()
        )
    })
}

fn rational(r: Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0)
        .then(|| r.numerator() as f64 / r.denominator() as f64)
}

/// The stream index of the best stream of `kind` (cover-art pictures are not video).
fn best_stream(ictx: &Input, kind: Type) -> Option<usize> {
    let usable = |s: &ff::Stream| {
        s.parameters().medium() == kind && !s.disposition().contains(Disposition::ATTACHED_PIC)
    };
    match ictx.streams().best(kind) {
        Some(s) if usable(&s) => Some(s.index()),
        _ => ictx.streams().find(|s| usable(s)).map(|s| s.index()),
    }
}

/// Time 0 in `AV_TIME_BASE` units: the start of the video stream, else of the container
/// (0 when unknown). Not the container's start, the earliest of all streams: that is often
/// an audio codec's priming delay (Opus in WebM starts at -6.5 ms), which the decoder cuts.
fn origin(ictx: &Input) -> i64 {
    origin_in(ictx, ff::rescale::TIME_BASE)
}

/// [`origin`] in time base `tb` (exact for the video stream's own time base).
fn origin_in(ictx: &Input, tb: Rational) -> i64 {
    if let Some(v) = best_stream(ictx, Type::Video) {
        let s = ictx.stream(v).unwrap();
        if s.start_time() != ff::ffi::AV_NOPTS_VALUE {
            return s.start_time().rescale(s.time_base(), tb);
        }
    }
    let start = unsafe { (*ictx.as_ptr()).start_time };
    if start == ff::ffi::AV_NOPTS_VALUE {
        0
    } else {
        start.rescale(ff::rescale::TIME_BASE, tb)
    }
}

fn stream_seconds(ictx: &Input, index: usize) -> Option<f64> {
    let s = ictx.stream(index)?;
    (s.duration() > 0).then(|| {
        let tb = s.time_base();
        s.duration() as f64 * tb.numerator() as f64 / tb.denominator() as f64
    })
}

/// Duration from the container, else the streams, else the packets' timestamps.
fn duration(path: &Path, ictx: &Input, streams: &[usize]) -> Result<f64> {
    let d = ictx.duration();
    if d > 0 && d != ff::ffi::AV_NOPTS_VALUE {
        return Ok(d as f64 / ff::ffi::AV_TIME_BASE as f64);
    }
    let from_streams = streams
        .iter()
        .filter_map(|&i| stream_seconds(ictx, i))
        .fold(0.0f64, f64::max);
    if from_streams > 0.0 {
        return Ok(from_streams);
    }
    // Demux only (no decoding) to find the end of the last packet.
    let mut ictx = open_input(path)?;
    let start = origin(&ictx);
    let mut end = 0.0f64;
    let mut packet = ff::Packet::empty();
    loop {
        match packet.read(&mut ictx) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(_) => break,
        }
        if !streams.contains(&packet.stream()) {
            continue;
        }
        let tb = ictx.stream(packet.stream()).unwrap().time_base();
        if let Some(pts) = packet.pts() {
            let t = (pts + packet.duration().max(0)) as f64 * tb.numerator() as f64
                / tb.denominator() as f64
                - start as f64 / ff::ffi::AV_TIME_BASE as f64;
            end = end.max(t);
        }
    }
    if end > 0.0 {
        Ok(end)
    } else {
        bail!("{}: cannot determine the duration", path.display())
    }
}

pub fn probe(path: &Path) -> Result<MediaInfo> {
    let ictx = open_input(path)?;
    let vi = best_stream(&ictx, Type::Video);
    let ai = best_stream(&ictx, Type::Audio);
    if vi.is_none() && ai.is_none() {
        bail!(
            "{}: not a readable video file (FFmpeg found no audio or video stream)",
            path.display()
        );
    }
    let video = vi
        .map(|i| -> Result<VideoStreamInfo> {
            let s = ictx.stream(i).unwrap();
            let params = s.parameters();
            let codec = params.id().name().to_string();
            let dec = ff::codec::context::Context::from_parameters(params)?
                .decoder()
                .video()
                .with_context(|| {
                    format!(
                        "{}: cannot decode its video stream ({codec})",
                        path.display()
                    )
                })?;
            Ok(VideoStreamInfo {
                codec,
                width: dec.width(),
                height: dec.height(),
                fps: rational(s.avg_frame_rate()).or_else(|| rational(s.rate())),
            })
        })
        .transpose()?;
    let audio = ai
        .map(|i| -> Result<AudioStreamInfo> {
            let params = ictx.stream(i).unwrap().parameters();
            let codec = params.id().name().to_string();
            let dec = ff::codec::context::Context::from_parameters(params)?
                .decoder()
                .audio()
                .with_context(|| {
                    format!(
                        "{}: cannot decode its audio stream ({codec})",
                        path.display()
                    )
                })?;
            Ok(AudioStreamInfo {
                codec,
                sample_rate: dec.rate(),
                channels: dec.channels(),
            })
        })
        .transpose()?;
    let streams: Vec<usize> = vi.into_iter().chain(ai).collect();
    let duration = duration(path, &ictx, &streams)?;
    Ok(MediaInfo {
        path: path.to_path_buf(),
        container: ictx.format().name().to_string(),
        duration,
        seconds: whole_seconds(duration),
        video,
        audio,
    })
}

/// One stream of an opened file with its decoder, fed packet by packet.
struct Demuxed<D> {
    path: PathBuf,
    what: &'static str,
    ictx: Input,
    stream: usize,
    decoder: D,
    /// Stream time base.
    tb: Rational,
    /// Container start in the stream's time base.
    origin: i64,
    sent_eof: bool,
}

impl<D: std::ops::DerefMut<Target = ff::decoder::Opened>> Demuxed<D> {
    /// Reads packets until one of our stream is sent to the decoder, or sends EOF.
    fn feed(&mut self) -> Result<()> {
        let mut errors = 0;
        let mut packet = ff::Packet::empty();
        loop {
            match packet.read(&mut self.ictx) {
                Ok(()) => {
                    errors = 0;
                    if packet.stream() != self.stream {
                        continue;
                    }
                    match self.decoder.send_packet(&packet) {
                        // A damaged packet: the decoder conceals it, we go on.
                        Ok(()) | Err(ff::Error::InvalidData) => return Ok(()),
                        Err(e) => {
                            return Err(anyhow!(
                                "{}: decoding the {} stream: {e}",
                                self.path.display(),
                                self.what
                            ));
                        }
                    }
                }
                Err(ff::Error::Eof) => {
                    self.decoder.send_eof().ok();
                    self.sent_eof = true;
                    return Ok(());
                }
                Err(e) => {
                    errors += 1;
                    if errors >= MAX_READ_ERRORS {
                        bail!(
                            "{}: reading the {} stream failed repeatedly: {e}",
                            self.path.display(),
                            self.what
                        );
                    }
                }
            }
        }
    }

    /// The next decoded frame into `frame`; `false` at the end of the stream.
    fn receive(&mut self, frame: &mut ff::Frame) -> Result<bool> {
        let mut errors = 0;
        loop {
            match self.decoder.receive_frame(frame) {
                Ok(()) => return Ok(true),
                Err(ff::Error::Eof) => return Ok(false),
                Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {
                    if self.sent_eof {
                        return Ok(false);
                    }
                    self.feed()?;
                }
                // Undecodable data in the middle of a stream: skip it (within reason).
                Err(ff::Error::InvalidData) if errors < MAX_READ_ERRORS => errors += 1,
                Err(e) => {
                    bail!(
                        "{}: decoding the {} stream: {e}",
                        self.path.display(),
                        self.what
                    )
                }
            }
        }
    }
}

fn open_stream(
    path: &Path,
    kind: Type,
) -> Result<(Input, usize, ff::codec::Context, Rational, i64)> {
    let ictx = open_input(path)?;
    let what = if kind == Type::Video {
        "video"
    } else {
        "audio"
    };
    let Some(index) = best_stream(&ictx, kind) else {
        bail!("{}: has no {what} stream", path.display());
    };
    let stream = ictx.stream(index).unwrap();
    let tb = stream.time_base();
    let mut ctx = ff::codec::context::Context::from_parameters(stream.parameters())?;
    // As the ffmpeg tool does: lets decoders interpret packet timestamps (e.g. skip samples).
    unsafe { (*ctx.as_mut_ptr()).pkt_timebase = tb.into() };
    let origin = origin_in(&ictx, tb);
    Ok((ictx, index, ctx, tb, origin))
}

// --------------------------------------------------------------------------------------------
// Video

/// A decoded frame and, once a sample has shown it, its RGB conversion (converted once, however
/// many sample times show it).
struct Held {
    frame: ff::frame::Video,
    rgb: Option<RgbFrame>,
}

type Scaler = (ff::format::Pixel, u32, u32, ff::software::scaling::Context);

pub struct VideoFrames {
    src: Demuxed<ff::decoder::Video>,
    seconds: usize,
    /// Which frame each sample time shows.
    clock: FrameClock<Held>,
    scaler: Option<Scaler>,
}

impl VideoFrames {
    pub fn open(path: &Path) -> Result<Self> {
        let info = super::probe(path)?;
        if info.video.is_none() {
            bail!("{}: has no video stream", path.display());
        }
        check_length(&info)?;
        let (ictx, stream, ctx, tb, origin) = open_stream(path, Type::Video)?;
        let fps = info.video.as_ref().and_then(|v| v.fps).unwrap_or(25.0);
        let ticks_per_frame =
            ((tb.denominator() as f64 / (tb.numerator() as f64 * fps)).round() as i64).max(1);
        let decoder = ctx.decoder().video().with_context(|| {
            format!(
                "{}: cannot open a decoder for its video stream",
                path.display()
            )
        })?;
        let time_base = TimeBase {
            num: tb.numerator(),
            den: tb.denominator(),
        };
        Ok(Self {
            src: Demuxed {
                path: path.to_path_buf(),
                what: "video",
                ictx,
                stream,
                decoder,
                tb,
                origin,
                sent_eof: false,
            },
            seconds: info.seconds,
            clock: FrameClock::new(time_base, ticks_per_frame),
            scaler: None,
        })
    }

    pub fn seconds(&self) -> usize {
        self.seconds
    }

    pub fn frames_end_early(&self) -> Option<f64> {
        self.clock.ended_early_at()
    }

    pub fn next_second(&mut self) -> Result<Option<Vec<RgbFrame>>> {
        if self.clock.next_sample() >= (self.seconds * FRAMES_PER_SECOND) as u64 {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(FRAMES_PER_SECOND);
        for _ in 0..FRAMES_PER_SECOND {
            let src = &mut self.src;
            let shown = self.clock.next_frame(|| -> Result<_> {
                let mut frame = ff::frame::Video::empty();
                if !src.receive(&mut frame)? {
                    return Ok(None);
                }
                let ticks = frame.timestamp().map(|ts| ts - src.origin);
                Ok(Some((Held { frame, rgb: None }, ticks)))
            })?;
            let path = &self.src.path;
            let rgb = match shown {
                Some(Shown::Held(held)) => {
                    if held.rgb.is_none() {
                        held.rgb = Some(to_rgb(&mut self.scaler, path, &held.frame)?);
                    }
                    held.rgb.clone().unwrap()
                }
                Some(Shown::First(first)) => to_rgb(&mut self.scaler, path, &first.frame)?,
                None => bail!("{}: no video frame could be decoded", path.display()),
            };
            out.push(rgb);
        }
        Ok(Some(out))
    }
}

/// `frame` as RGB24 at its own size; `scaler` keeps the converter of the last frame format.
fn to_rgb(scaler: &mut Option<Scaler>, path: &Path, frame: &ff::frame::Video) -> Result<RgbFrame> {
    let (fmt, w, h) = (frame.format(), frame.width(), frame.height());
    if !matches!(scaler, Some((f, sw, sh, _)) if *f == fmt && *sw == w && *sh == h) {
        let ctx = ff::software::scaling::Context::get(
            fmt,
            w,
            h,
            ff::format::Pixel::RGB24,
            w,
            h,
            ff::software::scaling::Flags::BILINEAR,
        )
        .with_context(|| {
            format!(
                "{}: cannot convert {fmt:?} {w}x{h} frames to RGB",
                path.display()
            )
        })?;
        *scaler = Some((fmt, w, h, ctx));
    }
    let scaler = &mut scaler.as_mut().unwrap().3;
    let mut rgb = ff::frame::Video::empty();
    scaler
        .run(frame, &mut rgb)
        .with_context(|| format!("{}: converting a frame to RGB", path.display()))?;
    let (w, h) = (w as usize, h as usize);
    let stride = rgb.stride(0);
    let plane = rgb.data(0);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        data.extend_from_slice(&plane[y * stride..y * stride + w * 3]);
    }
    Ok(RgbFrame {
        width: w,
        height: h,
        data,
    })
}

// --------------------------------------------------------------------------------------------
// Audio

struct Resampler {
    key: (ff::format::Sample, u64, u16, u32),
    ctx: ff::software::resampling::Context,
    channels: usize,
}

pub struct AudioSamples {
    src: Demuxed<ff::decoder::Audio>,
    rate: u32,
    resampler: Option<Resampler>,
    /// Mono samples decoded but not yet handed out.
    buf: VecDeque<f32>,
    /// Samples still to drop (the stream started before the origin).
    drop: usize,
    started: bool,
    finished: bool,
}

impl AudioSamples {
    pub fn open(path: &Path, rate: u32) -> Result<Self> {
        if rate == 0 {
            bail!("audio sample rate must be positive");
        }
        let (ictx, stream, ctx, tb, origin) = open_stream(path, Type::Audio)?;
        let decoder = ctx.decoder().audio().with_context(|| {
            format!(
                "{}: cannot open a decoder for its audio stream",
                path.display()
            )
        })?;
        Ok(Self {
            src: Demuxed {
                path: path.to_path_buf(),
                what: "audio",
                ictx,
                stream,
                decoder,
                tb,
                origin,
                sent_eof: false,
            },
            rate,
            resampler: None,
            buf: VecDeque::new(),
            drop: 0,
            started: false,
            finished: false,
        })
    }

    pub fn read_seconds(&mut self, seconds: usize) -> Result<Vec<f32>> {
        let need = seconds * self.rate as usize;
        while self.buf.len() < need && !self.finished {
            self.pump()?;
        }
        let take = need.min(self.buf.len());
        let mut out: Vec<f32> = self.buf.drain(..take).collect();
        out.resize(need, 0.0);
        Ok(out)
    }

    /// Decodes one frame into `buf`, or flushes the resampler at the end.
    fn pump(&mut self) -> Result<()> {
        let mut frame = ff::frame::Audio::empty();
        if !self.src.receive(&mut frame)? {
            self.flush_resampler()?;
            self.finished = true;
            return Ok(());
        }
        if frame.samples() == 0 {
            return Ok(());
        }
        if !self.started {
            self.started = true;
            if let Some(ts) = frame.timestamp() {
                let ticks = (ts - self.src.origin) as f64;
                let tb = self.src.tb;
                let offset = (ticks * tb.numerator() as f64 / tb.denominator() as f64
                    * self.rate as f64)
                    .round() as i64;
                if offset > 0 {
                    self.buf.extend(std::iter::repeat_n(0.0, offset as usize));
                } else {
                    self.drop = (-offset) as usize;
                }
            }
        }
        self.convert(Some(&frame))
    }

    fn flush_resampler(&mut self) -> Result<()> {
        while self.resampler.is_some() {
            if self.run_resampler(None)? == 0 {
                break;
            }
        }
        Ok(())
    }

    fn convert(&mut self, frame: Option<&ff::frame::Audio>) -> Result<()> {
        if let Some(f) = frame {
            let channels = f.channels();
            let mut layout = f.channel_layout();
            if layout.is_empty() || layout.channels() as u16 != channels {
                layout = ChannelLayout::default(channels as i32);
            }
            let key = (f.format(), layout.bits(), channels, f.rate());
            if self.resampler.as_ref().is_none_or(|r| r.key != key) {
                // A format change mid-stream: drain the old resampler first.
                self.flush_resampler()?;
                let ctx = ff::software::resampling::Context::get(
                    f.format(),
                    layout,
                    f.rate(),
                    ff::format::Sample::F32(ff::format::sample::Type::Planar),
                    layout,
                    self.rate,
                )
                .with_context(|| {
                    format!(
                        "{}: cannot resample {} Hz {:?} audio to {} Hz",
                        self.src.path.display(),
                        f.rate(),
                        f.format(),
                        self.rate
                    )
                })?;
                self.resampler = Some(Resampler {
                    key,
                    ctx,
                    channels: channels as usize,
                });
            }
        }
        self.run_resampler(frame)?;
        Ok(())
    }

    /// Converts `frame` (or drains buffered samples with `None`), appends the channel mean
    /// to `buf`; returns the number of output samples.
    fn run_resampler(&mut self, frame: Option<&ff::frame::Audio>) -> Result<usize> {
        let r = self.resampler.as_mut().expect("resampler");
        let in_samples = frame.map_or(0, |f| f.samples()) as i32;
        let n = unsafe {
            let swr = r.ctx.as_mut_ptr();
            let cap = ff::ffi::swr_get_out_samples(swr, in_samples).max(0) as usize + 16;
            let mut planes: Vec<Vec<f32>> = vec![vec![0.0; cap]; r.channels];
            let mut ptrs: Vec<*mut u8> = planes
                .iter_mut()
                .map(|p| p.as_mut_ptr() as *mut u8)
                .collect();
            let input = match frame {
                Some(f) => (*f.as_ptr()).extended_data as *const *const u8,
                None => std::ptr::null(),
            };
            let n = ff::ffi::swr_convert(
                swr,
                ptrs.as_mut_ptr() as _,
                cap as i32,
                input as _,
                in_samples,
            );
            if n < 0 {
                bail!(
                    "{}: resampling audio failed: {}",
                    self.src.path.display(),
                    ff::Error::from(n)
                );
            }
            let n = n as usize;
            let scale = 1.0 / r.channels as f32;
            let skip = self.drop.min(n);
            self.drop -= skip;
            for i in skip..n {
                let s: f32 = planes.iter().map(|p| p[i]).sum();
                self.buf
                    .push_back(if r.channels == 1 { s } else { s * scale });
            }
            n
        };
        Ok(n)
    }
}
