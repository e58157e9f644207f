//! The two audio front ends, waveform → log-mel, computed in f64 and rounded to f32 at the end.
//!
//! * VGGish ([`VggishFrontEnd`]): torchvggish's `vggish_input.waveform_to_examples` with
//!   `mel_features.py` (Google's TF VGGish code): 25 ms periodic-Hann frames every 10 ms at
//!   16 kHz, 512-point **magnitude** spectrum, 64 HTK-mel bands 125–7500 Hz,
//!   `ln(mel + 0.01)`, then non-overlapping 96-frame examples `[n, 96, 64]`. There is no
//!   resampling here: the input must already be 16 kHz mono.
//! * PANNs Cnn14 ([`PannsFrontEnd`]): torchlibrosa `Spectrogram` + `LogmelFilterBank` as Cnn14
//!   builds them: centred (reflect-padded) 1024-point periodic-Hann STFT every 320 samples at
//!   32 kHz, **power** spectrum, librosa's Slaney mel filterbank (64 bins, 50–14000 Hz),
//!   `10·log10(max(x, 1e-10))` (ref 1.0, no top_db).
//!
//! Each step mirrors the reference line by line, including NumPy's `linspace` arithmetic and
//! librosa's float32 filterbank, so the filterbanks agree with the references bit for bit or
//! to the last f32 ulp.

use std::f64::consts::PI;

use anyhow::{Result, bail};

use super::fft::Fft;

/// A log-mel spectrogram, `[frames, bins]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMel {
    pub frames: usize,
    pub bins: usize,
    pub data: Vec<f32>,
}

/// `np.linspace(start, stop, num)` with NumPy's arithmetic: `i·step + start`, last value `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    y[num - 1] = stop;
    y
}

/// Periodic Hann window `0.5 − 0.5·cos(2πn/N)` (`mel_features.periodic_hann`, and scipy's
/// `hann(N, sym=False)` that librosa's `get_window('hann', N)` returns).
fn periodic_hann(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 0.5 - 0.5 * (2.0 * PI / n as f64 * i as f64).cos())
        .collect()
}

// ------------------------------------------------------------------------------------------------
// VGGish
// ------------------------------------------------------------------------------------------------

/// The VGGish front end's constants (`vggish_params.py`).
pub mod vggish {
    pub const SAMPLE_RATE: u32 = 16_000;
    /// 25 ms window, 10 ms hop at 16 kHz.
    pub const WINDOW: usize = 400;
    pub const HOP: usize = 160;
    /// `2^ceil(log2(400))`.
    pub const FFT: usize = 512;
    pub const MEL_BINS: usize = 64;
    pub const MEL_MIN_HZ: f64 = 125.0;
    pub const MEL_MAX_HZ: f64 = 7500.0;
    pub const LOG_OFFSET: f64 = 0.01;
    /// Frames per example (0.96 s) and hop between examples (also 0.96 s).
    pub const EXAMPLE_FRAMES: usize = 96;
}

/// `mel_features.hertz_to_mel`: HTK mel scale `1127·ln(1 + f/700)`.
fn htk_hertz_to_mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// `mel_features.spectrogram_to_mel_matrix`: `[num_spectrogram_bins, num_mel_bins]` row-major
/// triangles in the HTK mel domain; the DC bin's row is zero as in HTK.
pub fn htk_mel_matrix(
    num_mel_bins: usize,
    num_spectrogram_bins: usize,
    sample_rate: f64,
    lower_edge_hertz: f64,
    upper_edge_hertz: f64,
) -> Vec<f64> {
    let nyquist = sample_rate / 2.0;
    assert!(0.0 <= lower_edge_hertz && lower_edge_hertz < upper_edge_hertz);
    assert!(upper_edge_hertz <= nyquist);
    let bins_mel: Vec<f64> = linspace(0.0, nyquist, num_spectrogram_bins)
        .into_iter()
        .map(htk_hertz_to_mel)
        .collect();
    let edges = linspace(
        htk_hertz_to_mel(lower_edge_hertz),
        htk_hertz_to_mel(upper_edge_hertz),
        num_mel_bins + 2,
    );
    let mut m = vec![0.0; num_spectrogram_bins * num_mel_bins];
    for i in 0..num_mel_bins {
        let (lower, center, upper) = (edges[i], edges[i + 1], edges[i + 2]);
        for (k, &mel) in bins_mel.iter().enumerate().skip(1) {
            let lower_slope = (mel - lower) / (center - lower);
            let upper_slope = (upper - mel) / (upper - center);
            m[k * num_mel_bins + i] = 0f64.max(lower_slope.min(upper_slope));
        }
    }
    m
}

/// VGGish's waveform → log-mel examples.
pub struct VggishFrontEnd {
    fft: Fft,
    window: Vec<f64>,
    /// `[FFT/2 + 1, MEL_BINS]`.
    mel: Vec<f64>,
}

impl Default for VggishFrontEnd {
    fn default() -> Self {
        Self::new()
    }
}

impl VggishFrontEnd {
    pub fn new() -> Self {
        use vggish::*;
        Self {
            fft: Fft::new(FFT),
            window: periodic_hann(WINDOW),
            mel: htk_mel_matrix(
                MEL_BINS,
                FFT / 2 + 1,
                SAMPLE_RATE as f64,
                MEL_MIN_HZ,
                MEL_MAX_HZ,
            ),
        }
    }

    /// The HTK mel matrix, `[257, 64]` row-major.
    pub fn mel_matrix(&self) -> &[f64] {
        &self.mel
    }

    /// `mel_features.log_mel_spectrogram` on 16 kHz mono samples: `[frames, 64]` with
    /// `frames = 1 + ⌊(len − 400)/160⌋` (no padding; 0 when shorter than one window).
    pub fn log_mel(&self, samples: &[f32]) -> LogMel {
        use vggish::*;
        let frames = if samples.len() < WINDOW {
            0
        } else {
            1 + (samples.len() - WINDOW) / HOP
        };
        let bins = FFT / 2 + 1;
        let mut data = Vec::with_capacity(frames * MEL_BINS);
        let (mut frame, mut re, mut im) = (vec![0.0; WINDOW], Vec::new(), Vec::new());
        let mut magnitude = vec![0.0; bins];
        for f in 0..frames {
            let chunk = &samples[f * HOP..f * HOP + WINDOW];
            for ((d, &s), &w) in frame.iter_mut().zip(chunk).zip(&self.window) {
                *d = s as f64 * w;
            }
            self.fft.real_spectrum(&frame, &mut re, &mut im);
            for ((m, &r), &i) in magnitude.iter_mut().zip(&re).zip(&im) {
                *m = r.hypot(i); // np.abs of a complex value
            }
            for b in 0..MEL_BINS {
                let mel: f64 = (0..bins)
                    .map(|k| magnitude[k] * self.mel[k * MEL_BINS + b])
                    .sum();
                data.push((mel + LOG_OFFSET).ln() as f32);
            }
        }
        LogMel {
            frames,
            bins: MEL_BINS,
            data,
        }
    }

    /// `waveform_to_examples` for 16 kHz input: the log-mel frames cut into complete,
    /// non-overlapping 96-frame examples; returns `(n, [n, 96, 64] row-major)`. A trailing
    /// partial example is dropped, as `mel_features.frame` does.
    pub fn examples(&self, samples: &[f32]) -> (usize, Vec<f32>) {
        use vggish::*;
        let log_mel = self.log_mel(samples);
        let n = log_mel.frames / EXAMPLE_FRAMES;
        let mut data = log_mel.data;
        data.truncate(n * EXAMPLE_FRAMES * MEL_BINS);
        (n, data)
    }
}

// ------------------------------------------------------------------------------------------------
// PANNs (Cnn14)
// ------------------------------------------------------------------------------------------------

/// The Cnn14 front end's settings (PANNs' inference defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct PannsConfig {
    pub sample_rate: u32,
    /// FFT size = window length.
    pub n_fft: usize,
    pub hop: usize,
    pub mel_bins: usize,
    pub fmin: f64,
    pub fmax: f64,
}

impl Default for PannsConfig {
    fn default() -> Self {
        Self {
            sample_rate: 32_000,
            n_fft: 1024,
            hop: 320,
            mel_bins: 64,
            fmin: 50.0,
            fmax: 14_000.0,
        }
    }
}

/// librosa's Slaney mel scale (`hz_to_mel(htk=False)`): linear below 1 kHz, log above.
fn slaney_hz_to_mel(f: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= 1000.0 {
        min_log_mel + (f / 1000.0).ln() / logstep
    } else {
        f / f_sp
    }
}

/// librosa's `mel_to_hz(htk=False)`.
fn slaney_mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_mel = 1000.0 / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        1000.0 * (logstep * (m - min_log_mel)).exp()
    } else {
        f_sp * m
    }
}

/// `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax).T` with the defaults `htk=False`,
/// `norm='slaney'`, `dtype=float32`: `[n_fft/2 + 1, n_mels]` row-major, as torchlibrosa stores
/// it in `logmel_extractor.melW`. librosa writes the triangles into a float32 array and scales
/// them in place, so each weight is `f32(f32(triangle) · enorm)`; done the same way here.
pub fn slaney_mel_filterbank(
    sample_rate: f64,
    n_fft: usize,
    n_mels: usize,
    fmin: f64,
    fmax: f64,
) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    // np.fft.rfftfreq(n_fft, d=1/sr): k · (1 / (n_fft · d)).
    let val = 1.0 / (n_fft as f64 * (1.0 / sample_rate));
    let fft_freqs: Vec<f64> = (0..bins).map(|k| k as f64 * val).collect();
    let mel_f: Vec<f64> = linspace(slaney_hz_to_mel(fmin), slaney_hz_to_mel(fmax), n_mels + 2)
        .into_iter()
        .map(slaney_mel_to_hz)
        .collect();
    let mut w = vec![0f32; bins * n_mels];
    for i in 0..n_mels {
        let (fdiff_lo, fdiff_hi) = (mel_f[i + 1] - mel_f[i], mel_f[i + 2] - mel_f[i + 1]);
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = -(mel_f[i] - f) / fdiff_lo;
            let upper = (mel_f[i + 2] - f) / fdiff_hi;
            let tri = 0f64.max(lower.min(upper)) as f32;
            w[k * n_mels + i] = (tri as f64 * enorm) as f32;
        }
    }
    w
}

/// Cnn14's waveform → log-mel, one clip at a time (CACE feeds each second as its own clip).
pub struct PannsFrontEnd {
    config: PannsConfig,
    fft: Fft,
    window: Vec<f64>,
    /// `[n_fft/2 + 1, mel_bins]`, librosa's float32 values.
    mel_w: Vec<f32>,
}

impl Default for PannsFrontEnd {
    fn default() -> Self {
        Self::new(PannsConfig::default())
    }
}

impl PannsFrontEnd {
    pub fn new(config: PannsConfig) -> Self {
        let mel_w = slaney_mel_filterbank(
            config.sample_rate as f64,
            config.n_fft,
            config.mel_bins,
            config.fmin,
            config.fmax,
        );
        Self {
            fft: Fft::new(config.n_fft),
            window: periodic_hann(config.n_fft),
            mel_w,
            config,
        }
    }

    pub fn config(&self) -> &PannsConfig {
        &self.config
    }

    /// The mel filterbank, `[n_fft/2 + 1, mel_bins]` (torchlibrosa's `melW`).
    pub fn mel_filterbank(&self) -> &[f32] {
        &self.mel_w
    }

    /// The windowed DFT kernels torchlibrosa's STFT stores as `conv_real.weight` and
    /// `conv_imag.weight` (`[n_fft/2 + 1, 1, n_fft]`): `w[n]·cos(2πkn/N)` and `−w[n]·sin(2πkn/N)`.
    /// Only used to check a checkpoint's copies; the STFT itself runs as an FFT.
    pub fn stft_kernels(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.config.n_fft;
        let bins = n / 2 + 1;
        let (mut re, mut im) = (Vec::with_capacity(bins * n), Vec::with_capacity(bins * n));
        for k in 0..bins {
            for (j, &w) in self.window.iter().enumerate() {
                // Reduce k·j mod N first so the angle stays exact.
                let a = 2.0 * PI * ((k * j) % n) as f64 / n as f64;
                re.push((w * a.cos()) as f32);
                im.push((-w * a.sin()) as f32);
            }
        }
        (re, im)
    }

    /// Log-mel of one clip: `[1 + len/hop, mel_bins]` (101 × 64 for one second at 32 kHz).
    /// The clip is reflect-padded by `n_fft/2` on both sides (`center=True`), which needs more
    /// than `n_fft/2` samples.
    pub fn log_mel(&self, samples: &[f32]) -> Result<LogMel> {
        let PannsConfig {
            n_fft,
            hop,
            mel_bins,
            ..
        } = self.config;
        let pad = n_fft / 2;
        if samples.len() <= pad {
            bail!(
                "cnn14 front end: a clip of {} samples is too short for reflect padding by {pad}",
                samples.len()
            );
        }
        // torch/NumPy 'reflect': mirror without repeating the edge sample.
        let n = samples.len();
        let padded: Vec<f64> = (0..n + 2 * pad)
            .map(|i| {
                let j = i as isize - pad as isize;
                let j = if j < 0 {
                    -j
                } else if j >= n as isize {
                    2 * (n as isize - 1) - j
                } else {
                    j
                };
                samples[j as usize] as f64
            })
            .collect();
        let frames = 1 + (padded.len() - n_fft) / hop;
        let bins = n_fft / 2 + 1;
        let mut data = Vec::with_capacity(frames * mel_bins);
        let (mut frame, mut re, mut im) = (vec![0.0; n_fft], Vec::new(), Vec::new());
        let mut power = vec![0.0; bins];
        let mut mel = vec![0.0f64; mel_bins];
        for f in 0..frames {
            let chunk = &padded[f * hop..f * hop + n_fft];
            for ((d, &s), &w) in frame.iter_mut().zip(chunk).zip(&self.window) {
                *d = s * w;
            }
            self.fft.real_spectrum(&frame, &mut re, &mut im);
            for ((p, &r), &i) in power.iter_mut().zip(&re).zip(&im) {
                *p = r * r + i * i;
            }
            mel.fill(0.0);
            for (k, &p) in power.iter().enumerate() {
                let row = &self.mel_w[k * mel_bins..(k + 1) * mel_bins];
                for (m, &w) in mel.iter_mut().zip(row) {
                    *m += p * w as f64;
                }
            }
            // power_to_db with ref 1.0 and amin 1e-10: the `− 10·log10(max(amin, ref))` is 0.
            data.extend(mel.iter().map(|&m| (10.0 * m.max(1e-10).log10()) as f32));
        }
        Ok(LogMel {
            frames,
            bins: mel_bins,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NumPy gives `linspace(0, 8000, 257)[1] == 31.25` and ends exactly on `stop`.
    #[test]
    fn linspace_like_numpy() {
        let y = linspace(0.0, 8000.0, 257);
        assert_eq!(y[1], 31.25);
        assert_eq!(y[256], 8000.0);
        assert_eq!(y.len(), 257);
    }

    /// Reflect padding and frame count on a ramp: frame 0 is centred on sample 0.
    #[test]
    fn panns_frame_count() {
        let fe = PannsFrontEnd::default();
        let lm = fe.log_mel(&vec![0.0; 32_000]).unwrap();
        assert_eq!((lm.frames, lm.bins), (101, 64));
        // Silence sits at the amin floor: 10·log10(1e-10) = −100 dB.
        assert!(lm.data.iter().all(|&v| v == -100.0));
        assert!(fe.log_mel(&[0.0; 512]).is_err());
    }

    /// 10 s at 16 kHz → 998 frames → 10 examples, as the issue states.
    #[test]
    fn vggish_ten_seconds_ten_examples() {
        let fe = VggishFrontEnd::new();
        let x: Vec<f32> = (0..160_000)
            .map(|i| ((i % 100) as f32 - 50.0) / 100.0)
            .collect();
        assert_eq!(fe.log_mel(&x).frames, 998);
        assert_eq!(fe.examples(&x).0, 10);
        assert_eq!(fe.log_mel(&x[..399]).frames, 0);
    }
}
