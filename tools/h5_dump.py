#!/usr/bin/env python3
"""Reads one dataset with h5py and writes its values, for tests/h5_files.rs's cross-check.

    python3 tools/h5_dump.py FILE KEY OUT

OUT gets one header line `dtype shape...` (numpy's dtype name, e.g. `float32 30 10 128`), then
the values as little-endian bytes of that dtype in C order. Needs h5py (`pip install h5py`).
"""
import sys

import h5py
import numpy as np

path, key, out = sys.argv[1:4]
with h5py.File(path, "r") as f:
    a = np.ascontiguousarray(f[key][()])
dt = a.dtype.newbyteorder("<")
with open(out, "wb") as o:
    o.write((" ".join([dt.name] + [str(d) for d in a.shape]) + "\n").encode())
    o.write(a.astype(dt).tobytes())
