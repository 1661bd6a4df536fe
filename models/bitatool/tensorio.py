"""Tensors exchanged with Node tests and tools: `<dir>/index.json` + one raw little-endian file each.

index.json: {name: {"dtype": "float32"|"int64"|"int32", "shape": [...], "file": "name.bin"}}.
Node reads them without any npy parser (test/toolchain/helpers.ts).
"""
from __future__ import annotations

import json
import os

import numpy as np


def write_tensors(out_dir: str, tensors: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    index = {}
    for name, t in tensors.items():
        a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<")))
        fname = name + ".bin"
        a.tofile(os.path.join(out_dir, fname))
        index[name] = {"dtype": str(a.dtype.name), "shape": list(a.shape), "file": fname}
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(index, f, indent=1)


def read_tensors(in_dir: str) -> dict:
    with open(os.path.join(in_dir, "index.json")) as f:
        index = json.load(f)
    return {n: np.fromfile(os.path.join(in_dir, e["file"]), dtype=np.dtype(e["dtype"]).newbyteorder("<")).reshape(e["shape"])
            for n, e in index.items()}
