#!/usr/bin/env python3
"""Writes the h5py fixtures of tests/h5_files.rs (dev tool; the crate never runs Python).

    pip install h5py numpy
    python3 tools/make_h5_fixtures.py             # small AVE-layout dirs under tests/fixtures/h5py
    python3 tools/make_h5_fixtures.py --big DIR   # a >4 GiB float64 visual_feature.h5 (sparse)

Every value is `value(i)` of its flat index `i` (exact in float32 and float64), so the Rust test
recomputes them without a copy of the data. Each directory is a complete AVE layout (visual
[N,10,7,7,C], audio [N,10,A], labels [N,10,29] one-hot, three order files), written the way the
real AVE files were (h5py defaults: superblock v0, contiguous) or with the options h5py users
reach for (chunked + gzip + shuffle, libver latest, other integer widths).
"""
import argparse
import os

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "h5py")
N, T, C, A = 6, 10, 4, 8


def value(n, start=0):
    """Elements start..n of every feature file: ((i * 7919) % 1000) / 64 - 7 (exact in float32)."""
    i = np.arange(start, n, dtype=np.int64)
    return ((i * 7919) % 1000).astype(np.float64) / 64.0 - 7.0


def labels():
    lab = np.zeros((N, T, 29))
    for r in range(N):
        for t in range(T):
            lab[r, t, 28 if (r + t) % 3 == 0 else (r * 5 + t) % 28] = 1.0
    return lab


# name -> (feature dtype, label dtype, order dtype, dataset options, file options)
VARIANTS = {
    "contiguous_f64": ("f8", "f4", "i8", {}, {}),
    "contiguous_f32": ("f4", "f8", "i8", {}, {}),
    "chunked_gzip_f32": ("f4", "f4", "i4",
                         {"chunks": True, "compression": "gzip", "shuffle": True}, {}),
    "chunked_gzip_f64_latest": ("f8", "u1", "u2",
                                {"chunks": True, "compression": "gzip", "compression_opts": 9},
                                {"libver": "latest"}),
}


def write(path, key, data, dtype, opts, fopts):
    with h5py.File(path, "w", **fopts) as f:
        f.create_dataset(key, data=data.astype(dtype), **(opts if data.ndim > 1 else {}))


def small():
    vshape, ashape = (N, T, 7, 7, C), (N, T, A)
    orders = {"train": [4, 0, 2], "val": [1], "test": [5, 3]}
    for name, (fdt, ldt, odt, opts, fopts) in VARIANTS.items():
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        nv = int(np.prod(vshape))
        write(os.path.join(d, "visual_feature.h5"), "avadataset",
              value(nv).reshape(vshape), fdt, opts, fopts)
        write(os.path.join(d, "audio_feature.h5"), "avadataset",
              value(int(np.prod(ashape))).reshape(ashape), fdt, opts, fopts)
        write(os.path.join(d, "labels.h5"), "avadataset", labels(), ldt, opts, fopts)
        for split, idx in orders.items():
            write(os.path.join(d, f"{split}_order.h5"), "order", np.array(idx), odt, {}, fopts)
        print("wrote", d)


def big(d, rows=2200):
    """visual_feature.h5 [rows,10,7,7,512] float64 = 4.4 GB (> 4 GiB) for 2200 rows; only the rows in
    MARKED are written (value(i) of their flat index), the rest stay unallocated (zeros)."""
    os.makedirs(d, exist_ok=True)
    row_len = T * 7 * 7 * 512
    marked = [0, 1, rows // 2, rows - 2, rows - 1]
    with h5py.File(os.path.join(d, "visual_feature.h5"), "w") as f:
        ds = f.create_dataset("avadataset", (rows, T, 7, 7, 512), dtype="f8")
        for r in marked:
            flat = value(row_len * (r + 1), row_len * r)
            ds[r] = flat.reshape(T, 7, 7, 512)
    with h5py.File(os.path.join(d, "audio_feature.h5"), "w") as f:
        f.create_dataset("avadataset", data=value(rows * T * 128).reshape(rows, T, 128))
    for split, idx in {"train": range(0, rows, 2), "val": range(1, rows, 4),
                       "test": range(3, rows, 4)}.items():
        with h5py.File(os.path.join(d, f"{split}_order.h5"), "w") as f:
            f.create_dataset("order", data=np.array(list(idx), dtype=np.int64))
    with open(os.path.join(d, "marked_rows.txt"), "w") as f:
        f.write(" ".join(map(str, marked)) + "\n")
    print("wrote", d, os.path.getsize(os.path.join(d, "visual_feature.h5")), "bytes")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", metavar="DIR")
    a = ap.parse_args()
    big(a.big) if a.big else small()
