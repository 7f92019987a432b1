"""SynTumor ``generate`` CPU, this checkout against an earlier commit, in interleaved A/B pairs.

    python -m bench.generate_ab --base d7a3f49 [--rounds 5] [--n 40] [--size small] [--backgrounds 10]

The base commit is checked out into a temporary ``git worktree``; each run is a fresh child process
(``python -m bench.generate_bench --child``) of one tree or the other, on the same prepared store and bank (built by
this checkout), measured from outside (:func:`bench.common.run_measured`), with the bytecode cache on for both and one
uncounted warm-up each. Per round, a one-case call and an ``--n``-case call of each tree, the order of the trees
alternating between rounds, so the load of a shared machine falls on both alike. Reported: the medians, the ratio
new ÷ base per pair (sorted), and the marginal CPU per case of each tree ((CPU(n) − CPU(1)) / (n − 1), medians).
Results in ``bench/results/generate_ab.json``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import run_measured, save_result
from bench.generate_bench import _child_env, _inputs

ROOT = Path(__file__).resolve().parents[1]


def _run(tree: Path, prepared: str, bank: str, out: Path, n: int) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "bench.generate_bench", "--child", "--n", str(n), "--cluster", "threads"]
    cmd += ["--workers", "2", "--prepared", prepared, "--bank", bank, "--out", str(out)]
    run = run_measured(cmd, cwd=tree, env={**_child_env(), "PYTHONPATH": str(tree)})
    shutil.rmtree(out, ignore_errors=True)
    return run["cpu_s"], run["wall_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="the commit to compare against (any git revision)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=40, help="cases of the larger call")
    parser.add_argument("--size", default="small")
    parser.add_argument("--backgrounds", type=int, default=10)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="synbt-generate-ab-"))
    base_tree = workdir / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=ROOT, check=True)
    try:
        prepared, bank = _inputs(workdir, args.size, args.backgrounds)
        trees = {"base": base_tree, "new": ROOT}
        for name, tree in trees.items():
            _run(tree, prepared, bank, workdir / f"warm-{name}.zarr", 1)
        runs: dict[tuple[str, int], list[tuple[float, float]]] = {(t, n): [] for t in trees for n in (1, args.n)}
        for r in range(args.rounds):
            for n in (1, args.n):
                for name in ("base", "new") if r % 2 == 0 else ("new", "base"):
                    runs[(name, n)].append(_run(trees[name], prepared, bank, workdir / f"{name}-{n}.zarr", n))
            print({f"{k[0]}-{k[1]}": round(v[-1][0], 2) for k, v in runs.items()}, flush=True)
        figures: dict[str, Any] = {"base": args.base, "rounds": args.rounds, "n": args.n, "size": args.size}
        for n in (1, args.n):
            ratios = [b[0] / a[0] for a, b in zip(runs[("base", n)], runs[("new", n)], strict=True)]
            figures[f"n{n}"] = {
                "base_cpu_s_median": statistics.median(x[0] for x in runs[("base", n)]),
                "new_cpu_s_median": statistics.median(x[0] for x in runs[("new", n)]),
                "base_wall_s_median": statistics.median(x[1] for x in runs[("base", n)]),
                "new_wall_s_median": statistics.median(x[1] for x in runs[("new", n)]),
                "cpu_ratio_new_over_base_per_pair": sorted(ratios),
                "cpu_ratio_new_over_base_median": statistics.median(ratios),
            }
        figures["marginal_cpu_s_per_case"] = {
            name: (figures[f"n{args.n}"][f"{name}_cpu_s_median"] - figures["n1"][f"{name}_cpu_s_median"]) / (args.n - 1)
            for name in trees
        }
        figures["runs_cpu_wall"] = {f"{k[0]}-{k[1]}": v for k, v in runs.items()}
        save_result(
            "generate_ab",
            figures,
            command=f"python -m bench.generate_ab --base {args.base} --rounds {args.rounds} --n {args.n} "
            f"--size {args.size} --backgrounds {args.backgrounds}",
        )
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
