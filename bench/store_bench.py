"""Store bench: write MB/s of ``CaseStore.write_case`` against ``np.save`` of the same arrays, metadata operations
per case, and a codec / chunk-size comparison with bytes per case.

    python -m bench.store_bench [--prepared datasets/phantom.zarr] [--cases 4] [--size small] [--rounds 5]

Uses real prepared cases when a prepared store is given (realistic compression), else makes a phantom on the fly
(``--size``, prepared at its preset's field of view). The store and ``np.save`` run in interleaved A/B rounds, under
the same fsync policy on both sides (``none``: the page cache, as both write by default; ``fsync``: every file
written is synced before the round ends), and the ratio is taken per round (median reported), so the load of a
shared machine hits both sides alike. CPU time is reported next to wall time; the CPU floor of a compressed store
(compressing the same chunks with the same codec, plus the checksums) is measured too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import save_result
from synbt_factory.store import CaseStore, StoreLayout, array_sha256


def _cases(prepared: str | None, n: int, size: str, workdir: Path) -> list[tuple[dict[str, np.ndarray], dict]]:
    if prepared is None:
        from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
        from synbt_factory.phantom import PRESETS, write_phantom

        fov = tuple(int(round(v)) for v in PRESETS[size].fov_mm)  # type: ignore[attr-defined]
        write_phantom(workdir / "ph", n=n, seed=0, size=size, healthy_fraction=0.0)
        prepare_dataset(workdir / "ph", workdir / "p.zarr", config=PrepareConfig(fov_mm=fov), workers=2)
        prepared = str(workdir / "p.zarr")
    store = CaseStore.open(prepared)
    out = []
    for case_id in store.case_ids()[:n]:
        arrays, attrs = store.read_case(case_id, ("image", "mask"))
        arrays["synthetic_mask"] = arrays["mask"].copy()
        out.append((arrays, {"affine": attrs["affine"], "spacing": attrs["spacing"]}))
    return out


def _fsync_tree(path: Path) -> None:
    """fsync every file and folder under ``path`` (what a durable write costs)."""
    for folder, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _timed(fn: Any) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _store_round(cases: list, root: Path, tag: str, fsync: bool) -> tuple[float, float]:
    store = CaseStore.create(root / f"{tag}.zarr", kind="synthetic", card={})

    def run() -> None:
        for i, (arrays, attrs) in enumerate(cases):
            store.write_case(f"SYN_{i:06d}", arrays, attrs)
        if fsync:
            _fsync_tree(root / f"{tag}.zarr" / "cases")

    return _timed(run)


def _npsave_round(cases: list, root: Path, tag: str, fsync: bool) -> tuple[float, float]:
    folder = root / tag
    folder.mkdir()

    def run() -> None:
        for i, (arrays, _) in enumerate(cases):
            case = folder / f"SYN_{i:06d}"
            case.mkdir()
            for name, data in arrays.items():
                np.save(case / f"{name}.npy", data)
        if fsync:
            _fsync_tree(folder)

    return _timed(run)


def _interleaved(cases: list, workdir: Path, rounds: int, fsync: bool, raw_bytes: int) -> dict[str, Any]:
    """A/B rounds (store, np.save, store, ...); per-round ratios of MB/s, wall and CPU."""
    rows = []
    for r in range(rounds):
        root = workdir / f"ab-{'fsync' if fsync else 'none'}-{r}"
        root.mkdir()
        (s_wall, s_cpu), (n_wall, n_cpu) = (
            _store_round(cases, root, "store", fsync),
            _npsave_round(cases, root, "npy", fsync),
        )
        rows.append({"store_wall_s": s_wall, "store_cpu_s": s_cpu, "npsave_wall_s": n_wall, "npsave_cpu_s": n_cpu})
        shutil.rmtree(root)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {
        "fsync": fsync,
        "rounds": rounds,
        "store_write_MB_s": raw_bytes / med["store_wall_s"] / 1e6,
        "npsave_write_MB_s": raw_bytes / med["npsave_wall_s"] / 1e6,
        "ratio_store_over_npsave_MB_s": statistics.median(r["npsave_wall_s"] / r["store_wall_s"] for r in rows),
        "store_cpu_s_per_case": med["store_cpu_s"] / len(cases),
        "npsave_cpu_s_per_case": med["npsave_cpu_s"] / len(cases),
        "rounds_detail": rows,
    }


def _compression_floor(cases: list, layout: StoreLayout) -> dict[str, float]:
    """CPU seconds per case to compress the same chunks with the store's codec and to checksum the arrays."""
    from numcodecs import Blosc, Zstd

    codec = (
        Zstd(layout.level)
        if layout.codec == "zstd"
        else Blosc(layout.codec.split("-", 1)[1], layout.level, Blosc.SHUFFLE)
    )
    t = time.process_time()
    for arrays, _ in cases:
        for data in arrays.values():
            chunks = layout.chunks_for(data.shape)
            grid = [range(0, s, c) for s, c in zip(data.shape, chunks, strict=True)]
            for corner in np.ndindex(*[len(g) for g in grid]):
                box = tuple(slice(g[i], g[i] + c) for g, i, c in zip(grid, corner, chunks, strict=True))
                codec.encode(np.ascontiguousarray(data[box]))
    compress = (time.process_time() - t) / len(cases)
    t = time.process_time()
    for arrays, _ in cases:
        for data in arrays.values():
            array_sha256(data)
    return {"compress_cpu_s_per_case": compress, "sha256_cpu_s_per_case": (time.process_time() - t) / len(cases)}


def _store_operations(cases: list, workdir: Path) -> dict[str, float]:
    """Store calls per written case (counted on zarr's LocalStore): metadata writes, chunk writes, probes."""
    from zarr.storage import LocalStore

    counts: Counter[str] = Counter()
    originals = {
        name: getattr(LocalStore, name) for name in ("set", "get", "exists", "set_if_not_exists", "list_dir", "delete")
    }

    def counting(name: str) -> Any:
        original = originals[name]

        def wrapper(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
            kind = "metadata" if str(key).endswith("zarr.json") else "chunk"
            counts[f"{name}:{kind}"] += 1
            return original(self, key, *args, **kwargs)

        return wrapper

    store = CaseStore.create(workdir / "ops.zarr", kind="synthetic", card={})
    for name in originals:
        setattr(LocalStore, name, counting(name))
    try:
        for i, (arrays, attrs) in enumerate(cases):
            store.write_case(f"SYN_{i:06d}", arrays, attrs)
    finally:
        for name, original in originals.items():
            setattr(LocalStore, name, original)
    shutil.rmtree(workdir / "ops.zarr")
    return {k: v / len(cases) for k, v in sorted(counts.items())}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _variants(cases: list, workdir: Path, raw_bytes: int) -> list[dict[str, Any]]:
    variants = []
    for codec, chunk, level in (
        ("zstd", 64, 3),
        ("zstd", 64, 1),
        ("zstd", 128, 3),
        ("zstd", 32, 3),
        ("blosc-lz4", 64, 5),
        ("blosc-zstd", 64, 1),
    ):
        layout = StoreLayout(chunk=chunk, codec=codec, level=level)
        path = workdir / f"{codec}-{chunk}-{level}.zarr"
        store = CaseStore.create(path, kind="synthetic", card={}, layout=layout)
        w, c = time.perf_counter(), time.process_time()
        for i, (arrays, attrs) in enumerate(cases):
            store.write_case(f"SYN_{i:06d}", arrays, attrs)
        write_s, write_cpu = time.perf_counter() - w, time.process_time() - c
        w = time.perf_counter()
        for i in range(len(cases)):
            store.read_case(f"SYN_{i:06d}", ("image", "mask", "synthetic_mask"))
        read_s = time.perf_counter() - w
        size = _du(path)
        variants.append(
            {
                "codec": codec,
                "chunk": chunk,
                "level": level,
                "write_MB_s": raw_bytes / write_s / 1e6,
                "write_cpu_s_per_case": write_cpu / len(cases),
                "read_MB_s": raw_bytes / read_s / 1e6,
                "bytes_per_case": size / len(cases),
                "compressed_over_raw": size / raw_bytes,
            }
        )
        print(variants[-1], flush=True)
        shutil.rmtree(path)
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", default=None)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--size", default="small", help="phantom preset when no --prepared is given")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved store / np.save rounds per fsync policy")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="synbt-store-bench-"))
    try:
        cases = _cases(args.prepared, args.cases, args.size, workdir)
        raw_bytes = sum(sum(a.nbytes for a in arrays.values()) for arrays, _ in cases)
        _store_round(cases, workdir, "warmup", False)  # imports and first-call costs out of the rounds
        shutil.rmtree(workdir / "warmup.zarr")
        ab = [_interleaved(cases, workdir, args.rounds, fsync, raw_bytes) for fsync in (False, True)]
        for row in ab:
            print({k: v for k, v in row.items() if k != "rounds_detail"}, flush=True)
        figures = {
            "cases": len(cases),
            "case_shape": list(cases[0][0]["image"].shape),
            "raw_bytes_per_case": raw_bytes / len(cases),
            "store_vs_npsave_interleaved": ab,
            "default_layout_cpu_floor": _compression_floor(cases, StoreLayout()),
            "store_operations_per_case": _store_operations(cases, workdir),
            "variants": _variants(cases, workdir, raw_bytes),
            "default_layout": {"codec": "zstd", "chunk": 64, "level": 3},
        }
        source = f"--prepared {args.prepared}" if args.prepared else f"--size {args.size}"
        save_result(
            "store",
            figures,
            command=f"python -m bench.store_bench {source} --cases {args.cases} --rounds {args.rounds}",
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
