"""Store bench: codec and chunk-size comparison, write MB/s next to a raw disk write, bytes per case.

    python -m bench.store_bench [--prepared datasets/phantom.zarr] [--cases 6]

Uses real prepared cases when a prepared store is given (realistic compression), else makes a
phantom on the fly (``small`` preset, prepared at the paper's field of view).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import save_result
from synbt_factory.store import CaseStore, StoreLayout


def _cases(prepared: str | None, n: int, workdir: Path) -> list[tuple[dict[str, np.ndarray], dict]]:
    if prepared is None:
        from synbt_factory.data.prepare import prepare_dataset
        from synbt_factory.phantom import write_phantom

        write_phantom(workdir / "ph", n=n, seed=0, size="default", healthy_fraction=0.0)
        prepare_dataset(workdir / "ph", workdir / "p.zarr", workers=2)
        prepared = str(workdir / "p.zarr")
    store = CaseStore.open(prepared)
    out = []
    for case_id in store.case_ids()[:n]:
        arrays, attrs = store.read_case(case_id, ("image", "mask"))
        arrays["synthetic_mask"] = arrays["mask"].copy()
        out.append((arrays, {"affine": attrs["affine"], "spacing": attrs["spacing"]}))
    return out


def _raw_disk_mb_s(workdir: Path, nbytes: int) -> float:
    data = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8).tobytes()
    path = workdir / "raw.bin"
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    dt = time.perf_counter() - t0
    path.unlink()
    return nbytes / dt / 1e6


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", default=None)
    parser.add_argument("--cases", type=int, default=6)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="synbt-store-bench-"))
    try:
        cases = _cases(args.prepared, args.cases, workdir)
        raw_bytes = sum(sum(a.nbytes for a in arrays.values()) for arrays, _ in cases)
        variants = []
        for codec in ("zstd", "blosc-lz4", "blosc-zstd"):
            for chunk in (32, 64, 128):
                for level in ((1, 3) if codec != "blosc-lz4" else (5,)):
                    layout = StoreLayout(chunk=chunk, codec=codec, level=level)
                    path = workdir / f"{codec}-{chunk}-{level}.zarr"
                    store = CaseStore.create(path, kind="synthetic", card={}, layout=layout)
                    t0 = time.perf_counter()
                    for i, (arrays, attrs) in enumerate(cases):
                        store.write_case(f"SYN_{i:06d}", arrays, attrs)
                    write_s = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    for i in range(len(cases)):
                        store.read_case(f"SYN_{i:06d}", ("image", "mask", "synthetic_mask"))
                    read_s = time.perf_counter() - t0
                    size = _du(path)
                    variants.append({
                        "codec": codec, "chunk": chunk, "level": level,
                        "write_MB_s": raw_bytes / write_s / 1e6, "read_MB_s": raw_bytes / read_s / 1e6,
                        "bytes_per_case": size / len(cases), "compression_ratio": raw_bytes / size,
                    })
                    print(variants[-1])
                    shutil.rmtree(path)
        figures = {
            "cases": len(cases),
            "case_shape": list(cases[0][0]["image"].shape),
            "raw_bytes_per_case": raw_bytes / len(cases),
            "raw_disk_write_MB_s": _raw_disk_mb_s(workdir, 256 * 1024 * 1024),
            "variants": variants,
            "default_layout": {"codec": "zstd", "chunk": 64, "level": 3},
        }
        save_result("store", figures, command="python -m bench.store_bench")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
