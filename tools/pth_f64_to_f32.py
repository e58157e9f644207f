#!/usr/bin/env python3
"""Rewrites a zip-format PyTorch checkpoint with float32 storages, as torch would write it.

    python3 tools/pth_f64_to_f32.py SRC DST

Python standard library only: torch is not needed (nor imported). The pickle is read with a
restricted unpickler that knows only the globals a state dict uses (anything else is refused,
nothing is executed) and written back with `torch.FloatStorage` wherever it said
`torch.DoubleStorage`; each float64 storage `data/<key>` is rounded to float32 (to nearest),
every other entry is copied unchanged. Entries are stored uncompressed with the storages
64-byte aligned, under a root folder named after DST (its name without the last extension),
as torch does. DST is written through a temporary file and renamed at the end.

tests/cli.rs uses it to make a float32 copy of the official float64 checkpoint at test time.
"""
import array
import collections
import io
import os
import pickle
import sys
import types
import zipfile

STORAGES = ["Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"]
REBUILDS = {
    "torch._utils": ["_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter",
                     "_rebuild_parameter_with_state"],
    "torch._tensor": ["_rebuild_from_type_v2"],
}
ALIGN = 64


def stub_function(module, name):
    """A stand-in for a torch rebuild function: calling it returns a Call that pickles back
    as the same call."""
    def fn(*args):
        return Call(fn, args)
    fn.__module__, fn.__qualname__, fn.__name__ = module, name, name
    return fn


def stub_modules():
    """Stand-ins for the torch globals, registered in sys.modules so that the pickler writes
    them back by name. Returns the `torch` stand-in."""
    mods = {"torch": types.ModuleType("torch")}
    for module, names in REBUILDS.items():
        m = mods.setdefault(module, types.ModuleType(module))
        for name in names:
            setattr(m, name, stub_function(module, name))
    for s in STORAGES:
        setattr(mods["torch"], s + "Storage", type(s + "Storage", (), {"__module__": "torch"}))
    sys.modules.update(mods)
    return mods["torch"]


class Call:
    """The result of a stand-in rebuild call; pickles as that call."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


class Storage:
    """A persistent storage reference: ('storage', type, key, location, numel)."""

    def __init__(self, pid):
        self.pid = pid


class Unpickler(pickle.Unpickler):
    """Knows only the globals of a state dict; reads every DoubleStorage as a FloatStorage
    and collects the keys of those storages in `doubles`."""

    def __init__(self, data, torch):
        super().__init__(io.BytesIO(data))
        self.torch, self.doubles = torch, set()

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        allowed = REBUILDS.get(module, []) + (
            [s + "Storage" for s in STORAGES] if module == "torch" else [])
        if name not in allowed:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return getattr(sys.modules[module], name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        tag, typ, key, location, numel = pid
        if typ is self.torch.DoubleStorage:
            self.doubles.add(key)
            typ = self.torch.FloatStorage
        return Storage((tag, typ, key, location, numel))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, Storage) else None


def convert_pickle(data, torch):
    """The pickle with DoubleStorage -> FloatStorage, and the keys of the converted storages."""
    up = Unpickler(data, torch)
    obj = up.load()
    out = io.BytesIO()
    Pickler(out, protocol=2).dump(obj)
    return out.getvalue(), up.doubles


def to_f32(raw):
    d = array.array("d")
    d.frombytes(raw)
    f = array.array("f", d)  # C cast: round to nearest, out of range -> inf
    if sys.byteorder == "big":
        f.byteswap()
    return f.tobytes()


def write_aligned(z, name, data):
    """A stored entry whose data starts at a multiple of ALIGN (padding in an extra field)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    header = 30 + len(name.encode()) + 4  # local header, name, extra field header
    pad = -(z.fp.tell() + header) % ALIGN
    info.extra = b"FB" + pad.to_bytes(2, "little") + b"Z" * pad
    z.writestr(info, data)


def convert(src, dst):
    torch = stub_modules()
    root = os.path.splitext(os.path.basename(dst))[0]
    tmp = f"{dst}.tmp{os.getpid()}"
    with zipfile.ZipFile(src) as zin:
        pkl_name = min((n for n in zin.namelist() if n.endswith("data.pkl")), key=len)
        old_root = pkl_name[: -len("data.pkl")]
        order = zin.read(old_root + "byteorder") if old_root + "byteorder" in zin.namelist() \
            else b"little"
        if order.strip() != b"little":
            raise SystemExit(f"{src}: only little-endian checkpoints are supported")
        pkl, doubles = convert_pickle(zin.read(pkl_name), torch)
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
            for name in zin.namelist():
                data = pkl if name == pkl_name else zin.read(name)
                rel = name[len(old_root):]
                if rel.startswith("data/") and rel[len("data/"):] in doubles:
                    data = to_f32(data)
                write_aligned(zout, root + "/" + rel, data)
    os.replace(tmp, dst)


def main(argv):
    if len(argv) != 3:
        raise SystemExit(__doc__.strip().splitlines()[2].strip())
    if not zipfile.is_zipfile(argv[1]):
        raise SystemExit(f"{argv[1]}: not a zip-format checkpoint")
    convert(argv[1], argv[2])


if __name__ == "__main__":
    main(sys.argv)
