#!/usr/bin/env python3
"""Load .pth files with PyTorch's own safe loader and list what is inside.

    /work/venv-torch/bin/python tools/check_pth_with_torch.py PATH [PATH...]

Each file goes through `torch.load(path, map_location="cpu", weights_only=True)`, the loader that
refuses anything but tensors and plain containers. Prints every tensor's key, shape and dtype; a
nested dict (such as the official checkpoints' `{"I_state_dict": {...}}`) is listed with dotted
keys under its name. Exits 1 if any file fails to load (the error is printed), 0 otherwise.
"""

import sys

import torch


def walk(obj, prefix, out):
    if isinstance(obj, torch.Tensor):
        out.append(f"{prefix or '<tensor>'}  {list(obj.shape)}  {str(obj.dtype).replace('torch.', '')}")
    elif isinstance(obj, dict):
        if not obj:
            out.append(f"{prefix or '<root>'}  (empty dict)")
        for k, v in obj.items():
            walk(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            walk(v, f"{prefix}[{i}]", out)
    else:
        out.append(f"{prefix or '<root>'}  {type(obj).__name__}: {obj!r:.80}")


def main(paths):
    if not paths:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - report any failure and go on to the next file
            print(f"{path}: FAILED: {type(e).__name__}: {e}")
            failed += 1
            continue
        lines = []
        walk(obj, "", lines)
        kind = type(obj).__name__
        if isinstance(obj, dict) and isinstance(obj.get("I_state_dict"), dict):
            kind += f", I_state_dict with {len(obj['I_state_dict'])} entries"
        print(f"{path}: OK ({kind}, {len(lines)} entries)")
        for line in lines:
            print(f"  {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
