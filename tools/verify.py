"""Check torch_cace.py against the official golden vectors (float64).

Run: LD_LIBRARY_PATH=/tmp/cudastub2 nice -n 19 python3 verify.py [--golden DIR]
Exits non-zero if any check exceeds its tolerance (1e-9)."""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file

import torch_cace as tc

TOL = 1e-9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", default="/work/shared/golden")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    g = load_file(os.path.join(args.golden, "cace_golden.safetensors"))
    key_order = json.load(open(os.path.join(args.golden, "grad_norm_keys.json")))
    if isinstance(key_order, dict):
        key_order = next(v for v in key_order.values() if isinstance(v, list))

    torch.manual_seed(12345)  # different from the official 3917: weights must come from the file
    model = tc.supv_main_model().double()
    keys = tc.load_official(model, os.path.join(args.golden, "cace_init.pth.tar"))
    failures = []

    def check(name, got, ref, tol=TOL, rel=False):
        d = (got.detach().double() - ref.double()).abs()
        m = d.max().item() if d.numel() else 0.0
        if rel:
            m = (d / ref.double().abs().clamp_min(1.0)).max().item()
        ok = m <= tol
        print(f"  {'ok  ' if ok else 'FAIL'} {name:44s} max {'rel' if rel else 'abs'} diff {m:.3e}")
        if not ok:
            failures.append(name)

    print(f"loaded {len(keys)} tensors (strict=True), "
          f"{sum(p.numel() for p in model.parameters()):,} values")
    if len(keys) != 242:
        failures.append("key count")
    if [k if k.startswith("module.") else "module." + k for k in keys] != key_order:
        print("  note: checkpoint key order differs from grad_norm_keys.json")

    v = g["input/visual"].double()
    a = g["input/audio"].double()
    y = g["input/labels"].double()
    noise = g["input/aug_noise"].double()

    # ---- eval forward -------------------------------------------------------------------------
    print("eval forward (float64, switch on) vs out64/*")
    model.eval()
    model.contrastive_switch = True
    with torch.no_grad():
        outs = model(v, a, noise)
    names = ["is_event_scores", "event_scores", "audio_visual_gate", "av_score", "q", "k"]
    for n, o in zip(names, outs):
        assert o.shape == g["out64/" + n].shape, (n, o.shape, g["out64/" + n].shape)
        check("out64/" + n, o, g["out64/" + n])
    pred = tc.predict(outs[0], outs[1])
    target = y.argmax(-1)
    acc = 100.0 * (pred == target).sum().item() / pred.numel()
    ok = torch.equal(pred, g["out/pred"]) and torch.equal(target, g["out/target"])
    print(f"  {'ok  ' if ok else 'FAIL'} pred/target identical; accuracy {acc!r} "
          f"(golden {g['out/accuracy'].item()!r})")
    if not ok or abs(acc - g["out/accuracy"].item()) > 1e-12:
        failures.append("pred/accuracy")

    # ---- train-mode losses, gradients, one clip+Adam step -------------------------------------
    print("train mode, dropout 0: losses vs loss/*")
    model.train()
    tc.set_dropout(model, 0.0)
    outs_t = model(v, a, noise)
    for i, (n, o) in enumerate(zip(names, outs_t)):
        if not torch.equal(o.detach(), outs[i]):
            d = (o.detach() - outs[i]).abs().max().item()
            print(f"  note: train-mode {n} differs from eval by {d:.1e}")
    losses = tc.compute_losses(outs_t, y, contrastive=True, contras_coeff=1.0)
    for n in ["loss_is_event", "loss_event_class", "loss_gate", "loss_cas", "loss_contrastive",
              "total"]:
        check("loss/" + n, losses[n].reshape(1), g["loss/" + n])

    print("gradients (before clipping)")
    losses["total"].backward()
    params = dict(model.named_parameters())
    sd_keys = [k[len("module."):] for k in key_order]
    gn = torch.stack([params[k].grad.norm() if params[k].grad is not None
                      else torch.zeros((), dtype=torch.float64) for k in sd_keys])
    is_none = torch.tensor([params[k].grad is None for k in sd_keys], dtype=torch.uint8)
    ok = torch.equal(is_none, g["grad_is_none"])
    print(f"  {'ok  ' if ok else 'FAIL'} grad-is-None pattern identical ({int(is_none.sum())} unused)")
    if not ok:
        failures.append("grad_is_none")
    check("grad_norms (rel to max(1,|ref|))", gn, g["grad_norms"], rel=True)
    for k in g:
        if k.startswith("grad/"):
            ref = g[k].double()  # stored as f32: compare at f32 rounding level
            got = params[k[len("grad/module."):]].grad
            d = ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
            ok = d <= 1e-6
            print(f"  {'ok  ' if ok else 'FAIL'} {k[5:]:60s} (f32 ref) rel {d:.1e}")
            if not ok:
                failures.append(k)

    print("clip_grad_norm_(0.5) + Adam(7e-4) step")
    old = {k: p.detach().clone() for k, p in params.items()}
    opt = tc.make_optimizer(model)
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    check("global_grad_norm", gnorm.reshape(1), g["global_grad_norm"], rel=True)
    opt.step()
    un = torch.stack([(params[k].detach() - old[k]).norm() for k in sd_keys])
    check("update_norms", un, g["update_norms"])
    for k in g:
        if k.startswith("after_step/"):
            check(k, params[k[len("after_step/module."):]], g[k])

    if failures:
        print(f"FAILED: {failures}")
        sys.exit(1)
    print("ALL CHECKS PASSED")


if __name__ == "__main__":
    main()
