"""PyTorch (CPU) reference timings for BENCHMARKS.md, to compare with `cace bench`.

Run (torch 2.15.0 needs the CUDA stand-ins on this machine):
  LD_LIBRARY_PATH=/tmp/cudastub2 python3 bench_torch.py --threads 2 --dtype float32 --reps 5
  LD_LIBRARY_PATH=/tmp/cudastub2 python3 bench_torch.py --threads 2 --dtype float64 --reps 5 --json
Quick smoke test: ... bench_torch.py --batch 2 --n-videos 5 --reps 1

Measures (warm-up, then the median of --reps; CPU torch is synchronous):
  train_step_ms      forward + loss (incl. contrastive) + backward + clip_grad_norm_(0.5) +
                     Adam(7e-4).step + zero_grad; train mode, dropout on, BECE switch on
  eval_batch64_ms    eval forward of one batch (eval mode, no_grad, switch on)
  eval_402_s         the whole 402-video test split: 6 batches of 64 + one of 18, timed as one loop
  latency_ms         one video, batch 1, eval
  matmul_gflops_*    [batch*490, 512] @ [512, 512] and @ [512, 1536] (31360 rows at batch 64)
  peak_rss_mb        VmHWM of this process at the end (/proc/self/status), in MiB; getrusage's
                     ru_maxrss where /proc is missing (it survives exec, so a run started by a
                     big process, as `cace bench --compare-pytorch`, would report the parent's)
"""
import argparse
import json
import math
import resource
import statistics
import time

import torch

import torch_cace as tc


def peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

T = 10


def timeit(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def make_inputs(b, dtype, gen):
    v = torch.randn(b, T, 7, 7, 512, generator=gen).abs_().mul_(0.5).to(dtype)
    a = torch.randn(b, T, 128, generator=gen).to(dtype)
    labels = torch.zeros(b, T, 29, dtype=dtype)
    for i in range(b):
        cls = i % 28
        for t in range(T):
            labels[i, t, cls if 2 <= t < 8 else 28] = 1.0   # events at t = 2..7
    return v, a, labels


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n-videos", type=int, default=402, help="size of the eval split (402 = AVE test)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    b, reps, warm = args.batch, args.reps, args.warmup
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    model = tc.supv_main_model().to(dtype)
    model.contrastive_switch = True          # BECE on (λ-mix + contrastive), as from epoch 25
    opt = tc.make_optimizer(model, lr=7e-4)

    # (a) training step
    v, a, y = make_inputs(b, dtype, gen)
    model.train()

    def train():
        tc.train_step(model, opt, v, a, y, clip=0.5)
    train_s = timeit(train, warm, reps)

    # (b) eval forward of one batch
    model.eval()
    ve, ae, _ = make_inputs(b, dtype, gen)

    @torch.no_grad()
    def ev(vv, aa):
        return model(vv, aa)[1]
    eval_s = timeit(lambda: ev(ve, ae), warm, reps)

    # (c) eval of the n-video split in batches of b (inputs reused: same compute, no 400 MB buffer)
    n_full, rem = divmod(args.n_videos, b)
    vr, ar, _ = make_inputs(max(rem, 1), dtype, gen)

    def split():
        for _ in range(n_full):
            ev(ve, ae)
        if rem:
            ev(vr, ar)
    split_s = timeit(split, min(warm, 1), reps)

    # (d) latency, one video
    v1, a1, _ = make_inputs(1, dtype, gen)
    lat_s = timeit(lambda: ev(v1, a1), max(warm, 3), max(reps, 5))

    # (e) matmul throughput
    m = b * T * 49
    x = torch.rand(m, 512, generator=gen).to(dtype)

    def gflops(n):
        w = (torch.rand(512, n, generator=gen) * 0.1 - 0.05).to(dtype)
        s = timeit(lambda: x @ w, warm, reps)
        return 2.0 * m * 512 * n / s / 1e9
    g512, g1536 = gflops(512), gflops(1536)

    # (f) peak RSS (Linux: KiB)
    rss_mb = peak_rss_mb()

    res = {
        "train_step_ms": train_s * 1e3,
        "eval_batch64_ms": eval_s * 1e3,
        "eval_402_s": split_s,
        "latency_ms": lat_s * 1e3,
        "peak_rss_mb": rss_mb,
        "matmul_gflops_512": g512,
        "matmul_gflops_1536": g1536,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "batch": b,
        "n_videos": args.n_videos,
        "reps": reps,
    }
    if args.json:
        print(json.dumps(res))
        return
    steps = math.ceil(3339 / b)
    print(f"PyTorch {torch.__version__} CPU, {res['threads']} threads, {args.dtype}, "
          f"batch {b}, median of {reps} (warm-up {warm})")
    rows = [
        (f"train step (batch {b})", f"{res['train_step_ms']:.1f} ms"),
        (f"  -> epoch estimate ({steps} steps, no data loading)", f"{steps * train_s:.1f} s"),
        (f"eval forward (batch {b})", f"{res['eval_batch64_ms']:.1f} ms"),
        (f"eval {args.n_videos} videos ({n_full}x{b} + {rem})", f"{res['eval_402_s']:.2f} s"),
        ("latency (batch 1)", f"{res['latency_ms']:.1f} ms"),
        (f"matmul [{m},512]@[512,512]", f"{g512:.1f} GFLOP/s"),
        (f"matmul [{m},512]@[512,1536]", f"{g1536:.1f} GFLOP/s"),
        ("peak RSS", f"{rss_mb:.0f} MB"),
    ]
    w = max(len(r[0]) for r in rows)
    for k, val in rows:
        print(f"  {k:<{w}}  {val:>14}")


if __name__ == "__main__":
    main()
