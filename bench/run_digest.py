"""Is a run folder the same as another? sha256 of its tables and of every array of every Zarr store in it.

A refactor that must not change results (same seed, same commands) is checked by running the demo before and
after and comparing the two folders::

    synbt demo --out runs/demo_before          # on the old commit
    synbt demo --out runs/demo_after           # on the new commit
    python -m bench.run_digest runs/demo_before runs/demo_after

With one folder it prints the digest as JSON. With two it prints how many entries differ, names them, and exits
1 when any does. Arrays are compared by their decoded bytes (dtype and shape included), so a change of codec or
chunking alone does not count; timings, timestamps and paths in attributes are not compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import zarr

TABLES = ("eval_table.md", "eval_table.csv")


def _array_digest(array: zarr.Array) -> str:
    data = np.ascontiguousarray(array[...])
    head = f"{data.dtype.str}{data.shape}".encode()
    return hashlib.sha256(head + data.tobytes()).hexdigest()


def run_digest(run: Path) -> dict[str, str]:
    """``{table or store/array path: sha256}`` for the tables and every array of every ``*.zarr`` in ``run``."""
    out = {name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in TABLES if (run / name).is_file()}
    for store in sorted(run.glob("*.zarr")):

        def walk(group: zarr.Group, prefix: str, store_name: str = store.name) -> None:
            for name, array in sorted(group.arrays()):
                out[f"{store_name}/{prefix}{name}"] = _array_digest(array)
            for name, sub in sorted(group.groups()):
                walk(sub, f"{prefix}{name}/")

        walk(zarr.open_group(str(store), mode="r"), "")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="one run folder (print its digest) or two (compare)")
    args = parser.parse_args(argv)
    if len(args.runs) > 2:
        parser.error("give one or two run folders")
    first = run_digest(args.runs[0])
    if len(args.runs) == 1:
        print(json.dumps(first, indent=1))
        return 0
    second = run_digest(args.runs[1])
    differ = sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))
    print(f"{len(first)} vs {len(second)} entries; {len(differ)} differ")
    for key in differ:
        print(f"  differs: {key}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
