#!/usr/bin/env python3
"""The official UnAV training iteration and evaluation forward, timed on an UnAV-layout folder:
the PyTorch side of `cace bench --dense DATA [--config JSON]` (same data, same sizes).

    git -C <mirror of ttgeng233/UnAV> archive HEAD | tar -x -C /tmp/unav-official
    (cd /tmp/unav-official/libs/utils && python setup.py build_ext --inplace)   # nms_1d_cpu
    python tools/bench_dense_torch.py --official /tmp/unav-official --data DATA [--config JSON] \
        [--reps 2] [--threads 2]

The official config (configs/avel_unav100.yaml over libs/core/config.py), with the fields of our
`DenseTrainConfig` JSON that have an official counterpart applied over it (model widths,
classes, max_seq_len, batch_size, lr). One batch of the first `batch_size` training videos
(the official training-mode items: random truncation), one warm-up iteration, then the median
of `reps` iterations of train_one_epoch's body (zero_grad, forward with losses, backward,
clip_grad_norm_ 1.0, AdamW step, scheduler step, ModelEma update); then the evaluation forward
(model.eval(), inference and post-processing with soft-NMS) of the same videos untruncated.
Prints one JSON line: step_ms, ms_per_video, eval_ms, peak_rss_mb, threads.
"""
import argparse
import copy
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch


def load_official(root):
    sys.path.insert(0, os.path.join(root, "libs", "utils"))
    sys.path.insert(0, root)
    np.float = float
    from libs.core import config as cfg_mod
    from libs.datasets import make_dataset
    from libs.modeling import make_multimodal_meta_arch
    from libs.utils import train_utils
    return cfg_mod, make_dataset, make_multimodal_meta_arch, train_utils


def official_config(cfg_mod, root, data, ours):
    cfg = cfg_mod.load_config(os.path.join(root, "configs/avel_unav100.yaml"),
                              defaults=copy.deepcopy(cfg_mod.DEFAULTS))
    cfg["dataset"].update(json_file=os.path.join(data, "annotations", "unav100_annotations.json"),
                          feat_folder=os.path.join(data, "av_features"))
    m = ours.get("model", {})
    names = {"input_dim_v": "input_dim_V", "input_dim_a": "input_dim_A", "embd_dim": "embd_dim",
             "head_dim": "head_dim", "n_head": "n_head"}
    for k, v in m.items():
        if k in names:
            cfg["model"][names[k]] = v
        elif k == "dependency_dim" and v != 128:
            sys.exit("the official dependency block's width is fixed at 128")
    for k in ("num_classes", "max_seq_len"):
        if k in m:
            cfg["dataset"][k] = m[k]
    if "batch_size" in ours:
        cfg["loader"]["batch_size"] = ours["batch_size"]
    if "lr" in ours:
        cfg["opt"]["learning_rate"] = ours["lr"]
    return cfg_mod._update_config(cfg)


def median_time(reps, fn):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--config")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg_mod, make_dataset, make_meta_arch, tu = load_official(args.official)
    ours = json.load(open(args.config)) if args.config else {}
    cfg = official_config(cfg_mod, args.official, args.data, ours)
    tu.fix_random_seed(cfg["init_rand_seed"], include_cuda=False)
    train_ds = make_dataset(cfg["dataset_name"], True, cfg["train_split"], **cfg["dataset"])
    eval_ds = make_dataset(cfg["dataset_name"], False, cfg["train_split"], **cfg["dataset"])
    bs = cfg["loader"]["batch_size"]
    batch = [train_ds[i] for i in range(bs)]
    eval_batch = [eval_ds[i] for i in range(bs)]
    cfg["model"]["train_cfg"]["head_empty_cls"] = train_ds.get_attributes()["empty_label_ids"]
    model = make_meta_arch(cfg["model_name"], **cfg["model"])
    optimizer = tu.make_optimizer(model, cfg["opt"])
    scheduler = tu.make_scheduler(optimizer, cfg["opt"], 100)
    ema = tu.ModelEma(model)
    clip = cfg["train_cfg"]["clip_grad_l2norm"]

    def step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        losses = model(batch)
        losses["final_loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        ema.update(model)

    def evaluate():
        ema.module.eval()
        with torch.no_grad():
            ema.module(eval_batch)

    step_s = median_time(args.reps, step)
    eval_s = median_time(args.reps, evaluate)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "pytorch " + torch.__version__, "batch": bs,
                      "step_ms": step_s * 1e3, "ms_per_video": step_s * 1e3 / bs,
                      "eval_ms": eval_s * 1e3, "peak_rss_mb": peak,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
