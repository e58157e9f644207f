#!/usr/bin/env python3
"""PyTorch side of `cace bench --finetune ENCODER`: one step of the official fine-tuning
(REFERENCE §6.3: the image encoder in train mode on B videos x 10 frames, time-mean, pool,
bias-free projections, symmetric InfoNCE with tau 0.2, SGD lr 1e-3 momentum 0.9 wd 1e-4) and the
eval-mode forward, random weights and inputs, float32, median of --reps after one warm-up.
Prints one JSON line like `cace bench --finetune ... --json`.

    /work/venv-torch/bin/python tools/bench_finetune_torch.py --encoder resnet50 --videos 2 --threads 2
"""
import argparse, json, resource, statistics, time

import torch
import torch.nn.functional as F
import torchvision


def encoder(name):
    if name == "resnet50":
        return torch.nn.Sequential(*list(torchvision.models.resnet50().children())[:-2]), 2048
    return torch.nn.Sequential(*list(torchvision.models.vgg19_bn().children())[:-1]), 512


def timed(reps, f):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", choices=["resnet50", "vgg19-bn"], default="resnet50")
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    enc, dim = encoder(a.encoder)
    align_i, align_a = torch.nn.Linear(dim, 128, bias=False), torch.nn.Linear(128, 128, bias=False)
    params = list(enc.parameters()) + list(align_i.parameters()) + list(align_a.parameters())
    opt = torch.optim.SGD(params, 1e-3, momentum=0.9, weight_decay=1e-4)
    b = a.videos

    def embed():
        x = torch.randn(b, 10, 3, 224, 224)
        maps = enc(x.reshape(b * 10, 3, 224, 224))
        _, c, h, w = maps.shape
        img = maps.reshape(b, 10, c, h, w).mean(1).mean((2, 3))
        aud = torch.randn(b, 10, 128).mean(1)
        return F.normalize(align_i(img), dim=1), F.normalize(align_a(aud), dim=1)

    def step():
        enc.train()
        i, au = embed()
        logits = i @ au.T / 0.2
        target = torch.arange(b)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()

    def evaluate():
        enc.eval()
        with torch.no_grad():
            embed()

    step_s = timed(a.reps, step)
    eval_s = timed(a.reps, evaluate)
    print(json.dumps({"framework": f"torch {torch.__version__}", "encoder": a.encoder, "videos": b,
                      "step_ms": step_s * 1e3, "ms_per_video": step_s * 1e3 / b, "eval_ms": eval_s * 1e3,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "threads": a.threads}))


if __name__ == "__main__":
    main()
