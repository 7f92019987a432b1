"""Generate bench: SynTumor fixed and marginal CPU seconds per call and per case, peak memory of the generating process
tree at two N, and the default in-process thread pool against a Dask process ``LocalCluster``.

    python -m bench.generate_bench [--size small] [--ns 20,200,400] [--size-rounds 2] [--one-rounds 5]
                                   [--dask-n 40] [--rounds 2]

Every measured run is a fresh child process (``python -m bench.generate_bench --child ...``), measured from outside
(:func:`bench.common.run_measured`): its wall and CPU seconds (its Dask worker processes included), and the peak RSS of
its process tree sampled with psutil, so neither the parent's memory nor its imports count. Fixed and marginal costs
come from the first two N (median CPU of ``--size-rounds`` runs each, the counts measured in alternating order):
marginal = ΔCPU / ΔN, fixed = CPU(N₁) − N₁ × marginal. Peak memory is reported per N, and as the ratio of each N to the
previous one, from two measures: the tree's RSS sampled every 50 ms (which also counts Dask workers, but can miss a
short peak, and catches one the more likely the longer the run, a bias towards the larger N) and the child's own
``VmHWM`` (the kernel's exact high-water mark; for the default in-process runs the whole tree), whose ratio is also
given round by round, since peaks at one N vary by a few MiB between runs. A SynTumor run groups its cases by background
and keeps one placement context per worker (+1), and has glibc map each case volume on its own
(``synbt_factory.generate.pipeline._map_volumes``), so its peak should not depend on how many backgrounds it touches nor
on how many cases it writes: the ratio of the first two N is the flatness figure. The fixed cost is also measured
directly: the median CPU of ``--one-rounds`` one-case calls (``--child --n 1``, the case included). The executor
comparison runs threads / processes in interleaved pairs and reports the ratio per pair.

Children run with Python's bytecode cache on, as an installed package does: ``PYTHONDONTWRITEBYTECODE`` is removed from
their environment, and one uncounted one-case child runs first so the project's ``.pyc`` files exist before anything is
measured (with the variable set, as on the bench machine, every child compiled the project's modules again: about 0.12
CPU s per call, counted as fixed cost).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
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
    result = run_generate(
        config, out=args.out, prepared=args.prepared, bank=args.bank, method=method, cluster=args.cluster
    )
    print(
        json.dumps(
            {
                "written": len(result.written),
                "wall_s_inside": result.wall_seconds,
                "stage_seconds_total": result.stage_seconds,
                "torch_loaded": "torch" in sys.modules,
                "monai_loaded": "monai" in sys.modules,
                "dask_loaded": "dask" in sys.modules,
                "own_vmhwm_mb": _own_vmhwm_mb(),
            }
        )
    )


def _own_vmhwm_mb() -> float | None:
    """This process's peak resident memory (``VmHWM``, MiB), kept by the kernel: exact where the 50 ms sampling of
    :func:`bench.common.run_measured` can miss a short peak, and the more likely to catch one the longer the run,
    which biases a ratio of peaks towards the larger N. In-process runs (threads) are one process, so this is their
    whole tree; ``None`` off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _child_env() -> dict[str, str]:
    """This process's environment with the bytecode cache on (``PYTHONDONTWRITEBYTECODE`` removed), as an
    installed package runs: a child that may not write ``.pyc`` files compiles every module it imports."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _measure(
    workdir: Path, prepared: str, bank: str, n: int, *, cluster: str = "threads", workers: int = 2, tag: str = ""
) -> dict[str, Any]:
    out = workdir / f"out-{tag or n}-{cluster}-{time.monotonic_ns()}.zarr"
    cmd = [
        sys.executable,
        "-m",
        "bench.generate_bench",
        "--child",
        "--n",
        str(n),
        "--cluster",
        cluster,
        "--workers",
        str(workers),
        "--prepared",
        prepared,
        "--bank",
        bank,
        "--out",
        str(out),
    ]
    run = run_measured(cmd, cwd=Path(__file__).resolve().parents[1], env=_child_env())
    inside = json.loads(run.pop("stdout").strip().splitlines()[-1])
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return {
        "n": n,
        "cluster": cluster,
        "workers": workers,
        **run,
        "cpu_s_per_case": run["cpu_s"] / n,
        "bytes_per_case": size / n,
        **inside,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="small", help="phantom preset of the backgrounds")
    parser.add_argument("--backgrounds", type=int, default=10)
    parser.add_argument(
        "--ns",
        default="20,200,400",
        help="case counts: the first two give fixed/marginal cost; all, peak memory against N",
    )
    parser.add_argument("--size-rounds", type=int, default=2, help="measurements of each count, alternating order")
    parser.add_argument("--one-rounds", type=int, default=5, help="one-case calls measured for the direct fixed cost")
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
    ns = sorted(int(v) for v in args.ns.split(","))
    if len(ns) < 2:
        parser.error("--ns needs at least two case counts")
    workdir = Path(tempfile.mkdtemp(prefix="synbt-generate-bench-"))
    try:
        t0 = time.perf_counter()
        prepared, bank = _inputs(workdir, args.size, args.backgrounds)
        setup_s = time.perf_counter() - t0
        # uncounted: writes the .pyc files of every module a child imports, so no measured child compiles them
        _measure(workdir, prepared, bank, 1, tag="warmup")
        # the counts alternate in order (up, then down) so machine load falls on small and large N alike
        by_n: dict[int, list[dict[str, Any]]] = {n: [] for n in ns}
        for r in range(args.size_rounds):
            for n in ns if r % 2 == 0 else ns[::-1]:
                by_n[n].append(_measure(workdir, prepared, bank, n))
                print({k: v for k, v in by_n[n][-1].items() if k != "stage_seconds_total"}, flush=True)
        runs = [run for n in ns for run in by_n[n]]
        one_case = [_measure(workdir, prepared, bank, 1, tag="one") for _ in range(args.one_rounds)]
        print({"one_case_cpu_s": [r["cpu_s"] for r in one_case]}, flush=True)
        cpu = {n: statistics.median(r["cpu_s"] for r in by_n[n]) for n in ns}
        rss = {n: statistics.median(r["tree_peak_rss_mb"] for r in by_n[n]) for n in ns}
        hwm = {n: statistics.median(r["own_vmhwm_mb"] for r in by_n[n]) for n in ns}
        pairs_by_round = zip(by_n[ns[0]], by_n[ns[1]], strict=True)
        hwm_ratios = sorted(b["own_vmhwm_mb"] / a["own_vmhwm_mb"] for a, b in pairs_by_round)
        n1, n2 = ns[0], ns[1]
        marginal = (cpu[n2] - cpu[n1]) / (n2 - n1)
        fixed = cpu[n1] - n1 * marginal
        pairs = []
        for _ in range(args.rounds):
            threads = _measure(workdir, prepared, bank, args.dask_n, cluster="threads", tag="dask")
            local = _measure(workdir, prepared, bank, args.dask_n, cluster="local", tag="dask")
            pairs.append(
                {
                    "threads": threads,
                    "local": local,
                    "wall_local_over_threads": local["wall_s"] / threads["wall_s"],
                    "cpu_local_over_threads": local["cpu_s"] / threads["cpu_s"],
                }
            )
            print({k: v for k, v in pairs[-1].items() if "over" in k}, flush=True)
        figures = {
            "phantom_size": args.size,
            "backgrounds": args.backgrounds,
            "setup_seconds": setup_s,
            "syntumor_runs": runs,
            "syntumor_fixed_cpu_s_per_call": fixed,
            "syntumor_one_case_call_cpu_s_median": statistics.median(r["cpu_s"] for r in one_case)
            if one_case
            else None,
            "syntumor_one_case_call_runs": [
                {k: v for k, v in r.items() if k != "stage_seconds_total"} for r in one_case
            ],
            "syntumor_marginal_cpu_s_per_case": marginal,
            "median_cpu_s_by_n": cpu,
            "median_tree_peak_rss_mb_by_n": rss,
            "median_own_vmhwm_mb_by_n": hwm,
            "peak_rss_vmhwm_ratio_n2_over_n1": hwm[n2] / hwm[n1],
            "peak_rss_vmhwm_ratio_per_round": hwm_ratios,
            "peak_rss_tree_ratio_n2_over_n1": rss[n2] / rss[n1],
            "peak_rss_tree_ratio_each_n_over_the_previous": {
                f"{b}/{a}": rss[b] / rss[a] for a, b in itertools.pairwise(ns)
            },
            "thread_pool_vs_dask_local_cluster_2_workers": {
                "n": args.dask_n,
                "pairs": pairs,
                "median_wall_local_over_threads": statistics.median(p["wall_local_over_threads"] for p in pairs),
                "median_cpu_local_over_threads": statistics.median(p["cpu_local_over_threads"] for p in pairs),
            },
        }
        save_result(
            "generate",
            figures,
            command=f"python -m bench.generate_bench --size {args.size} "
            f"--ns {args.ns} --size-rounds {args.size_rounds} --one-rounds {args.one_rounds} "
            f"--dask-n {args.dask_n} --rounds {args.rounds}",
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
