#!/usr/bin/env python3
"""Golden items of the official UnAV-100 loader for tests/dense/data.rs.

Writes a tiny UnAV-layout dataset (4 videos, random features with small channel counts,
overlapping events, train/validation/test subsets) under OUT/data/ and, for several loader
configurations, the items the official `UnAV100Dataset.__getitem__` returns for it:
OUT/data_golden.json (segments, labels, fps, duration, strides, lengths, and in training mode
the recorded `random.randint` calls) and OUT/data_golden.safetensors (the features).

Training mode is made deterministic by wrapping `random.randint` (the only randomness of the
official `truncate_feats`) so that every call's bounds and result are recorded; the Rust test
replays that sequence.

Usage: /work/venv-torch/bin/python tools/make_dense_data_golden.py \
           --official /tmp/unav-official --out tests/fixtures/dense
(the official repository checked out at --official; nothing of it is copied here).
"""
import argparse
import json
import os
import random
import sys

import numpy as np
import torch
from safetensors.numpy import save_file

RGB, FLOW, AUDIO = 6, 6, 4  # small channel counts keep the fixture small

# (id, subset, duration or None, fps, snippets rgb/flow, snippets audio, npy dtype, events)
VIDEOS = [
    ("vid_train_a", "train", 30.0, 25, 93, 95, "<f4",
     [(2.0, 11.5, "dog barking", 7), (8.25, 20.0, "man speaking", 3),
      (22.1, 29.9, "dog barking", 7)]),
    ("vid_train_b", "train", 12.3, 30, 37, 36, "<f8",
     [(0.4, 6.6, "car engine", 12), (3.0, 12.3, "man speaking", 3)]),
    ("vid_val_c", "Validation", 20.0, 24.5, 61, 58, "<f4",
     [(1.0, 19.5, "piano", 41), (4.7, 9.9, "man speaking", 3), (5.0, 9.0, "piano", 41)]),
    ("vid_test_d", "test", None, 29.97, 70, 70, ">f4",
     [(0.0, 3.3, "car engine", 12), (10.0, 21.0, "singing", 55)]),
]


def write_dataset(root):
    ann_dir = os.path.join(root, "annotations")
    feat_dir = os.path.join(root, "av_features")
    os.makedirs(ann_dir, exist_ok=True)
    os.makedirs(feat_dir, exist_ok=True)
    rng = np.random.default_rng(15)
    db = {}
    for vid, subset, duration, fps, t_v, t_a, dtype, events in VIDEOS:
        for kind, t, c in (("rgb", t_v, RGB), ("flow", t_v, FLOW), ("vggish", t_a, AUDIO)):
            x = rng.standard_normal((t, c)).astype(dtype)
            if kind == "flow":
                x = np.asfortranarray(x)  # one Fortran-order file per video
            np.save(os.path.join(feat_dir, f"{vid}_{kind}.npy"), x)
        entry = {"subset": subset, "fps": fps,
                 "annotations": [{"segment": [s, e], "label": l, "label_id": i}
                                 for s, e, l, i in events]}
        if duration is not None:
            entry["duration"] = duration
        db[vid] = entry
    with open(os.path.join(ann_dir, "unav100_annotations.json"), "w") as f:
        json.dump({"version": "golden", "database": db}, f, indent=1)
    return ann_dir, feat_dir


# Loader configurations: our DenseDataConfig field names; `split`, `training`, `seeds`.
CASES = {
    "eval_all": dict(split=["train", "validation", "test"], training=False),
    "eval_ds2_file_fps": dict(split=["validation", "test"], training=False,
                              downsample_rate=2, default_fps=None),
    "train_crop": dict(split=["train"], training=True, max_seq_len=64, seeds=[0, 1, 2, 3, 4, 5]),
    "train_nocrop_thresh": dict(split=["train"], training=True, max_seq_len=32,
                                crop_ratio=None, trunc_thresh=0.9, seeds=[0, 1, 2]),
}


def dataset_for(make_dataset, case, ann_dir, feat_dir):
    cfg = dict(feat_stride=8, num_frames=24, default_fps=25, downsample_rate=1, max_seq_len=224,
               trunc_thresh=0.5, crop_ratio=[0.9, 1.0], num_classes=100)
    cfg.update({k: v for k, v in case.items() if k in cfg})
    ds = make_dataset(
        "unav100", case["training"], tuple(case["split"]),
        feat_folder=feat_dir, json_file=os.path.join(ann_dir, "unav100_annotations.json"),
        max_buffer_len_factor=1.0, scale_factor=2,
        regression_range=[(0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000)],
        backbone_arch=(2, 3, 5), class_aware=True, file_prefix=None, file_ext=".npy", **cfg)
    ours = dict(cfg, rgb_dim=RGB, flow_dim=FLOW, audio_dim=AUDIO)
    return ds, ours


class Recorder:
    """Wraps random.randint, recording (lo, hi, value) of every call."""

    def __init__(self):
        self.calls, self.orig = [], random.randint

    def __call__(self, a, b):
        v = self.orig(a, b)
        self.calls.append([a, b, v])
        return v


def item_record(d, key, tensors):
    v, a = d["feats"]["visual"], d["feats"]["audio"]
    tensors[key + "/visual"] = np.ascontiguousarray(v.numpy().astype(np.float32))
    tensors[key + "/audio"] = np.ascontiguousarray(a.numpy().astype(np.float32))
    seg = d["segments"]
    return {"video_id": d["video_id"], "key": key, "len": int(v.shape[1]),
            "segments": [[float(x) for x in row] for row in seg.tolist()] if seg is not None else None,
            "segments_dtype": str(seg.dtype) if seg is not None else None,
            "labels": [int(x) for x in d["labels"].tolist()] if d["labels"] is not None else None,
            "fps": float(d["fps"]), "duration": float(d["duration"]),
            "feat_stride": int(d["feat_stride"]), "feat_num_frames": int(d["feat_num_frames"]),
            "targets": targets_record(d)}


def targets_record(d):
    """The per-point targets the official __getitem__ attaches (for the model's target
    assignment, not read by tests/dense/data.rs): points per level as [count, lo, hi, stride]
    (point i of a level sits at t = i * stride), and the non-zero entries of gt_cls_labels
    [point, class] and gt_offsets [point, class, left, right] (class-aware), points numbered
    across levels in order."""
    levels = [[int(p.shape[0]), float(p[0, 1]), float(p[0, 2]), float(p[0, 3])] for p in d["points"]]
    cls = d["gt_cls_labels"].nonzero().tolist()
    off = d["gt_offsets"]
    nz = (off != 0).any(dim=-1).nonzero().tolist()
    return {"levels": levels, "cls": cls,
            "offsets": [[i, c, float(off[i, c, 0]), float(off[i, c, 1])] for i, c in nz]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.official)
    from libs.datasets import make_dataset  # the official loader

    ann_dir, feat_dir = write_dataset(os.path.join(args.out, "data"))
    golden, tensors = {"cases": {}}, {}
    for name, case in CASES.items():
        ds, ours = dataset_for(make_dataset, case, ann_dir, feat_dir)
        out = {"config": ours, "split": case["split"], "training": case["training"],
               "label_dict": [[k, int(v)] for k, v in ds.label_dict.items()],
               "empty_label_ids": [int(x) for x in ds.get_attributes()["empty_label_ids"]],
               "items": []}
        for idx in range(len(ds)):
            for seed in case.get("seeds", [None]):
                rec = Recorder()
                random.randint = rec
                try:
                    if seed is not None:
                        random.seed(seed)
                    d = ds[idx]
                finally:
                    random.randint = rec.orig
                key = f"{name}/{idx}/{seed}"
                r = item_record(d, key, tensors)
                r.update(index=idx, seed=seed, draws=rec.calls)
                out["items"].append(r)
        golden["cases"][name] = out
    golden["generator"] = {"torch": torch.__version__, "numpy": np.__version__}
    with open(os.path.join(args.out, "data_golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    save_file(tensors, os.path.join(args.out, "data_golden.safetensors"))


if __name__ == "__main__":
    main()
