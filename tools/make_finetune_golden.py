#!/usr/bin/env python3
"""Golden vectors for the image-encoder fine-tuning step, made by the official code.

Makes <out>/{vgg19bn_slim,resnet50_slim}.safetensors: two SGD steps of the official CACE-Net
AVELCLIP `clip.model.CLIP` as its `train` loop runs them (AVELCLIP/audioset_tagging_cnn/main.py:
`output, target = model(images, audio, args)`, loss = (CE(output, target) + CE(output.T, target))
/ 2, SGD(momentum 0.9, weight_decay 1e-4), zero_grad / backward / step), in train mode (BatchNorm
on batch statistics; running stats updated with momentum 0.1 and the unbiased variance).

    python3 -m venv /work/venv-torch
    /work/venv-torch/bin/pip install torch==2.15.0 torchvision==0.29.2 numpy==2.4.6 \
        safetensors==0.8.0 h5py==3.16.0
    git -C <CACE-Net> archive HEAD AVELCLIP/audioset_tagging_cnn | tar -x -C /tmp/cace-official
    /work/venv-torch/bin/python tools/make_finetune_golden.py \
        --official /tmp/cace-official/AVELCLIP/audioset_tagging_cnn --out tests/fixtures/finetune

`clip/model.py` is imported, unmodified, from --official; none of its code is copied here. The
official code fine-tunes VGG19-BN only; resnet50_slim is the same step with `encoder_I` (torchvision
ResNet-50 without avgpool/fc) and `alignment_I` swapped in after construction. BatchNorm state and
(VGG) conv biases are randomised first, so that train and eval BatchNorm both matter.

lr is 0.05, not the official 1e-3, so that one step visibly moves float32 weights (weight decay
included: lr·wd·w must exceed a float32 ulp of w) and a wrong gradient or momentum shows.

Patched from this script, not in the official file, as the module only runs on its authors' machine:
* stub modules `pytorch`, `pytorch.models`, `pytorch.pytorch_utils`, `utils`, `utils.config` (the
  real ones need torchlibrosa and read a CSV at a hard-coded /home path), `librosa`, `tqdm`;
* `nn.Module.to(<cuda>)` and `Tensor.cuda()` are no-ops: CLIP moves its encoder to CUDA in
  `__init__` and its labels in `forward`, unconditionally;
* `clip.model.vgg19_bn` returns a slim, randomly initialised VGG19-BN (configuration "E"'s layer
  types and indices, few channels) instead of downloading the ImageNet weights.

Float32 gradients of ReLU/max-pool networks are only as exact as the kinks rounding does not flip:
each file's metadata `f64_rel_diff_*` holds how far these float32 results are from float64 on the
same inputs, each stage computed in float64 from the float32 state before it (worst per-tensor
||f32 - f64|| / ||f64||), a floor for the tolerances of a float32 re-implementation. Seed 1, not 0:
with seed 0 one such flip puts a VGG gradient 3.5e-3 from float64; of seeds 0-5, seed 1 keeps every
stage within 4e-4 of float64 with both 1 and 2 threads (which changes the summation order).
"""

import argparse
import copy
import json
import os
import sys
import types

import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.vgg import VGG, make_layers

LR, MOMENTUM, WEIGHT_DECAY, TAU = 0.05, 0.9, 1e-4, 0.2
B, T, A_DIM, HIDDEN, IMAGE = 4, 10, 128, 8, 64
VGG_CFG = [4, 4, "M", 8, 8, "M", 8, 8, 8, 8, "M", 16, 16, 16, 16, "M", 16, 16, 16, 16, "M"]
RESNET = {"stem": 8, "planes": [2, 4, 4, 8], "blocks": [3, 4, 6, 3]}
ARGS = argparse.Namespace(batch_size=B)  # the official forward reshapes audio with args.batch_size


def import_official(path):
    """`clip.model` from the official checkout, with its import-time dependencies stubbed."""
    def stub(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    stub("pytorch", __path__=[], models=stub("pytorch.models"),
         pytorch_utils=stub("pytorch.pytorch_utils", move_data_to_device=lambda x, device: x))
    stub("utils", __path__=[], config=stub("utils.config", classes_num=527))
    stub("librosa")
    try:
        import tqdm  # noqa: F401
    except ImportError:
        stub("tqdm", tqdm=lambda it=None, *a, **k: it)
    sys.path.insert(0, os.path.abspath(path))
    import clip.model  # a namespace package: the official folder has clip/_init_.py
    clip.model.vgg19_bn = slim_vgg19_bn
    return clip.model


def patch_cuda():
    """Make CLIP's unconditional CUDA moves no-ops on a machine without a GPU."""
    to = nn.Module.to

    def module_to(self, *args, **kwargs):
        dev = kwargs.get("device", args[0] if args else None)
        if isinstance(dev, (str, torch.device)) and torch.device(dev).type == "cuda":
            return self
        return to(self, *args, **kwargs)

    nn.Module.to = module_to
    torch.Tensor.cuda = lambda self, *args, **kwargs: self


def slim_vgg19_bn(weights=None, **kwargs):
    return VGG(make_layers(VGG_CFG, batch_norm=True), init_weights=True)


def slim_resnet50_backbone():
    r = ResNet(Bottleneck, [3, 4, 6, 3])
    r.conv1 = nn.Conv2d(3, RESNET["stem"], 7, stride=2, padding=3, bias=False)
    r.bn1 = nn.BatchNorm2d(RESNET["stem"])
    r.inplanes = RESNET["stem"]
    p, n = RESNET["planes"], RESNET["blocks"]
    r.layer1 = r._make_layer(Bottleneck, p[0], n[0])
    r.layer2 = r._make_layer(Bottleneck, p[1], n[1], stride=2)
    r.layer3 = r._make_layer(Bottleneck, p[2], n[2], stride=2)
    r.layer4 = r._make_layer(Bottleneck, p[3], n[3], stride=2)
    return nn.Sequential(*list(r.children())[:-2]), p[3] * Bottleneck.expansion


def build(official, backbone, seed):
    torch.manual_seed(seed)
    i_dim = [c for c in VGG_CFG if c != "M"][-1]
    model = official.CLIP(i_dim, A_DIM, HIDDEN, TAU, B, ARGS)
    meta = {"backbone": backbone}
    if backbone == "resnet50-slim":
        model.encoder_I, out_ch = slim_resnet50_backbone()
        model.alignment_I = nn.Linear(out_ch, HIDDEN, bias=False)
        meta.update(resnet_stem=str(RESNET["stem"]), resnet_planes=json.dumps(RESNET["planes"]),
                    resnet_blocks=json.dumps(RESNET["blocks"]))
    else:
        meta["vgg_cfg"] = json.dumps(VGG_CFG)
    with torch.no_grad():  # non-trivial BatchNorm state; conv biases (VGG's start at 0) for eval
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(3)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.1, 0.1)
    return model, meta


def state(prefix, model):
    return {f"{prefix}.{k}": v.detach().clone() for k, v in model.state_dict().items()}


def load(model, t, prefix):
    model.load_state_dict({k: t[f"{prefix}.{k}"] for k in model.state_dict()})


def train_step(model, optimizer, images, audio):
    """One iteration of the official `train` loop."""
    output, target = model(images, audio, ARGS)
    loss = (nn.functional.cross_entropy(output, target)
            + nn.functional.cross_entropy(output.T, target)) / 2.0
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return output.detach(), loss.detach().reshape(1)


def sgd(model):
    return torch.optim.SGD(model.parameters(), LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def golden(model, batches):
    t = state("init", model)
    model.train()
    optimizer = sgd(model)
    t["logits"], t["loss"] = train_step(model, optimizer, *batches[0])
    t.update({f"grad.{k}": p.grad.detach().clone() for k, p in model.named_parameters()
              if p.requires_grad})
    t.update(state("step1", model))
    _, t["loss2"] = train_step(model, optimizer, *batches[1])
    t.update(state("step2", model))
    with torch.no_grad():
        t["eval.features"] = model.eval().encoder_I(batches[0][0][0]).clone()
    return t


def float64_reference(model, t, batches):
    """Each stage again in float64, from the float32 golden state before it."""
    m = copy.deepcopy(model).double().train()
    (x1, a1), (x2, a2) = [(x.double(), a.double()) for x, a in batches]
    load(m, t, "init")
    r = dict(zip(["logits", "loss"], train_step(m, sgd(m), x1, a1)))
    r.update({f"grad.{k}": p.grad.clone() for k, p in m.named_parameters()})
    r.update(state("step1", m))
    load(m, t, "step1")
    optimizer = sgd(m)
    for k, p in m.named_parameters():  # SGD's first step leaves buf = grad + weight_decay * p0
        buf = t[f"grad.{k}"] + WEIGHT_DECAY * t[f"init.{k}"]
        optimizer.state[p]["momentum_buffer"] = buf.double()
    _, r["loss2"] = train_step(m, optimizer, x2, a2)
    r.update(state("step2", m))
    load(m, t, "step2")
    with torch.no_grad():
        r["eval.features"] = m.eval().encoder_I(x1[0])
    return r


def rel_diff(t, r, prefix):
    """Worst per-tensor ||t - r|| / ||r|| over the keys with this prefix, skipping tensors that
    are ~0 in r (conv biases in front of train-mode BatchNorm have an exactly zero gradient)."""
    keys = [k for k in r if k.startswith(prefix) and not k.endswith("num_batches_tracked")]
    norms = {k: r[k].norm().item() for k in keys}
    top = max(norms.values())
    return max((t[k].double() - r[k]).norm().item() / n for k, n in norms.items() if n > 1e-9 * top)


def make(official, backbone, seed, out_path):
    model, meta = build(official, backbone, seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    batches = [(torch.randn(B, T, 3, IMAGE, IMAGE, generator=gen),
                torch.randn(B, T, A_DIM, generator=gen)) for _ in range(2)]
    t = golden(model, batches)
    ref = float64_reference(model, t, batches)
    for name in ["logits", "loss", "grad", "step1", "step2", "eval"]:  # "loss": loss and loss2
        meta[f"f64_rel_diff_{name}"] = f"{rel_diff(t, ref, name):.1e}"
    t.update({"input.images": batches[0][0], "input.audio": batches[0][1],
              "input2.images": batches[1][0], "input2.audio": batches[1][1]})
    t = {k: v.float().contiguous() for k, v in t.items()}
    meta.update(seed=str(seed), lr=str(LR), momentum=str(MOMENTUM), weight_decay=str(WEIGHT_DECAY),
                tau=str(TAU), hidden_dim=str(HIDDEN), image_size=str(IMAGE), batch_size=str(B),
                frames=str(T), a_dim=str(A_DIM), torch_version=torch.__version__,
                torchvision_version=torchvision.__version__)
    save_file(t, out_path, metadata=meta)
    size, diffs = os.path.getsize(out_path), " ".join(
        f"{k[13:]} {v}" for k, v in meta.items() if k.startswith("f64_rel_diff_"))
    print(f"{backbone} seed {seed}: {len(t)} tensors, "
          f"{sum(p.numel() for p in model.parameters())} parameters, loss {t['loss'].item():.6f}, "
          f"loss2 {t['loss2'].item():.6f}, eval.features {list(t['eval.features'].shape)}, "
          f"{size} bytes ({size / 2**20:.2f} MiB); float32 vs float64: {diffs}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", required=True, help="the official AVELCLIP/audioset_tagging_cnn")
    ap.add_argument("--out", default="tests/fixtures/finetune")
    ap.add_argument("--seed", type=int, default=1, help="see the docstring")
    a = ap.parse_args()
    torch.set_num_threads(1)  # one summation order; and the machine is shared
    official = import_official(a.official)
    patch_cuda()
    os.makedirs(a.out, exist_ok=True)
    for backbone in ["vgg19bn-slim", "resnet50-slim"]:
        name = backbone.replace("-", "_") + ".safetensors"
        make(official, backbone, a.seed, os.path.join(a.out, name))


if __name__ == "__main__":
    main()
