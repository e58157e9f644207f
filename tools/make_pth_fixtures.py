#!/usr/bin/env python3
"""Writes the small checkpoint fixtures of src/pth.rs's tests into tests/fixtures/.

Dev tool only: the crate never runs Python. Needs real PyTorch (fixtures were made with
torch 2.15.0, CPU; see tools/torch_cpu_stubs.sh for using the PyPI wheel without CUDA):
    LD_LIBRARY_PATH=/tmp/cudastub python tools/make_pth_fixtures.py

Outputs (all < 50 KB):
  tiny_f32.pth            zip-format state dict (torch.save default), many dtypes, views
  tiny_f32.expected.json  every element of every tensor of tiny_f32.pth, in key order
  tiny_legacy.pth         the same state dict, legacy format (_use_new_zipfile_serialization=False)
  wrapped_model.pth       {"model": small state dict, "iteration": 5, "optimizer": SGD state}
  wrapped_model.expected.json
  evil_os_system.pth      zip-format file whose data.pkl calls posix.system (never executed)
  evil_eval_legacy.pth    legacy-format file whose object pickle calls builtins.eval (protocol 4)
  tiny_f32_truncated.pth  the first 60% of tiny_f32.pth
"""
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "Bool",
}


def expected(sd):
    out = {"torch_version": torch.__version__, "order": list(sd.keys()), "tensors": {}}
    for k, t in sd.items():
        t = t.detach()
        out["tensors"][k] = {
            "shape": list(t.shape),
            "dtype": DTYPE_NAMES[t.dtype],
            "contiguous": t.is_contiguous(),
            # f32 is what PthTensor holds; f64 what the f64 reader gives (exact for all these)
            "f32": [float(x) for x in t.to(torch.float32).flatten().tolist()],
            "f64": [float(x) for x in t.to(torch.float64).flatten().tolist()],
        }
    return out


def tiny_state_dict():
    g = torch.Generator().manual_seed(1234)
    w = torch.randn(4, 3, generator=g)
    base = torch.arange(20, dtype=torch.float32).reshape(4, 5) / 8.0
    sd = {}
    sd["layer.weight"] = w
    sd["layer.bias"] = torch.randn(4, generator=g)
    sd["scale"] = torch.tensor(2.5)  # 0-dim
    sd["steps"] = torch.tensor([1, -2, 3, 2**40 + 1, -(2**53)], dtype=torch.int64)
    sd["layer.weight_t"] = w.t()  # non-contiguous view sharing w's storage
    sd["base"] = base
    sd["base_slice"] = base[1:3, 2:]  # view with storage offset 7 and strides (5, 1)
    sd["base_col"] = base[:, 3]  # view with offset 3 and stride 5
    sd["double"] = torch.tensor([[0.1, -1.0 / 3.0, 1e-40], [1e30, 2.0**-30, 123456789.123]],
                                dtype=torch.float64)
    sd["half"] = torch.tensor([1.0, -0.5, 65504.0, 6e-8, 0.0, -2.0**-14], dtype=torch.float16)
    sd["bf16"] = torch.tensor([1.0, -3.140625, 1e38, -1e-38], dtype=torch.bfloat16)
    sd["flags"] = torch.tensor([True, False, True])
    sd["u8"] = torch.tensor([0, 7, 255], dtype=torch.uint8)
    sd["i8"] = torch.tensor([-128, 0, 127], dtype=torch.int8)
    sd["i16"] = torch.tensor([-32768, 1, 32767], dtype=torch.int16)
    sd["i32"] = torch.tensor([-(2**31), 5, 2**31 - 1], dtype=torch.int32)
    sd["empty"] = torch.zeros(0, 3)
    sd["expanded"] = torch.tensor([1.5, -2.5, 3.5]).expand(2, 3)  # stride (0, 1)
    sd["param"] = torch.nn.Parameter(torch.tensor([[0.25, -0.75]]))  # _rebuild_parameter
    return sd


def main():
    os.makedirs(OUT, exist_ok=True)
    sd = tiny_state_dict()

    p = os.path.join(OUT, "tiny_f32.pth")
    torch.save(sd, p)
    with open(os.path.join(OUT, "tiny_f32.expected.json"), "w") as f:
        json.dump(expected(sd), f, indent=0)

    torch.save(sd, os.path.join(OUT, "tiny_legacy.pth"), _use_new_zipfile_serialization=False)

    # (b) a dict-wrapped state dict, with a real optimizer's state dict beside it
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    with torch.no_grad():
        for i, prm in enumerate(model.parameters()):
            prm.copy_(torch.linspace(-1, 1, prm.numel()).reshape(prm.shape) * (i + 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for i, prm in enumerate(model.parameters()):  # fixed gradients; no autograd needed
        prm.grad = torch.full_like(prm, 0.5 * (i + 1))
    opt.step()
    msd = model.state_dict()
    torch.save({"iteration": 5, "model": msd, "optimizer": opt.state_dict(), "note": "hi"},
               os.path.join(OUT, "wrapped_model.pth"))
    with open(os.path.join(OUT, "wrapped_model.expected.json"), "w") as f:
        json.dump(expected(msd), f, indent=0)

    # (d) malicious pickles. These classes only *describe* calls; nothing here runs them.
    class EvilSystem:
        def __reduce__(self):
            return (os.system, ("echo pwned-by-pickle",))

    class EvilEval:
        def __reduce__(self):
            return (eval, ("__import__('os').system('echo pwned-by-pickle')",))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl",
                   pickle.dumps({"ok": 1.0, "layer": {"weight": EvilSystem()}}, protocol=2))
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    with open(os.path.join(OUT, "evil_os_system.pth"), "wb") as f:
        f.write(buf.getvalue())

    with open(os.path.join(OUT, "evil_eval_legacy.pth"), "wb") as f:
        f.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True,
                              "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
        f.write(pickle.dumps({"w": [1, 2, EvilEval()]}, protocol=4))  # STACK_GLOBAL
        f.write(pickle.dumps([], protocol=2))

    # (e) a truncated copy of (a)
    data = open(p, "rb").read()
    with open(os.path.join(OUT, "tiny_f32_truncated.pth"), "wb") as f:
        f.write(data[: len(data) * 6 // 10])

    # self-check: torch reads back what it wrote
    for name in ["tiny_f32.pth", "tiny_legacy.pth"]:
        back = torch.load(os.path.join(OUT, name), weights_only=True)
        assert list(back) == list(sd)
        for k in sd:
            assert torch.equal(back[k], sd[k].detach()), k
    for name in sorted(os.listdir(OUT)):
        size = os.path.getsize(os.path.join(OUT, name))
        assert size < 50_000, (name, size)
        print(f"{size:8d}  {name}")


if __name__ == "__main__":
    sys.exit(main())
