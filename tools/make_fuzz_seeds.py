#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (fuzz/fuzz_targets/) into fuzz/corpus/<target>/.

Dev tool only (the crate never runs Python); needs numpy and h5py, not torch. Seeds come from
real files where the repository has them: the AVE files in ../shared/data/ave/, the h5py and
torch fixtures in tests/fixtures/, the golden checkpoint and vectors in ../shared/golden/ (cut
down: the targets' -max_len is 64 KiB to 128 KiB). What no real file covers (a TAR-format
checkpoint, HDF5 layouts h5py can write, the JSON files of a run directory) is written here.

    python3 tools/make_fuzz_seeds.py        # then: cargo +nightly fuzz cmin -a <target>

Input formats (see each target's doc comment): `h5` takes one role byte (0 visual, 1 audio,
2 labels, 3 order) before the HDF5 file; `native` takes JSON, a 0 byte, then safetensors.
"""
import io
import json
import os
import pickle
import struct
import sys
import tarfile
import types
import zipfile
from collections import OrderedDict

import h5py
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHARED = os.environ.get("CACE_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(ROOT, "fuzz", "corpus")
TMP = os.path.join(ROOT, "fuzz", "target", "seed-tmp")

# h5 roles (fuzz_targets/h5.rs)
VISUAL, AUDIO, LABELS, ORDER = 0, 1, 2, 3
N = 6  # rows of the base directory tests/fixtures/h5py/contiguous_f32


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ---- annotations --------------------------------------------------------------------------------

def annotation_seeds():
    lines = read(os.path.join(SHARED, "data", "ave", "Annotations.txt")).splitlines(keepends=True)
    write("annotations", "ave-first-40", b"".join(lines[:40]))
    # every 25th line: all 28 categories (they come in blocks)
    write("annotations", "ave-every-25th", b"".join(lines[::25]))
    write("annotations", "ave-crlf-blank-tail", b"".join(l.rstrip(b"\r\n") + b"\r\n" for l in lines[:10]) + b"\n\n")
    write("annotations", "ave-no-final-newline", b"".join(lines[100:110]).rstrip(b"\r\n"))


# ---- pth ----------------------------------------------------------------------------------------

def fake_torch():
    """A stand-in `torch` module so `pickle` writes GLOBAL opcodes naming torch classes."""
    torch = types.ModuleType("torch")
    for name in ["FloatStorage", "DoubleStorage", "LongStorage", "FloatTensor", "DoubleTensor", "LongTensor"]:
        cls = type(name, (), {})
        cls.__module__ = "torch"
        setattr(torch, name, cls)
    sys.modules["torch"] = torch
    return torch


def tar_checkpoint(tensors):
    """A TAR-format checkpoint (torch before 0.1.10), the layout torch/serialization.py's
    `_legacy_load` reads: sys_info, storages, tensors and pickle entries. `tensors` maps a
    state-dict key to a float32 numpy array; each gets its own storage."""
    torch = fake_torch()
    sys_info = pickle.dumps({"protocol_version": 1001, "little_endian": True,
                             "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    storages, tensor_table = io.BytesIO(), io.BytesIO()
    storages.write(pickle.dumps(len(tensors), protocol=2))
    tensor_table.write(pickle.dumps(len(tensors), protocol=2))
    for i, (_, a) in enumerate(tensors.items()):
        a = np.ascontiguousarray(a, dtype="<f4")
        storages.write(pickle.dumps((i, "cpu", torch.FloatStorage), protocol=2))
        storages.write(struct.pack("<q", a.size) + a.tobytes())
        tensor_table.write(pickle.dumps((i, i, torch.FloatTensor), protocol=2))
        strides = [s // 4 for s in a.strides]
        tensor_table.write(struct.pack("<i", a.ndim) + b"\0" * 4)
        tensor_table.write(struct.pack(f"<{a.ndim}q", *a.shape) + struct.pack(f"<{a.ndim}q", *strides))
        tensor_table.write(struct.pack("<q", 0))
    storages.write(pickle.dumps([], protocol=2))  # no storage views

    class Ref:
        def __init__(self, i):
            self.i = i

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return str(obj.i) if isinstance(obj, Ref) else None

    body = io.BytesIO()
    Pickler(body, protocol=2).dump(OrderedDict((k, Ref(i)) for i, k in enumerate(tensors)))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [("sys_info", sys_info), ("storages", storages.getvalue()),
                           ("tensors", tensor_table.getvalue()), ("pickle", body.getvalue())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    del sys.modules["torch"]
    return out.getvalue()


def golden_pickle_zip():
    """The official checkpoint's zip layout and real data.pkl (242 keys, DataParallel prefix,
    wrapper dict), with every storage cut to 8 bytes: the file is refused when its tensors are
    read, after the whole pickle has been parsed and checked."""
    src = zipfile.ZipFile(os.path.join(SHARED, "golden", "cace_init.pth.tar"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            data = src.read(info.filename)
            if "/data/" in info.filename:
                data = data[:8]
            z.writestr(info.filename, data)
    return out.getvalue()


def pth_seeds():
    for name in sorted(os.listdir(FIXTURES)):
        if name.endswith(".pth"):
            write("pth", name, read(os.path.join(FIXTURES, name)))
    write("pth", "cnn14_melw_16k.pth", read(os.path.join(FIXTURES, "encoders", "audio", "cnn14_melw_16k.pth")))
    rng = np.random.default_rng(0)
    write("pth", "tar-format.pth", tar_checkpoint(OrderedDict([
        ("v_fc.weight", rng.standard_normal((4, 3)).astype("f4")),
        ("v_fc.bias", rng.standard_normal(4).astype("f4")),
    ])))
    write("pth", "golden-pickle-cut-storages.pth", golden_pickle_zip())


# ---- h5 -----------------------------------------------------------------------------------------

def h5_bytes(key, array, **kw):
    """One dataset `key` in a new HDF5 file written by h5py; `kw` go to create_dataset (and
    `libver` to the file)."""
    os.makedirs(TMP, exist_ok=True)
    path = os.path.join(TMP, "seed.h5")
    libver = kw.pop("libver", None)
    compact = kw.pop("compact", False)
    with h5py.File(path, "w", libver=libver) as f:
        if compact:  # the data inside the object header; only the low-level API writes it
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_layout(h5py.h5d.COMPACT)
            tid = h5py.h5t.py_create(array.dtype)
            space = h5py.h5s.create_simple(array.shape)
            h5py.h5d.create(f.id, key.encode(), tid, space, dcpl=dcpl).write(
                h5py.h5s.ALL, h5py.h5s.ALL, array)
        else:
            f.create_dataset(key, data=array, **kw)
    return read(path)


def h5_seeds():
    def put(role, name, data):
        write("h5", name, bytes([role]) + data)

    roles = {"visual_feature": VISUAL, "audio_feature": AUDIO, "labels": LABELS,
             "train_order": ORDER, "val_order": ORDER, "test_order": ORDER}
    h5py_dir = os.path.join(FIXTURES, "h5py")
    for layout in sorted(os.listdir(h5py_dir)):
        for name in sorted(os.listdir(os.path.join(h5py_dir, layout))):
            data = read(os.path.join(h5py_dir, layout, name))
            if len(data) <= 64 << 10:
                put(roles[name[:-3]], f"{layout}-{name}", data)
    ave = os.path.join(SHARED, "data", "ave")
    for name in ["test_order.h5", "val_order_match.h5", "train_order.h5"]:
        put(ORDER, "ave-" + name, read(os.path.join(ave, name)))
    put(LABELS, "ave-labels_noisy.h5", read(os.path.join(ave, "labels_noisy.h5")))

    # Layouts and types the fixtures lack, at the base directory's N.
    rng = np.random.default_rng(1)
    pooled = rng.standard_normal((N, 10, 16)).astype("f4")
    put(VISUAL, "pooled-chunked-shuffle-gzip-fletcher", h5_bytes(
        "avadataset", pooled, chunks=(2, 10, 16), shuffle=True, compression="gzip", fletcher32=True))
    put(VISUAL, "pooled-compact-latest", h5_bytes(
        "avadataset", np.ascontiguousarray(pooled[:, :, :4]), compact=True, libver="latest"))
    put(AUDIO, "audio-f64-chunked-latest", h5_bytes(
        "avadataset", rng.standard_normal((N, 10, 8)), chunks=(1, 10, 8), libver="latest"))
    put(AUDIO, "audio-f32-big-endian", h5_bytes("avadataset", pooled[:, :, :8].astype(">f4")))
    put(AUDIO, "audio-f16", h5_bytes("avadataset", pooled[:, :, :8].astype("f2")))
    onehot = np.zeros((N, 10, 29), dtype="u1")
    onehot[:, :, 28] = 1
    put(LABELS, "labels-u8-gzip", h5_bytes("avadataset", onehot, chunks=True, compression="gzip"))
    put(LABELS, "labels-i32", h5_bytes("avadataset", onehot.astype("<i4")))
    put(ORDER, "order-u16", h5_bytes("order", np.array([5, 0, 2], dtype="<u2")))
    put(ORDER, "order-i64-chunked-latest", h5_bytes("order", np.array([1, 3, 4], dtype="<i8"),
                                                   chunks=(2,), maxshape=(None,), libver="latest"))
    put(ORDER, "order-strings", h5_bytes("order", np.array([b"a", b"b"])))


# ---- native -------------------------------------------------------------------------------------

MODEL_CONFIG = {
    "visual_dim": 512, "audio_dim": 128, "audio_fc": False, "d_model": 256, "heads": 4,
    "num_classes": 28, "guide": "co-guide", "temporal": "bi-lstm", "psi": 0.3, "beta": 0.4,
    "lambda": 0.6, "alpha": 0.1, "gamma": 0.3, "cas_top_k": 4, "contrastive": True,
    "noise_std": 0.1, "augmentation": "gaussian-noise", "channel_mask_p": 0.2,
    "mixup_weight": 0.7, "enhanced_for_category": False,
    "dropout": {"visual_fc": 0.2, "coguide": 0.2, "relation": 0.1, "interaction_attention": 0.2},
}


def safetensors_bytes(tensors, metadata=None):
    """The safetensors layout: u64 header length, JSON header, data (tensors in name order)."""
    header, data = {}, b""
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def golden_tensors(limit):
    """Real float tensors of ../shared/golden/cace_golden.safetensors, smallest first, up to
    `limit` bytes of data."""
    blob = read(os.path.join(SHARED, "golden", "cace_golden.safetensors"))
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header = {k: t for k, t in header.items() if k != "__metadata__" and t["dtype"] in ("F32", "F64")}
    out, total = {}, 0
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][1] - kv[1]["data_offsets"][0]):
        a, b = t["data_offsets"]
        if total + (b - a) > limit:
            break
        out[name] = (t["dtype"], t["shape"], blob[8 + n + a:8 + n + b])
        total += b - a
    return out


def native_seeds():
    def put(name, json_part, weights=None):
        data = json.dumps(json_part, indent=2).encode() if not isinstance(json_part, bytes) else json_part
        write("native", name, data if weights is None else data + b"\0" + weights)

    rng = np.random.default_rng(2)
    keys = ["v_fc.weight", "v_fc.bias", "localize_module.classifier.bias"]
    small = {
        "v_fc.weight": ("F32", [4, 3], rng.standard_normal(12).astype("<f4").tobytes()),
        "v_fc.bias": ("F32", [4], rng.standard_normal(4).astype("<f4").tobytes()),
        "localize_module.classifier.bias": ("F64", [1], rng.standard_normal(1).astype("<f8").tobytes()),
    }
    put("checkpoint", MODEL_CONFIG, safetensors_bytes(small, {"cace-net.keys": json.dumps(keys)}))
    put("checkpoint-golden-tensors", {"d_model": 64, "heads": 2},
        safetensors_bytes(golden_tensors(16 << 10), {"source": "cace_golden"}))
    put("train-config", {"model": MODEL_CONFIG, "epochs": 200, "batch_size": 64, "eval_batch_size": 64,
                         "adam": {"lr": 7e-4, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
                         "lr_milestones": [10, 20, 30], "lr_gamma": 0.5, "clip_norm": 0.5,
                         "contrastive_weight": 1.0, "tau": 0.01, "bece_start_epoch": None, "seed": 3917,
                         "zero_audio": False, "features_in_memory": None})
    put("run-state", {"next_epoch": 3, "best_val": {"epoch": 1, "val_acc": 0.5, "test_acc": 0.25},
                      "best_test": {"epoch": 2, "val_acc": None, "test_acc": 0.75}})
    metrics = {"epoch": 0, "train_loss": 2.5, "train_acc": 0.1, "val_acc": 0.2, "test_acc": None, "lr": 7e-4,
               "seconds": 1.5, "bece_on": False, "loss_terms": {"ce": 2.0, "bece": 0.5}, "grad_norm_mean": 0.3}
    lines = json.dumps(metrics) + "\n" + json.dumps(dict(metrics, epoch=1, bece_on=True)) + "\n"
    adam = {}
    for name, (_, shape, _) in small.items():
        n = int(np.prod(shape))
        for kind in ["exp_avg", "exp_avg_sq"]:
            adam[f"{kind}/{name}"] = ("F32", [n], rng.random(n).astype("<f4").tobytes())
    steps = {name: 7 for name in small}
    put("metrics-and-optimizer", lines.encode(), safetensors_bytes(adam, {"steps": json.dumps(steps)}))


def main():
    annotation_seeds()
    pth_seeds()
    h5_seeds()
    native_seeds()
    for target in sorted(os.listdir(OUT)):
        files = os.listdir(os.path.join(OUT, target))
        size = sum(os.path.getsize(os.path.join(OUT, target, f)) for f in files)
        print(f"{target}: {len(files)} files, {size} bytes")


if __name__ == "__main__":
    main()
