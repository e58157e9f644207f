#!/usr/bin/env python3
"""Golden vectors for the dense (UnAV-100) training targets and losses:
`tests/fixtures/dense/loss_golden.safetensors`.

Imports the official code from a checkout of ttgeng233/UnAV (`--official DIR`) and runs, on
fixed random inputs:
- the official point generator (training: max_seq_len points per level);
- the dataset's `label_points` / `label_points_single_video` (class-aware and class-agnostic)
  for two videos with overlapping ground-truth events (feature-grid units);
- the meta arch's `losses` (sigmoid focal loss + ctr-DIoU loss, normalised by the EMA of the
  number of positives, initial 250, momentum 0.9) twice in a row (the EMA carries over), with
  the configured weight 1 and with automatic balancing (weight <= 0), and the gradients of the
  final loss with respect to the logits and the offsets.
The two methods are called unbound on a stand-in `self` that holds only the attributes they
read.

Saved: `points.<l>` [T_l, 4]; `gt.<b>.segments` [N, 2], `gt.<b>.labels` (int64 [N]);
`target.<aware|agnostic>.<b>.cls` [FT, C], `target.<aware|agnostic>.<b>.reg` [FT, C, 2] or
[FT, 2]; `in.<k>.cls.<l>` [B, T_l, C], `in.<k>.off.<l>` [B, T_l, C, 2], `mask.<l>` (uint8
[B, T_l]); `loss.<k>.{cls,reg,final,normalizer}` (scalars as [1]); `loss.auto.<...>` for the
automatic weight (step 0 inputs, fresh normaliser); `grad.<k>.cls.<l>`, `grad.<k>.off.<l>`.
Metadata: `config` (num_classes, max_seq_len, strides, regression ranges, init_loss_norm).
"""

import argparse
import json
import os
import sys
import types

import torch
from safetensors.torch import save_file


def import_official(root):
    sys.path.insert(0, root)
    utils = types.ModuleType("libs.utils")
    utils.batched_nms = None
    sys.modules["libs.utils"] = utils
    from libs.core import config as cfg_mod
    from libs.datasets.loc_generators import PointGenerator
    from libs.datasets.unav100 import UnAV100Dataset
    from libs.modeling.multimodal_meta_archs import PtTransformer

    return cfg_mod, PointGenerator, UnAV100Dataset, PtTransformer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", required=True)
    ap.add_argument("--out", default="tests/fixtures/dense/loss_golden.safetensors")
    args = ap.parse_args()
    cfg_mod, PointGenerator, Dataset, Meta = import_official(args.official)
    cfg = cfg_mod.load_config(os.path.join(args.official, "configs/avel_unav100.yaml"))
    m = cfg["model"]
    num_classes, max_seq_len = 4, 64
    strides = [m["scale_factor"] ** i for i in range(m["backbone_arch"][-1] + 1)]
    reg_range = m["regression_range"]
    gen = torch.Generator().manual_seed(7)

    pg = PointGenerator(max_seq_len, 1.0, len(strides), m["scale_factor"], reg_range, max(strides))
    points = pg(strides, torch.zeros(1, max_seq_len), True)
    tensors = {f"points.{l}": p.clone().contiguous() for l, p in enumerate(points)}

    # Feature-grid segments: overlapping events, events of the same class overlapping,
    # fractional and negative boundaries, short and long events (several pyramid levels).
    gts = [
        (
            torch.tensor([[2.3, 9.7], [5.0, 40.5], [30.2, 63.0], [-0.4, 3.1], [12.0, 14.6]]),
            torch.tensor([1, 3, 1, 0, 3]),
        ),
        (
            torch.tensor([[0.0, 38.0], [10.5, 20.25], [16.0, 30.0]]),
            torch.tensor([2, 2, 0]),
        ),
    ]
    targets = {}
    for aware in (True, False):
        name = "aware" if aware else "agnostic"
        fake = types.SimpleNamespace(num_classes=num_classes, class_aware=aware)
        fake.label_points_single_video = types.MethodType(
            Dataset.label_points_single_video, fake
        )
        targets[name] = []
        for b, (segs, labels) in enumerate(gts):
            cls_t, reg_t = Dataset.label_points(fake, points, segs, labels)
            tensors[f"target.{name}.{b}.cls"] = cls_t.contiguous()
            tensors[f"target.{name}.{b}.reg"] = reg_t.contiguous()
            targets[name].append((cls_t, reg_t))
    for b, (segs, labels) in enumerate(gts):
        tensors[f"gt.{b}.segments"] = segs
        tensors[f"gt.{b}.labels"] = labels

    lens = [64, 41]
    B = len(lens)
    masks = []
    for l, s in enumerate(strides):
        t = max_seq_len // s
        mk = torch.zeros(B, t, dtype=torch.bool)
        for b, n in enumerate(lens):
            mk[b] = (torch.arange(t) * s) < n
        masks.append(mk)
        tensors[f"mask.{l}"] = mk.to(torch.uint8)

    def inputs(k):
        cls, off = [], []
        for l, s in enumerate(strides):
            t = max_seq_len // s
            c = (torch.randn(B, t, num_classes, generator=gen) * 2.0 - 1.0).requires_grad_()
            o = (torch.rand(B, t, num_classes, 2, generator=gen) * 3.0).requires_grad_()
            tensors[f"in.{k}.cls.{l}"] = c.detach().clone()
            tensors[f"in.{k}.off.{l}"] = o.detach().clone()
            cls.append(c)
            off.append(o)
        return cls, off

    def fake_meta(weight):
        return types.SimpleNamespace(
            loss_normalizer=m["train_cfg"]["init_loss_norm"],
            loss_normalizer_momentum=0.9,
            train_label_smoothing=0.0,
            num_classes=num_classes,
            class_aware=True,
            train_loss_weight=weight,
        )

    gt_cls = [t[0] for t in targets["aware"]]
    gt_off = [t[1] for t in targets["aware"]]
    meta = fake_meta(1.0)
    step_inputs = []
    for k in range(2):
        cls, off = inputs(k)
        step_inputs.append((cls, off))
        losses = Meta.losses(meta, masks, cls, off, gt_cls, gt_off)
        losses["final_loss"].backward()
        for name in ("cls", "reg", "final"):
            tensors[f"loss.{k}.{name}"] = losses[f"{name}_loss"].detach().reshape(1).float()
        tensors[f"loss.{k}.normalizer"] = torch.tensor([meta.loss_normalizer], dtype=torch.float32)
        for l in range(len(strides)):
            tensors[f"grad.{k}.cls.{l}"] = cls[l].grad.clone()
            tensors[f"grad.{k}.off.{l}"] = off[l].grad.clone()

    meta = fake_meta(-1)
    cls = [c.detach() for c in step_inputs[0][0]]
    off = [o.detach() for o in step_inputs[0][1]]
    losses = Meta.losses(meta, masks, cls, off, gt_cls, gt_off)
    for name in ("cls", "reg", "final"):
        tensors[f"loss.auto.{name}"] = losses[f"{name}_loss"].detach().reshape(1).float()

    config = {
        "num_classes": num_classes,
        "max_seq_len": max_seq_len,
        "scale_factor": m["scale_factor"],
        "regression_range": [list(r) for r in reg_range],
        "init_loss_norm": m["train_cfg"]["init_loss_norm"],
        "lengths": lens,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        args.out,
        metadata={"config": json.dumps(config), "generator": "tools/make_dense_loss_golden.py"},
    )
    print(args.out, os.path.getsize(args.out), "bytes")
    for k in ("0", "1", "auto"):
        print(k, {n: float(tensors[f"loss.{k}.{n}"]) for n in ("cls", "reg", "final")})
    for name in ("aware", "agnostic"):
        for b in range(B):
            c = tensors[f"target.{name}.{b}.cls"]
            print(name, b, "positives", int((c.sum(-1) > 0).sum()), "labels", float(c.sum()))


if __name__ == "__main__":
    main()
