"""Generate bench: SynTumor fixed and marginal CPU seconds per call and per case, peak memory of the generating
process tree at two N, and Dask in one process (threads) against a process ``LocalCluster``.

    python -m bench.generate_bench [--size small] [--ns 20,200] [--dask-n 40] [--rounds 2]

Every measured run is a fresh child process (``python -m bench.generate_bench --child ...``), measured from outside
(:func:`bench.common.run_measured`): its wall and CPU seconds (its Dask worker processes included), and the peak RSS
of its process tree sampled with psutil, so neither the parent's memory nor its imports count. Fixed and marginal
costs come from the two N: marginal = ΔCPU / ΔN, fixed = CPU(N₁) − N₁ × marginal. The Dask comparison runs
threads / processes in interleaved pairs and reports the ratio per pair.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import run_measured, save_result


def _inputs(workdir: Path, size: str, cases: int) -> tuple[str, str]:
    from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
    from synbt_factory.phantom import PRESETS, write_phantom
    from synbt_factory.synthesis.bank import build_bank

    fov = tuple(int(round(v)) for v in PRESETS[size].fov_mm)  # type: ignore[attr-defined]
    write_phantom(workdir / "ph", n=cases, seed=0, size=size, healthy_fraction=0.0)
    prepare_dataset(workdir / "ph", workdir / "p.zarr", config=PrepareConfig(fov_mm=fov), workers=2)
    build_bank(workdir / "p.zarr", workdir / "bank.zarr", splits=("train", "test"))
    return str(workdir / "p.zarr"), str(workdir / "bank.zarr")


def _child(args: argparse.Namespace) -> None:
    """One SynTumor generation in this fresh process; prints its stage seconds and the modules it loaded."""
    from synbt_factory.generate import GenerateConfig, run_generate
    from synbt_factory.generate.methods import SynTumorMethod

    config = GenerateConfig(n=args.n, seed=0, method="syntumor", workers=args.workers)
    method = SynTumorMethod.from_prepared(args.prepared)
    result = run_generate(config, out=args.out, prepared=args.prepared, bank=args.bank, method=method,
                          cluster=args.cluster)
    print(json.dumps({"written": len(result.written), "wall_s_inside": result.wall_seconds,
                      "stage_seconds_total": result.stage_seconds,
                      "torch_loaded": "torch" in sys.modules, "monai_loaded": "monai" in sys.modules}))


def _measure(workdir: Path, prepared: str, bank: str, n: int, *, cluster: str = "threads", workers: int = 2,
             tag: str = "") -> dict[str, Any]:
    out = workdir / f"out-{tag or n}-{cluster}-{time.monotonic_ns()}.zarr"
    cmd = [sys.executable, "-m", "bench.generate_bench", "--child", "--n", str(n), "--cluster", cluster,
           "--workers", str(workers), "--prepared", prepared, "--bank", bank, "--out", str(out)]
    run = run_measured(cmd, cwd=Path(__file__).resolve().parents[1])
    inside = json.loads(run.pop("stdout").strip().splitlines()[-1])
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return {"n": n, "cluster": cluster, "workers": workers, **run, "cpu_s_per_case": run["cpu_s"] / n,
            "bytes_per_case": size / n, **inside}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="small", help="phantom preset of the backgrounds")
    parser.add_argument("--backgrounds", type=int, default=10)
    parser.add_argument("--ns", default="20,200", help="two case counts: fixed/marginal cost and peak memory")
    parser.add_argument("--dask-n", type=int, default=40, help="cases per run of the threads/processes comparison")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved threads/processes pairs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cluster", default="threads", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--prepared", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bank", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    n1, n2 = (int(v) for v in args.ns.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="synbt-generate-bench-"))
    try:
        t0 = time.perf_counter()
        prepared, bank = _inputs(workdir, args.size, args.backgrounds)
        setup_s = time.perf_counter() - t0
        runs = []
        for n in (n1, n2):
            runs.append(_measure(workdir, prepared, bank, n))
            print({k: v for k, v in runs[-1].items() if k != "stage_seconds_total"}, flush=True)
        marginal = (runs[1]["cpu_s"] - runs[0]["cpu_s"]) / (n2 - n1)
        fixed = runs[0]["cpu_s"] - n1 * marginal
        pairs = []
        for _ in range(args.rounds):
            threads = _measure(workdir, prepared, bank, args.dask_n, cluster="threads", tag="dask")
            local = _measure(workdir, prepared, bank, args.dask_n, cluster="local", tag="dask")
            pairs.append({"threads": threads, "local": local,
                          "wall_local_over_threads": local["wall_s"] / threads["wall_s"],
                          "cpu_local_over_threads": local["cpu_s"] / threads["cpu_s"]})
            print({k: v for k, v in pairs[-1].items() if "over" in k}, flush=True)
        figures = {
            "phantom_size": args.size, "backgrounds": args.backgrounds, "setup_seconds": setup_s,
            "syntumor_runs": runs,
            "syntumor_fixed_cpu_s_per_call": fixed,
            "syntumor_marginal_cpu_s_per_case": marginal,
            "peak_rss_tree_ratio_n2_over_n1": runs[1]["tree_peak_rss_mb"] / runs[0]["tree_peak_rss_mb"],
            "dask_threads_vs_local_cluster_2_workers": {
                "n": args.dask_n, "pairs": pairs,
                "median_wall_local_over_threads": statistics.median(p["wall_local_over_threads"] for p in pairs),
                "median_cpu_local_over_threads": statistics.median(p["cpu_local_over_threads"] for p in pairs),
            },
        }
        save_result("generate", figures, command=f"python -m bench.generate_bench --size {args.size} "
                                                 f"--ns {args.ns} --dask-n {args.dask_n} --rounds {args.rounds}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
