"""A background's placement context read from the prepared store against one built from its arrays.

    python -m bench.placement_context_bench [--sizes tiny,small,default] [--cases 4] [--rounds 3]

For each phantom size, a prepared store is made (``prepare`` stores every case's placement anatomy). Then, per
round and per case, the context is obtained both ways in alternating order (stored / built, then built / stored
on the next case), so machine load falls on both alike. Reported per size: median CPU and wall seconds per
context each way, their ratio (built ÷ stored), the prepare-time cost of storing (CPU seconds per case of
:func:`store_placement_anatomy` with ``overwrite``), and the stored bytes per case against the case's other arrays.
Writes ``bench/results/placement_context.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import save_result


def _prepared(workdir: Path, size: str, cases: int) -> Path:
    from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
    from synbt_factory.phantom import PRESETS, write_phantom

    fov = tuple(int(round(v)) for v in PRESETS[size].fov_mm)  # type: ignore[attr-defined]
    write_phantom(workdir / f"ph-{size}", n=cases, seed=0, size=size, healthy_fraction=0.0)
    out = workdir / f"p-{size}.zarr"
    prepare_dataset(workdir / f"ph-{size}", out, config=PrepareConfig(fov_mm=fov), workers=2)
    return out


def _timed(fn: Any) -> tuple[float, float, Any]:
    c0, w0 = time.process_time(), time.perf_counter()
    value = fn()
    return time.process_time() - c0, time.perf_counter() - w0, value


def _stored_bytes(location: Path, case_id: str) -> tuple[int, int]:
    """(bytes on disk of the stored anatomy arrays, bytes of the case's other arrays)."""
    from synbt_factory.synthesis.background_context import ANATOMY_ARRAYS

    folder = location / "cases" / case_id
    anatomy, other = 0, 0
    for array in folder.iterdir():
        if not array.is_dir():
            continue
        size = sum(f.stat().st_size for f in array.rglob("*") if f.is_file())
        if array.name in ANATOMY_ARRAYS.values():
            anatomy += size
        else:
            other += size
    return anatomy, other


def bench_size(workdir: Path, size: str, cases: int, rounds: int) -> dict[str, Any]:
    import numpy as np

    from synbt_factory.store import CaseStore
    from synbt_factory.synthesis import background_context
    from synbt_factory.synthesis.background_context import context_from_store, store_placement_anatomy

    location = _prepared(workdir, size, cases)
    store = CaseStore.open(location, mode="r+")
    ids = store.case_ids()
    original = background_context.has_stored_anatomy

    def built(case_id: str) -> Any:
        background_context.has_stored_anatomy = lambda *a, **k: False  # type: ignore[assignment]
        try:
            return context_from_store(store, case_id)
        finally:
            background_context.has_stored_anatomy = original  # type: ignore[assignment]

    samples: dict[str, list[tuple[float, float]]] = {"stored": [], "built": []}
    for r in range(rounds):
        for i, case_id in enumerate(ids):
            order = ("stored", "built") if (r + i) % 2 == 0 else ("built", "stored")
            results = {}
            for way in order:
                fn = (
                    (lambda c=case_id: context_from_store(store, c))
                    if way == "stored"
                    else (lambda c=case_id: built(c))
                )
                cpu, wall, ctx = _timed(fn)
                samples[way].append((cpu, wall))
                results[way] = ctx
            assert results["stored"].notes["anatomy"] == "stored" and results["built"].notes["anatomy"] == "built"
            assert np.array_equal(results["stored"].centres, results["built"].centres)
    storing = [_timed(lambda c=c: store_placement_anatomy(store, [c], overwrite=True))[0] for c in ids]
    sizes = [_stored_bytes(location, c) for c in ids]
    median = {
        way: {"cpu_s": statistics.median(s[0] for s in v), "wall_s": statistics.median(s[1] for s in v)}
        for way, v in samples.items()
    }
    shape = store.read_array(ids[0], "mask").shape
    return {
        "size": size,
        "shape": list(shape),
        "cases": len(ids),
        "rounds": rounds,
        "per_context_median": median,
        "built_over_stored_cpu": median["built"]["cpu_s"] / median["stored"]["cpu_s"],
        "built_over_stored_wall": median["built"]["wall_s"] / median["stored"]["wall_s"],
        "store_cpu_s_per_case_median": statistics.median(storing),
        "stored_bytes_per_case_median": statistics.median(a for a, _ in sizes),
        "stored_bytes_over_other_arrays": statistics.median(a / o for a, o in sizes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,small,default")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="synbt-ctx-bench-") as tmp:
        rows = [bench_size(Path(tmp), size, args.cases, args.rounds) for size in args.sizes.split(",")]
    path = save_result("placement_context", {"sizes": rows})
    for row in rows:
        m = row["per_context_median"]
        print(
            f"{row['size']} {row['shape']}: built {m['built']['cpu_s']:.3f} CPU s, stored {m['stored']['cpu_s']:.3f}"
            f" CPU s per context (×{row['built_over_stored_cpu']:.1f} CPU, ×{row['built_over_stored_wall']:.1f} "
            f"wall); storing {row['store_cpu_s_per_case_median']:.3f} CPU s per case at prepare; "
            f"{row['stored_bytes_per_case_median'] / 1e3:.0f} kB stored per case "
            f"({row['stored_bytes_over_other_arrays']:.2f}× the case's other arrays)"
        )
    print(f"→ {path}")


if __name__ == "__main__":
    main()
