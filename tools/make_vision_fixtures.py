#!/usr/bin/env python3
"""Test data for the image encoders (src/encoders/{image,vgg19,resnet50}.rs).

Regenerate the committed fixtures (tests/fixtures/encoders/vision/) with:

    pip install --no-deps --target /tmp/tvpkgs torchvision==0.29.2 pillow
    PYTHONPATH=/tmp/tvpkgs LD_LIBRARY_PATH=/tmp/cudastub2 python3 tools/make_vision_fixtures.py

and the one-off full-size check (random-weight VGG19 / ResNet-50, ~700 MB, outside the repo):

    PYTHONPATH=/tmp/tvpkgs LD_LIBRARY_PATH=/tmp/cudastub2 \
        python3 tools/make_vision_fixtures.py --full /tmp/cace-vision-full
    CACE_VISION_FULL_DIR=/tmp/cace-vision-full cargo test --release --test encoders_vision \
        -- --ignored --nocapture

(torchvision 0.29.2 was built for torch 2.14; its Python parts — the model classes and the tensor
transforms used here — run on torch 2.15. LD_LIBRARY_PATH points at stub CUDA libraries this
machine's torch build needs.)

The networks are torchvision's own classes, so the state-dict keys are torchvision's: VGG19 is
`torchvision.models.vgg.VGG` over `make_layers` with VGG19's layout (configuration "E") and slim
widths; ResNet-50 is `torchvision.models.resnet.ResNet` with `Bottleneck` blocks [3, 4, 6, 3] and
slim widths (a subclass whose `__init__` picks the widths and reuses `_make_layer`). Weights are
random (seeded); BatchNorm gets random γ/β and running statistics from one train-mode pass over
random inputs, so folding and eval-mode BN are exercised with non-trivial numbers.

References: preprocessing in float32 exactly as the PyTorch ops the Rust code documents (antialiased
bilinear `interpolate` on the frame as float in [0, 255], torchvision `resize`/`center_crop` for
ResNet-50, then /255 and `F.normalize`); encoder outputs in float64 from those float32 inputs
(`model.double()`), so a test's error is the Rust f32 error alone. Everything goes into one
safetensors file per purpose (the crate already reads safetensors):

* frames.safetensors — `frame_{i}` uint8 `[H, W, 3]` (97×131, 240×320, 250×160, and 232×250, for
  which ResNet-50's resize is the identity);
  `grid` int64 `[G]`; `pre_{vgg19,resnet50}_{i}` float32 `[3, G, G]` = the preprocessed
  `[3, 224, 224]` at rows and columns `grid` (the full tensors would be 4.8 MB; the grid keeps the
  first and last three rows/columns, where edge handling matters, and every fourth between).
* outputs.safetensors — encoder outputs for the mean over the four frames:
  `vgg19` `[7, 7, C]`, `resnet50` `[7, 7, C]`, `resnet50_pooled` `[C]`.
* vgg19_slim.pth (with a slim `classifier.*`, to be ignored), vgg19_slim_missing_key.pth (without
  `features.30.bias`), resnet50_slim.pth (torchvision keys, with `fc.*` and
  `num_batches_tracked`), resnet50_slim_cace.pth (`{"I_state_dict": Sequential keys}`), resnet50_slim_cace_ddp.pth (the same
  with DistributedDataParallel's `module.` prefix).
* slim.json — the slim widths, for the Rust configs.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from safetensors.torch import save_file
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.vgg import VGG, make_layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "encoders", "vision")

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
VGG19_CONVS = [2, 2, 4, 4, 4]

SLIM_VGG = [8, 16, 16, 32, 32]
SLIM_RESNET = {"stem": 8, "planes": [4, 8, 8, 16], "blocks": [3, 4, 6, 3]}
FRAME_SIZES = [(97, 131), (240, 320), (250, 160), (232, 250)]  # (height, width)


def vgg(widths):
    """torchvision VGG over VGG19's layout with the given block widths."""
    cfg = []
    for n, w in zip(VGG19_CONVS, widths):
        cfg += [w] * n + ["M"]
    model = VGG(make_layers(cfg), init_weights=True)
    if widths[-1] != 512:
        # The stock classifier expects 512·7·7 inputs (and has 120 M weights): swap in one of the
        # same structure (keys classifier.{0,3,6}) sized for the slim network.
        model.classifier = nn.Sequential(
            nn.Linear(widths[-1] * 49, 8), nn.ReLU(True), nn.Dropout(),
            nn.Linear(8, 8), nn.ReLU(True), nn.Dropout(),
            nn.Linear(8, 10),
        )
    with torch.no_grad():
        for m in model.features:
            if isinstance(m, nn.Conv2d):
                m.bias.uniform_(-0.1, 0.1)
    return model


class SlimResNet(ResNet):
    """torchvision ResNet with Bottleneck blocks and chosen widths (torchvision hard-codes 64)."""

    def __init__(self, stem, planes, blocks, num_classes=10):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = stem, 1, 1, 64
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(Bottleneck, planes[0], blocks[0])
        self.layer2 = self._make_layer(Bottleneck, planes[1], blocks[1], stride=2)
        self.layer3 = self._make_layer(Bottleneck, planes[2], blocks[2], stride=2)
        self.layer4 = self._make_layer(Bottleneck, planes[3], blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes[3] * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def randomise_bn(model, gen, batch):
    """Random γ/β, then running statistics from one train-mode pass (momentum 1)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
            m.momentum = 1.0
        model.train()
        model(torch.randn(batch, 3, 224, 224, generator=gen))
        for m in bns:
            m.momentum = 0.1
    model.eval()


def backbone(model):
    """The official extractor's `Sequential(*list(resnet50.children())[:-2])`."""
    return nn.Sequential(*list(model.children())[:-2])


def make_frame(h, w, seed):
    """A smooth pattern with noise and some saturated pixels, HWC uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(3):
        v = (128 + 90 * np.sin(x * (0.11 + 0.05 * c) + c) + 70 * np.cos(y * (0.07 + 0.03 * c))
             + rng.normal(0, 25, (h, w)))
        chans.append(v)
    return np.clip(np.stack(chans, -1), 0, 255).round().astype(np.uint8)


def as_float_chw(frame):
    return torch.from_numpy(frame).permute(2, 0, 1).contiguous().float()


def normalise(x):
    return TF.normalize(x / 255, MEAN, STD)


def pre_vgg19(frame):
    x = as_float_chw(frame)[None]
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    return normalise(x[0])


def pre_resnet50(frame):
    x = as_float_chw(frame)
    # torchvision's tensor path on a float image: interpolate(antialias=True), no uint8 rounding.
    x = TF.resize(x, [232], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    x = TF.center_crop(x, [224])
    return normalise(x)


def check_against_official(frames):
    """How far the float path is from torchvision's official uint8-tensor and PIL pipelines."""
    from PIL import Image
    from torchvision.models import ResNet50_Weights

    official = ResNet50_Weights.IMAGENET1K_V2.transforms()
    for f in frames:
        ours = pre_resnet50(f)
        u8 = official(torch.from_numpy(f).permute(2, 0, 1).contiguous())
        pil = official(Image.fromarray(f))
        print(f"  {f.shape[0]}x{f.shape[1]}: max |ours - official uint8 tensor| "
              f"{(ours - u8).abs().max():.4f}, |ours - official PIL| {(ours - pil).abs().max():.4f}"
              " (normalised units)")


def encoder_outputs(vgg_model, resnet_model, vgg_in, resnet_in):
    """float64 outputs for the mean over frames, channels last; and the float32 ones for scale."""
    out = {}
    with torch.no_grad():
        for name, model, x in [("vgg19", vgg_model.features, vgg_in),
                               ("resnet50", backbone(resnet_model), resnet_in)]:
            ref = model.double()(x.double()).mean(0)  # [C, 7, 7]
            f32 = model.float()(x).mean(0)
            err = ((f32.double() - ref).abs().max() / ref.abs().max()).item()
            print(f"  {name}: PyTorch float32 vs float64, max error / max |ref| = {err:.2e}")
            out[name] = ref.permute(1, 2, 0).float().contiguous()
            if name == "resnet50":
                out["resnet50_pooled"] = ref.mean((1, 2)).float().contiguous()
    return out


def save_pth(state_dict, path):
    torch.save(state_dict, path)
    print(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1e3:.0f} kB)")


def slim(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(2)

    frames = [make_frame(h, w, seed=10 + i) for i, (h, w) in enumerate(FRAME_SIZES)]
    grid = sorted(set(range(0, 224, 4)) | {1, 2, 221, 222, 223})
    g = torch.tensor(grid, dtype=torch.int64)
    pre = {"vgg19": [pre_vgg19(f) for f in frames], "resnet50": [pre_resnet50(f) for f in frames]}
    tensors = {"grid": g}
    for i, f in enumerate(frames):
        tensors[f"frame_{i}"] = torch.from_numpy(f)
        for kind, xs in pre.items():
            tensors[f"pre_{kind}_{i}"] = xs[i][:, g][:, :, g].contiguous()
    save_file(tensors, os.path.join(out_dir, "frames.safetensors"))
    print("preprocessing vs torchvision's official ResNet50 transforms:")
    check_against_official(frames)

    vgg_model = vgg(SLIM_VGG).eval()
    resnet_model = SlimResNet(**SLIM_RESNET)
    randomise_bn(resnet_model, gen, batch=4)

    sd = vgg_model.state_dict()
    save_pth(sd, os.path.join(out_dir, "vgg19_slim.pth"))
    missing = {k: v for k, v in sd.items() if k != "features.30.bias"}
    save_pth(missing, os.path.join(out_dir, "vgg19_slim_missing_key.pth"))
    save_pth(resnet_model.state_dict(), os.path.join(out_dir, "resnet50_slim.pth"))
    cace = backbone(resnet_model).state_dict()
    save_pth({"I_state_dict": cace}, os.path.join(out_dir, "resnet50_slim_cace.pth"))
    # As saved from inside DistributedDataParallel (keys prefixed `module.`).
    save_pth({"I_state_dict": {f"module.{k}": v for k, v in cace.items()}},
             os.path.join(out_dir, "resnet50_slim_cace_ddp.pth"))

    print("encoder references:")
    outs = encoder_outputs(vgg_model, resnet_model,
                           torch.stack(pre["vgg19"]), torch.stack(pre["resnet50"]))
    save_file(outs, os.path.join(out_dir, "outputs.safetensors"))
    with open(os.path.join(out_dir, "slim.json"), "w") as fh:
        json.dump({"vgg19_widths": SLIM_VGG, "resnet50": SLIM_RESNET}, fh, indent=1)
        fh.write("\n")


def full(out_dir):
    """Full-size random-weight networks and references for the ignored full-size test."""
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(4)
    frames = [make_frame(h, w, seed=20 + i) for i, (h, w) in enumerate([(240, 320), (360, 480)])]
    save_file({f"frame_{i}": torch.from_numpy(f) for i, f in enumerate(frames)},
              os.path.join(out_dir, "frames.safetensors"))

    from torchvision.models import resnet50, vgg19
    vgg_model = vgg19().eval()
    with torch.no_grad():
        for m in vgg_model.features:
            if isinstance(m, nn.Conv2d):
                m.bias.uniform_(-0.1, 0.1)
    save_pth(vgg_model.state_dict(), os.path.join(out_dir, "vgg19.pth"))
    del vgg_model.classifier  # 120 M weights the features do not use

    resnet_model = resnet50()
    randomise_bn(resnet_model, gen, batch=4)
    save_pth(resnet_model.state_dict(), os.path.join(out_dir, "resnet50.pth"))

    print("encoder references:")
    outs = encoder_outputs(vgg_model, resnet_model,
                           torch.stack([pre_vgg19(f) for f in frames]),
                           torch.stack([pre_resnet50(f) for f in frames]))
    save_file(outs, os.path.join(out_dir, "outputs.safetensors"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", metavar="DIR", help="write full-size networks + references to DIR")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.full:
        full(args.full)
    else:
        slim(OUT)


if __name__ == "__main__":
    sys.exit(main())
