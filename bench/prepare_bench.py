"""Time of ``prepare`` per case (load, reorient, resample to 1 mm, normalise, crop, write).

python -m bench.prepare_bench [--size default] [--cases 6] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import peak_rss_mb, save_result
from synbt_factory.data.prepare import PrepareConfig, prepare_dataset


def main() -> None:
    from synbt_factory.phantom import PRESETS, write_phantom

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="default", choices=sorted(PRESETS))
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="synbt-prepare-bench-"))
    try:
        write_phantom(workdir / "ph", n=args.cases, seed=0, size=args.size)
        runs = []
        for workers in args.workers:
            out = workdir / f"p{workers}.zarr"
            t0 = time.perf_counter()
            result = prepare_dataset(workdir / "ph", out, config=PrepareConfig(), workers=workers)
            dt = time.perf_counter() - t0
            runs.append(
                {
                    "workers": workers,
                    "cases": len(result.prepared),
                    "seconds_total": dt,
                    "seconds_per_case": dt / max(1, len(result.prepared)),
                    "failed": len(result.failed),
                }
            )
            print(runs[-1])
        figures = {
            "phantom_size": args.size,
            "fov_mm": list(PrepareConfig().fov_mm),
            "runs": runs,
            "peak_rss_mb": peak_rss_mb(),
        }
        save_result(
            "prepare", figures, command=f"python -m bench.prepare_bench --size {args.size} --cases {args.cases}"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
