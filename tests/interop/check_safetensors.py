#!/usr/bin/env python3
"""Load a fixpoint checkpoint with the PyPI `safetensors` and `numpy` packages and check
it against the expectation the Rust test wrote beside it.

usage: check_safetensors.py CHECKPOINT EXPECTED.json

EXPECTED.json: {"metadata": {key: value, ...},
                "tensors": {name: {"dtype": "float32"|"uint64", "shape": [...],
                                   "bits": [int, ...]}}}
where "bits" are the IEEE-754 bit patterns (float32) or the values (uint64), so the
comparison is exact. Exit status 0 when everything matches, 1 with one line per
problem otherwise.
"""
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def main() -> int:
    path, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path) as f:
        expected = json.load(f)
    problems = []
    tensors = load_file(path)
    want = expected["tensors"]
    if sorted(tensors) != sorted(want):
        problems.append(f"names differ: file {sorted(tensors)} vs expected {sorted(want)}")
    for name, spec in want.items():
        if name not in tensors:
            continue
        arr = tensors[name]
        if str(arr.dtype) != spec["dtype"]:
            problems.append(f"{name}: dtype {arr.dtype}, expected {spec['dtype']}")
            continue
        if list(arr.shape) != spec["shape"]:
            problems.append(f"{name}: shape {list(arr.shape)}, expected {spec['shape']}")
            continue
        bits = arr.view(np.uint32) if arr.dtype == np.float32 else arr
        if bits.reshape(-1).tolist() != spec["bits"]:
            problems.append(f"{name}: values differ")
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
    for key, value in expected["metadata"].items():
        if meta.get(key) != value:
            problems.append(f"metadata {key!r}: {meta.get(key)!r}, expected {value!r}")
    for p in problems:
        print(p)
    if not problems:
        print(f"ok: {len(tensors)} tensors and {len(expected['metadata'])} metadata entries match")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
