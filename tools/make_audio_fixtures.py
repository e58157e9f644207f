#!/usr/bin/env python3
"""Reference data for the audio encoders (tests/encoders_audio.rs), from the reference code.

Regenerate (from the repository root; needs the AudioSet clips of /work/shared/data/audio/):

    python3 -m venv --system-site-packages /tmp/audvenv   # torch 2.15 CPU comes from the system
    /tmp/audvenv/bin/pip install librosa==0.11.0 resampy==0.4.3 soundfile torchlibrosa==0.1.0 safetensors
    /tmp/audvenv/bin/pip install --no-deps torchvggish==0.2 panns-inference==0.1.1
    LD_LIBRARY_PATH=/tmp/cudastub2 /tmp/audvenv/bin/python tools/make_audio_fixtures.py
    LD_LIBRARY_PATH=/tmp/cudastub2 /tmp/audvenv/bin/python tools/make_audio_fixtures.py \
        --full /tmp/cace-audio-full      # full-size random weights, ~700 MB, outside the repo

Default mode writes tests/fixtures/encoders/audio/:
  signals.safetensors  `<clip>.16k` / `<clip>.32k` f32: short excerpts of the real clips, mono,
                       resampled as each encoder's reference pipeline does it (torchvggish:
                       int16/32768, channel mean, resampy; PANNs: librosa.load(sr=32000)). Both
                       sides read exactly these samples.
  vggish_ref.safetensors
      mel_matrix           f64 [257, 64]  mel_features.spectrogram_to_mel_matrix (VGGish params)
      <clip>.examples      f64 [n, 96, 64] vggish_input.waveform_to_examples(signal, 16000)
      <clip>.embedding     f64 [n, 128]   slim torchvggish VGG (no postprocess), run in float64
      <clip>.embedding_f32 f32 [n, 128]   the same net in float32 (as deployed), for information
  vggish_slim.pth      the slim VGG's state dict (torchvggish keys)
  cnn14_ref.safetensors
      stft_rows            i64 [R]        which rows of the STFT kernels are stored
      stft_real, stft_imag f32 [R, 1024]  those rows of torchlibrosa's conv_real/conv_imag weights
      <clip>.log_mel       f64 [s, 101, 64] per 1-s window: librosa.stft (complex128, centred,
                           reflect) power → torchlibrosa's melW → power_to_db (ref 1, amin 1e-10)
      <clip>.log_mel_torch32 f32 [s, 101, 64] torchlibrosa Spectrogram+LogmelFilterBank in
                           float32, i.e. what PANNs' Cnn14 computes
      <clip>.embedding     f64 [s, 32]    slim panns Cnn14 (eval) run in float64 on <clip>.log_mel
      <clip>.embedding_torch32 f32 [s, 32] the same net, float32, end to end from the waveform
  cnn14_melw_16k.pth, cnn14_melw_fmax16k.pth  {"model": {"logmel_extractor.melW": ...}} of other
                       PANNs front ends (wrong shape / wrong values), for the load-time check
  cnn14_slim.pth       {"model": state dict} with Cnn14's keys; the two 2 MB STFT kernels are left
                       out to keep the fixture small (the Rust loader checks them when present;
                       stored rows above and the full-size file cover them)

The float64 references are the reference code's own arithmetic without float32 rounding: the port
computes its front ends in f64, so its log-mels agree with them to ~1e-6, while float32 torchlibrosa
differs from exact arithmetic by up to ~4e-3 dB in bins below -80 dB (quiet high bands).

--full DIR writes DIR/vggish_full.pth, DIR/cnn14_full.pth (full widths, random weights, every key
of the real checkpoints) and DIR/full_ref.safetensors (10 s of one clip at 16 and 32 kHz and the
float64/float32 embeddings), read by the ignored test `full_size_random_weights`
(CACE_AUDIO_FULL_DIR=DIR).
"""

import argparse
import copy
import importlib.util
import os
import sys
import types

import numpy as np
import torch
import torch.nn as nn

import librosa
import resampy
import soundfile as sf
from safetensors.numpy import save_file
from torchlibrosa.stft import LogmelFilterBank, Spectrogram
from torchvggish import mel_features, vggish_input, vggish_params
from torchvggish.torchvggish import VGG


def import_panns_models():
    """panns_inference.models (Cnn14, ConvBlock) without the package __init__, which imports
    matplotlib and downloads a label file on import."""
    spec = importlib.util.find_spec("panns_inference")
    pkg = types.ModuleType("panns_inference")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["panns_inference"] = pkg
    plt = types.ModuleType("matplotlib.pyplot")  # models.py imports it but never uses it
    mpl = types.ModuleType("matplotlib")
    mpl.pyplot = plt
    sys.modules.setdefault("matplotlib", mpl)
    sys.modules.setdefault("matplotlib.pyplot", plt)
    import panns_inference.models as models

    return models


panns = import_panns_models()

AUDIO = "/work/shared/data/audio"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "encoders", "audio")

# (name, file, first second, seconds): the train horn's first second starts in digital silence
# (log-mel floors), the church bell's second 2 has the quietest bins (-93 dB).
CLIPS = [
    ("train_horn", "---1_cCGK4M.wav", 0, 2),
    ("church_bell", "WW8Scmk5YsM.wav", 1, 2),
    ("demo", "R9_ZSCveAHg_7s.wav", 3, 1),
]

VGGISH_SLIM = dict(convs=[4, 8, 8, 8, 16, 16], hidden=32, dim=128)
CNN14_SLIM = [4, 8, 8, 16, 16, 32]
CNN14_FULL = [64, 128, 256, 512, 1024, 2048]
STFT_ROWS = [0, 1, 64, 128, 255, 256, 384, 511, 512]


def load_16k(path):
    """torchvggish's wavfile_to_examples + waveform_to_examples up to the resampling."""
    wav, sr = sf.read(path, dtype="int16")
    x = wav / 32768.0
    if x.ndim > 1:
        x = np.mean(x, axis=1)
    if sr != vggish_params.SAMPLE_RATE:
        x = resampy.resample(x, sr, vggish_params.SAMPLE_RATE)
    return x.astype(np.float32)


def load_32k(path):
    """PANNs/CACE inference: librosa.load(sr=32000, mono=True)."""
    x, _ = librosa.load(path, sr=32000, mono=True)
    return x.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# VGGish


def vggish_net(convs, hidden, dim):
    """torchvggish's VGG with make_layers' structure at the given widths (same state-dict keys)."""
    layers, c_in = [], 1
    plan = [convs[0], "M", convs[1], "M", convs[2], convs[3], "M", convs[4], convs[5], "M"]
    for v in plan:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c_in = v
    model = VGG(nn.Sequential(*layers), postprocess=False)
    model.embeddings = nn.Sequential(
        nn.Linear(c_in * 4 * 6, hidden), nn.ReLU(True),
        nn.Linear(hidden, hidden), nn.ReLU(True),
        nn.Linear(hidden, dim), nn.ReLU(True),
    )
    # He initialisation keeps the activations' scale through the ReLU stack (PyTorch's default
    # shrinks it ~6x per layer, leaving outputs that hardly depend on the input), so the
    # embeddings test the whole network; small biases, non-zero.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.bias.uniform_(-0.05, 0.05)
    return model.eval()


def vggish_embed(model, examples):
    """examples f64 [n, 96, 64] → (f64 embeddings, f32 embeddings)."""
    x = torch.from_numpy(examples)[:, None]
    with torch.no_grad():
        e64 = copy.deepcopy(model).double()(x).numpy()
        e32 = model(x.float()).numpy()
    return e64, e32


# ----------------------------------------------------------------------------------------------
# Cnn14


def panns_front_end():
    """The two front-end modules exactly as Cnn14.__init__ builds them."""
    spec = Spectrogram(n_fft=1024, hop_length=320, win_length=1024, window="hann", center=True,
                       pad_mode="reflect", freeze_parameters=True)
    logmel = LogmelFilterBank(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, ref=1.0,
                              amin=1e-10, top_db=None, freeze_parameters=True)
    return spec, logmel


def exact_log_mel(windows, melW):
    """[s, 32000] → f64 [s, 101, 64]: librosa's complex128 STFT (what torchlibrosa's conv STFT
    implements), power, torchlibrosa's float32 melW, torchlibrosa's power_to_db formula."""
    out = []
    for w in windows.astype(np.float64):
        S = np.abs(librosa.stft(w, n_fft=1024, hop_length=320, win_length=1024, window="hann",
                                center=True, pad_mode="reflect", dtype=np.complex128)) ** 2
        mel = S.T @ melW.astype(np.float64)
        out.append(10.0 * np.log10(np.maximum(mel, 1e-10)) - 10.0 * np.log10(max(1e-10, 1.0)))
    return np.stack(out)


def cnn14_net(channels, calibration, rng):
    """panns Cnn14 with the given widths, random weights and non-trivial BatchNorm statistics:
    running stats measured on `calibration` ([b, 32000] waveforms) then perturbed, affine
    parameters randomised, fc1 bias non-zero."""
    model = panns.Cnn14(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50,
                        fmax=14000, classes_num=527)
    if channels != CNN14_FULL:
        c_in = 1
        for i, c in enumerate(channels):
            setattr(model, f"conv_block{i + 1}", panns.ConvBlock(in_channels=c_in, out_channels=c))
            c_in = c
        model.fc1 = nn.Linear(c_in, c_in, bias=True)
        model.fc_audioset = nn.Linear(c_in, 527, bias=True)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(calibration))
    model.eval()
    g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    with torch.no_grad():
        for bn in bns:
            c = bn.num_features
            std = bn.running_var.sqrt()
            bn.running_mean += 0.2 * std * torch.randn(c, generator=g)
            bn.running_var *= 0.6 + 0.8 * torch.rand(c, generator=g)
            bn.weight.copy_(0.7 + 0.6 * torch.rand(c, generator=g))
            bn.bias.copy_(0.2 * torch.randn(c, generator=g))
        model.fc1.bias.copy_(0.05 * torch.randn(model.fc1.bias.shape[0], generator=g))
    return model


def cnn14_embed_log_mel(model, log_mel):
    """f64 embeddings of log-mels [s, 101, 64]: Cnn14.forward with its front end bypassed."""
    net = copy.deepcopy(model).double()
    net.spectrogram_extractor = nn.Identity()
    net.logmel_extractor = nn.Identity()
    with torch.no_grad():
        return net(torch.from_numpy(log_mel)[:, None])["embedding"].numpy()


def cnn14_embed_waveform(model, windows):
    """float32 Cnn14 end to end on [s, 32000] waveforms."""
    with torch.no_grad():
        return model(torch.from_numpy(windows))["embedding"].numpy()


def state_dict_np(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def spread(e):
    """How much the embeddings vary between inputs: mean std over rows / mean |value|."""
    return e.std(axis=0).mean() / np.abs(e).mean()


def report(name, a, b):
    err = np.abs(a.astype(np.float64) - b.astype(np.float64)).max()
    print(f"  {name}: max |Δ| {err:.3e} (scale {np.abs(b).max():.3e})")


# ----------------------------------------------------------------------------------------------


def small(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    signals, vref, cref = {}, {}, {}

    for name, file, first, secs in CLIPS:
        path = os.path.join(AUDIO, file)
        signals[f"{name}.16k"] = load_16k(path)[first * 16000:(first + secs) * 16000].copy()
        signals[f"{name}.32k"] = load_32k(path)[first * 32000:(first + secs) * 32000].copy()

    # VGGish: front end in NumPy float64 on the stored float32 samples.
    vref["mel_matrix"] = mel_features.spectrogram_to_mel_matrix(
        num_mel_bins=64, num_spectrogram_bins=257, audio_sample_rate=16000,
        lower_edge_hertz=125, upper_edge_hertz=7500)
    vgg = vggish_net(**VGGISH_SLIM)
    for name, _, _, _ in CLIPS:
        x = signals[f"{name}.16k"].astype(np.float64)
        examples = vggish_input.waveform_to_examples(x, 16000, return_tensor=False)
        vref[f"{name}.examples"] = np.ascontiguousarray(examples)
        e64, e32 = vggish_embed(vgg, examples)
        vref[f"{name}.embedding"] = e64
        vref[f"{name}.embedding_f32"] = e32
        print(f"vggish {name}: examples {examples.shape}, embedding nonzero "
              f"{(e64 > 0).mean():.2f}, spread {spread(e64):.2f}")
        report("f32 torch vs f64", e32, e64)
    torch.save(vgg.state_dict(), os.path.join(out, "vggish_slim.pth"))

    # Cnn14.
    spec, logmel = panns_front_end()
    melW = logmel.melW.detach().numpy()
    real = spec.stft.conv_real.weight.detach().numpy()[:, 0]
    imag = spec.stft.conv_imag.weight.detach().numpy()[:, 0]
    cref["stft_rows"] = np.array(STFT_ROWS, dtype=np.int64)
    cref["stft_real"] = np.ascontiguousarray(real[STFT_ROWS])
    cref["stft_imag"] = np.ascontiguousarray(imag[STFT_ROWS])
    calibration = np.concatenate([signals[f"{n}.32k"].reshape(-1, 32000) for n, _, _, _ in CLIPS])
    cnn = cnn14_net(CNN14_SLIM, calibration, rng)
    for name, _, _, secs in CLIPS:
        windows = signals[f"{name}.32k"].reshape(secs, 32000)
        exact = exact_log_mel(windows, melW)
        with torch.no_grad():
            t32 = logmel(spec(torch.from_numpy(windows))).numpy()[:, 0]
        cref[f"{name}.log_mel"] = exact
        cref[f"{name}.log_mel_torch32"] = t32
        e64 = cnn14_embed_log_mel(cnn, exact)
        e32 = cnn14_embed_waveform(cnn, windows)
        cref[f"{name}.embedding"] = e64
        cref[f"{name}.embedding_torch32"] = e32
        print(f"cnn14 {name}: log-mel {exact.shape} range [{exact.min():.1f}, {exact.max():.1f}] dB, "
              f"embedding nonzero {(e64 > 0).mean():.2f}, spread {spread(e64):.2f}")
        report("torchlibrosa f32 vs exact log-mel", t32, exact)
        report("f32 torch end-to-end vs f64 embedding", e32, e64)
    sd = state_dict_np(cnn)
    del sd["spectrogram_extractor.stft.conv_real.weight"]
    del sd["spectrogram_extractor.stft.conv_imag.weight"]
    torch.save({"model": sd}, os.path.join(out, "cnn14_slim.pth"))
    # Front ends of other PANNs setups: the 16 kHz Cnn14 (n_fft 512 → melW [257, 64]) and one with
    # fmax 16000 (same shape, other values). Loading either must fail on `logmel_extractor.melW`.
    for file, kw in [("cnn14_melw_16k.pth", dict(sr=16000, n_fft=512, fmax=8000)),
                     ("cnn14_melw_fmax16k.pth", dict(sr=32000, n_fft=1024, fmax=16000))]:
        other = LogmelFilterBank(n_mels=64, fmin=50, ref=1.0, amin=1e-10, top_db=None, **kw)
        torch.save({"model": {"logmel_extractor.melW": other.melW.detach().clone()}},
                   os.path.join(out, file))

    save_file(signals, os.path.join(out, "signals.safetensors"))
    save_file(vref, os.path.join(out, "vggish_ref.safetensors"))
    save_file(cref, os.path.join(out, "cnn14_ref.safetensors"))
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


def full(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    path = os.path.join(AUDIO, "---1_cCGK4M.wav")
    s16 = load_16k(path)[:160000].copy()
    s32 = load_32k(path)[:320000].copy()
    ref = {"signal.16k": s16, "signal.32k": s32}

    vgg = vggish_net(convs=[64, 128, 256, 256, 512, 512], hidden=4096, dim=128)
    examples = vggish_input.waveform_to_examples(s16.astype(np.float64), 16000, return_tensor=False)
    e64, e32 = vggish_embed(vgg, examples)
    ref["vggish.embedding"], ref["vggish.embedding_f32"] = e64, e32
    print(f"vggish full: examples {examples.shape}, nonzero {(e64 > 0).mean():.2f}, "
          f"spread {spread(e64):.2f}")
    report("f32 torch vs f64", e32, e64)
    torch.save(vgg.state_dict(), os.path.join(out, "vggish_full.pth"))
    del vgg

    windows = s32.reshape(10, 32000)
    cnn = cnn14_net(CNN14_FULL, windows, rng)
    spec, logmel = panns_front_end()
    exact = exact_log_mel(windows, logmel.melW.detach().numpy())
    e64 = cnn14_embed_log_mel(cnn, exact)
    e32 = cnn14_embed_waveform(cnn, windows)
    ref["cnn14.embedding"], ref["cnn14.embedding_torch32"] = e64, e32
    print(f"cnn14 full: nonzero {(e64 > 0).mean():.2f}, spread {spread(e64):.2f}")
    report("f32 torch end-to-end vs f64", e32, e64)
    torch.save({"model": state_dict_np(cnn)}, os.path.join(out, "cnn14_full.pth"))
    save_file(ref, os.path.join(out, "full_ref.safetensors"))
    print(f"wrote {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", metavar="DIR", help="write full-size random-weight models to DIR")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.full:
        full(args.full)
    else:
        small(os.path.normpath(OUT))
