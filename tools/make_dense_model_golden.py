#!/usr/bin/env python3
"""Golden vectors for the dense (UnAV-100) model forward: `tests/fixtures/dense/model_golden.safetensors`.

Builds the official UnAV baseline (`LocPointTransformer`) from a checkout of ttgeng233/UnAV
(`--official DIR`, e.g. `git -C <mirror> archive HEAD | tar -x -C DIR`) with the official
defaults (`libs/core/config.py`) and `configs/avel_unav100.yaml`, but small widths so the file
stays small; every parameter is then overwritten with random values (the official
initialisation zeroes biases and starts AffineDropPath scales at 1e-4, which would hide most
of the network from the comparison). The model runs in eval mode through its own `forward`
(its `preprocessing` pads the batch); only the final `inference` step (NMS, which needs the
official C++ extension) is replaced by a function that returns the per-level outputs.

Two input cases share the weights:
  a: valid lengths (64, 41) -> padded to max_seq_len = 64 (position embedding sliced);
  b: valid lengths (90, 53) -> padded to 96, the next multiple of the largest stride
     (position embedding linearly interpolated to 96).

Saved tensors (float32 unless noted):
  state dict under its official keys (`backbone.*`, `dependency_block.*`, `cls_head.*`,
  `reg_head.*`);
  `in.<case>.visual` [2, Cv, len_max], `in.<case>.audio` [2, Ca, len_max] (zero beyond each
  video's length), `in.<case>.lengths` (int64 [2]);
  `out.<case>.cls.<l>` [2, T_l, C], `out.<case>.off.<l>` [2, T_l, C, 2],
  `out.<case>.mask.<l>` (uint8 [2, T_l]);
  `out.<case>.points.<b>.<l>` [T_l(video b), 4] from the official point generator.
Gradients (case a; its inference padding equals the training padding): the official class-aware
targets (`label_points` on the training points) for `grad.gt.<b>.segments` / `.labels` and the
official `losses` on the eval-mode outputs (`grad.loss.{cls,reg,final}`), back-propagated:
`grad.norm` and `grad.sum` [558] (L2 norm and sum of each parameter's gradient, in key order)
and `grad.param.<key>` for every parameter of at most 128 elements.
Metadata: `config` (our `DenseModelConfig` JSON), `official_config` (the merged official
config), `keys` (the state-dict order).
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
    # The NMS extension is compiled C++ and only used by inference post-processing; the forward
    # never calls it. libs.utils also imports pandas/joblib for metrics: stub the package.
    utils = types.ModuleType("libs.utils")
    utils.batched_nms = None
    sys.modules["libs.utils"] = utils
    from libs.core import config as cfg_mod
    from libs.modeling import make_multimodal_meta_arch
    from libs.datasets.loc_generators import PointGenerator

    return cfg_mod, make_multimodal_meta_arch, PointGenerator


def our_config(cfg):
    """Our `DenseModelConfig` (JSON fields) for a merged official config."""
    m = cfg["model"]
    return {
        "input_dim_v": m["input_dim_V"],
        "input_dim_a": m["input_dim_A"],
        "embd_dim": m["embd_dim"],
        "embd_kernel_size": m["embd_kernel_size"],
        "embd_with_ln": m["embd_with_ln"],
        "n_head": m["n_head"],
        "arch": list(m["backbone_arch"]),
        "scale_factor": m["scale_factor"],
        "max_seq_len": m["max_seq_len"],
        "max_buffer_len_factor": cfg["dataset"]["max_buffer_len_factor"],
        "use_abs_pe": m["use_abs_pe"],
        "head_dim": m["head_dim"],
        "head_kernel_size": m["head_kernel_size"],
        "head_num_layers": m["head_num_layers"],
        "head_with_ln": m["head_with_ln"],
        "num_classes": m["num_classes"],
        "class_aware": m["class_aware"],
        "use_dependency": m["use_dependency"],
        "regression_range": [list(r) for r in m["regression_range"]],
        "cls_prior_prob": m["train_cfg"]["cls_prior_prob"],
        "droppath": m["train_cfg"]["droppath"],
    }


def randomise(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 0:  # Scale
                p.copy_(1.0 + 0.3 * torch.randn((), generator=gen))
            elif name.endswith("drop_path_attn.scale") or name.endswith("drop_path_mlp.scale"):
                p.copy_(0.8 * torch.randn(p.shape, generator=gen))
            elif "norm" in name or ".ln" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:  # conv weights: keep PyTorch's kaiming-uniform scale 1/sqrt(fan_in), redrawn
                fan_in = p[0].numel()
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * (3.0 / fan_in) ** 0.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", required=True)
    ap.add_argument("--out", default="tests/fixtures/dense/model_golden.safetensors")
    args = ap.parse_args()

    cfg_mod, make_meta_arch, PointGenerator = import_official(args.official)
    from libs.datasets.unav100 import UnAV100Dataset
    cfg = cfg_mod.load_config(os.path.join(args.official, "configs/avel_unav100.yaml"))
    # Small widths (the config's own fields); everything else stays official.
    cfg["dataset"]["num_classes"] = 3
    cfg["dataset"]["max_seq_len"] = 64
    cfg["dataset"]["max_buffer_len_factor"] = 2.0
    cfg["model"].update(
        input_dim_V=128, embd_dim=16, head_dim=16, n_head=4, num_classes=3, max_seq_len=64
    )
    cfg = cfg_mod._update_config(cfg)
    m = cfg["model"]

    torch.manual_seed(0)
    model = make_meta_arch(cfg["model_name"], **m)
    gen = torch.Generator().manual_seed(1234)
    randomise(model, gen)
    model.eval()

    # Return the per-level outputs instead of running NMS.
    model.inference = lambda video_list, fpn_masks, cls, off: (fpn_masks, cls, off)

    fpn_strides = [m["scale_factor"] ** i for i in range(m["backbone_arch"][-1] + 1)]
    points_gen = PointGenerator(
        m["max_seq_len"],
        cfg["dataset"]["max_buffer_len_factor"],
        len(fpn_strides),
        m["scale_factor"],
        m["regression_range"],
        max(fpn_strides),
    )

    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    keys = list(tensors.keys())
    cv, ca = m["input_dim_V"], m["input_dim_A"]
    for case, lengths in (("a", (64, 41)), ("b", (90, 53))):
        tmax = max(lengths)
        vis = torch.zeros(2, cv, tmax)
        aud = torch.zeros(2, ca, tmax)
        videos = []
        for b, n in enumerate(lengths):
            v = torch.randn(cv, n, generator=gen)
            a = torch.randn(ca, n, generator=gen)
            vis[b, :, :n] = v
            aud[b, :, :n] = a
            videos.append({"feats": {"visual": v, "audio": a}})
        with torch.no_grad():
            masks, cls, off = model(videos)
        tensors[f"in.{case}.visual"] = vis
        tensors[f"in.{case}.audio"] = aud
        tensors[f"in.{case}.lengths"] = torch.tensor(lengths, dtype=torch.int64)
        for l, (c, o, mk) in enumerate(zip(cls, off, masks)):
            tensors[f"out.{case}.cls.{l}"] = c.contiguous()
            tensors[f"out.{case}.off.{l}"] = o.contiguous()
            tensors[f"out.{case}.mask.{l}"] = mk.to(torch.uint8).contiguous()
        for b, v in enumerate(videos):
            pts = points_gen(fpn_strides, v["feats"]["visual"], False)
            for l, p in enumerate(pts):
                tensors[f"out.{case}.points.{b}.{l}"] = p.clone().contiguous()

    # Gradients (case a, where the inference padding equals the training padding): the official
    # targets (`label_points`, class-aware, training points) and `losses` on the eval-mode
    # outputs, back-propagated to every parameter. Small tensors are stored whole; for all
    # keys the L2 norm and the sum of the gradient (in key order).
    model.zero_grad()
    videos = []
    for b, n in enumerate((64, 41)):
        videos.append({"feats": {"visual": tensors["in.a.visual"][b, :, :n],
                                 "audio": tensors["in.a.audio"][b, :, :n]}})
    masks, cls, off = model(videos)
    train_points = points_gen(fpn_strides, torch.zeros(1, m["max_seq_len"]), True)
    gts = [
        (torch.tensor([[2.3, 9.7], [5.0, 40.5], [30.2, 63.0], [-0.4, 3.1]]), torch.tensor([1, 2, 1, 0])),
        (torch.tensor([[0.0, 38.0], [10.5, 20.25], [16.0, 30.0]]), torch.tensor([2, 2, 0])),
    ]
    labeler = types.SimpleNamespace(num_classes=m["num_classes"], class_aware=True)
    labeler.label_points_single_video = types.MethodType(
        UnAV100Dataset.label_points_single_video, labeler
    )
    gt_cls, gt_off = [], []
    for b, (segs, labels) in enumerate(gts):
        c, o = UnAV100Dataset.label_points(labeler, train_points, segs, labels)
        gt_cls.append(c)
        gt_off.append(o)
        tensors[f"grad.gt.{b}.segments"] = segs
        tensors[f"grad.gt.{b}.labels"] = labels
    losses = model.losses(masks, cls, off, gt_cls, gt_off)
    losses["final_loss"].backward()
    for name in ("cls", "reg", "final"):
        tensors[f"grad.loss.{name}"] = losses[f"{name}_loss"].detach().reshape(1).float()
    norms, sums = [], []
    for k, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        norms.append(float(g.double().norm()))
        sums.append(float(g.double().sum()))
        if g.numel() <= 128:
            tensors[f"grad.param.{k}"] = g.detach().clone().contiguous()
    assert [k for k, _ in model.named_parameters()] == keys
    tensors["grad.norm"] = torch.tensor(norms, dtype=torch.float32)
    tensors["grad.sum"] = torch.tensor(sums, dtype=torch.float32)

    ours = our_config(cfg)
    meta = {
        "config": json.dumps(ours),
        "official_config": json.dumps(m, default=str),
        "keys": json.dumps(keys),
        "generator": "tools/make_dense_model_golden.py",
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_file(tensors, args.out, metadata=meta)
    size = os.path.getsize(args.out)
    nparam = sum(tensors[k].numel() for k in keys)
    print(f"{args.out}: {size} bytes, {len(keys)} state tensors, {nparam} parameters")
    for case in "ab":
        for l in range(len(fpn_strides)):
            c = tensors[f"out.{case}.cls.{l}"]
            o = tensors[f"out.{case}.off.{l}"]
            print(case, l, tuple(c.shape), float(c.abs().max()), float(o.abs().max()))


if __name__ == "__main__":
    main()
