"""Store bench: write MB/s of ``CaseStore.write_case`` against ``np.save`` of the same arrays, metadata operations
per case, and a codec / chunk-size comparison with bytes per case.

    python -m bench.store_bench [--prepared datasets/phantom.zarr] [--cases 4] [--size small] [--rounds 5]

Uses real prepared cases when a prepared store is given (realistic compression), else makes a phantom on the fly
(``--size``, prepared at its preset's field of view). The store and ``np.save`` run in interleaved A/B rounds, under
the same fsync policy on both sides (``none``: the page cache, as both write by default; ``fsync``: every file
written is synced before the round ends), and the ratio is taken per round (median reported), so the load of a
shared machine hits both sides alike. CPU time is reported next to wall time; the CPU floor of a compressed store
(cutting and compressing the same chunks with the store's own encoder, plus the checksums) is measured in
interleaved rounds next to ``write_case``, whose remainder is its overhead (file writes, threads). Variants of codec,
level and chunk size report bytes per case.
"""

from __future__ import annotations

import argparse
import dataclasses
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


# Nothing written is removed before the bench ends (about 1 GB in the work folder): ext4 skips inodes
# freed in the last ~30 s when it allocates new ones (``recently_deleted``), a scan whose cost falls on whoever
# creates the most files next. Removing each round's output before the next round made the store (about 70 new
# files and folders per case, against 4 for np.save) pay for the bench's own clean-up: 2-2.5x its CPU per case
# under churn, a cost no real writer has (generate and prepare never delete).


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


def _encode_all(cases: list, layout: StoreLayout) -> None:
    """Cut and compress every chunk of every array, one after the other (the store's own encoder)."""
    from synbt_factory.store.chunk_writer import array_plan, encode_chunk

    for arrays, _ in cases:
        for data in arrays.values():
            plan = array_plan(data.shape, data.dtype, layout)
            for coords in np.ndindex(*(-(-s // c) for s, c in zip(data.shape, plan.chunks, strict=True))):
                encode_chunk(plan, data, coords)


def _hash_all(cases: list) -> None:
    for arrays, _ in cases:
        for data in arrays.values():
            array_sha256(data)


def _cpu_floor(cases: list, layout: StoreLayout, workdir: Path, rounds: int) -> dict[str, float]:
    """CPU seconds per case of the store's floor (chunk cutting + compression, checksums) next to a whole
    ``write_case``, in interleaved rounds; the rest of ``write_case`` is its overhead (file writes, threads)."""
    rows: list[dict[str, float]] = []
    for r in range(rounds):
        store = CaseStore.create(workdir / f"floor-{r}.zarr", kind="synthetic", card={}, layout=layout)
        row = {
            "compress_cpu_s_per_case": _timed(lambda: _encode_all(cases, layout))[1],
            "sha256_cpu_s_per_case": _timed(lambda: _hash_all(cases))[1],
            "write_case_cpu_s_per_case": _timed(
                lambda store=store: [store.write_case(f"SYN_{i:06d}", a, t) for i, (a, t) in enumerate(cases)]
            )[1],
        }
        rows.append({k: v / len(cases) for k, v in row.items()})
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    med["overhead_cpu_s_per_case"] = (
        med["write_case_cpu_s_per_case"] - med["compress_cpu_s_per_case"] - med["sha256_cpu_s_per_case"]
    )
    return med


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
    return {k: v / len(cases) for k, v in sorted(counts.items())}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


VARIANTS = (  # codec, chunk, level, chunk key separator
    ("zstd", 64, 3, "/"),
    ("zstd", 64, 1, "/"),
    ("zstd", 64, 1, "."),
    ("zstd", 128, 1, "/"),
    ("zstd", 32, 1, "/"),
    ("blosc-lz4", 64, 5, "/"),
    ("blosc-lz4", 64, 1, "/"),
    ("blosc-zstd", 64, 1, "/"),
)


def _variant_round(cases: list, path: Path, layout: StoreLayout) -> dict[str, float]:
    store = CaseStore.create(path, kind="synthetic", card={}, layout=layout)
    write_s, write_cpu = _timed(
        lambda: [store.write_case(f"SYN_{i:06d}", arrays, attrs) for i, (arrays, attrs) in enumerate(cases)]
    )
    read_s, _ = _timed(
        lambda: [store.read_case(f"SYN_{i:06d}", ("image", "mask", "synthetic_mask")) for i in range(len(cases))]
    )
    size = _du(path)
    return {"write_s": write_s, "write_cpu_s": write_cpu, "read_s": read_s, "bytes": size}


def _variants(cases: list, workdir: Path, raw_bytes: int, rounds: int) -> list[dict[str, Any]]:
    """Codec / level / chunk / separator variants, written and read in interleaved rounds (medians)."""
    rows: dict[tuple, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS:
            codec, chunk, level, separator = variant
            layout = StoreLayout(chunk=chunk, codec=codec, level=level, separator=separator)
            rows[variant].append(_variant_round(cases, workdir / f"variant-{r}-{VARIANTS.index(variant)}.zarr", layout))
    variants = []
    for (codec, chunk, level, separator), measured in rows.items():
        med = {k: statistics.median(m[k] for m in measured) for k in measured[0]}
        variants.append(
            {
                "codec": codec,
                "chunk": chunk,
                "level": level,
                "separator": separator,
                "rounds": rounds,
                "write_MB_s": raw_bytes / med["write_s"] / 1e6,
                "write_cpu_s_per_case": med["write_cpu_s"] / len(cases),
                "read_MB_s": raw_bytes / med["read_s"] / 1e6,
                "bytes_per_case": med["bytes"] / len(cases),
                "compressed_over_raw": med["bytes"] / raw_bytes,
            }
        )
        print(variants[-1], flush=True)
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
        ab = [_interleaved(cases, workdir, args.rounds, fsync, raw_bytes) for fsync in (False, True)]
        for row in ab:
            print({k: v for k, v in row.items() if k != "rounds_detail"}, flush=True)
        figures = {
            "cases": len(cases),
            "case_shape": list(cases[0][0]["image"].shape),
            "raw_bytes_per_case": raw_bytes / len(cases),
            "store_vs_npsave_interleaved": ab,
            "default_layout_cpu_floor": _cpu_floor(cases, StoreLayout(), workdir, args.rounds),
            "store_operations_per_case": _store_operations(cases, workdir),
            "variants": _variants(cases, workdir, raw_bytes, args.rounds),
            "default_layout": dataclasses.asdict(StoreLayout()),
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
