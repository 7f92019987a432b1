"""Wall time of ``synbt demo`` → ``bench/results/demo.json``.

Runs the demo ``--runs`` times (default 3), each in a fresh folder and its own process, exactly as
a user would (``synbt demo --preset tiny``), and reports the median wall time, per-step seconds
(from the step markers), the evaluation table of the last run and the machine load around each
run (the 1-minute load average; above the core count the figures are inflated by other work).

Run from the repository root::

    python -m bench.demo_bench [--preset tiny] [--runs 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import save_result

#: The registered ``synbt demo`` when the console script has it, else the same function through Typer.
_FALLBACK = "import typer; from cli.demo import demo; typer.run(demo)"


def demo_command() -> list[str]:
    synbt = shutil.which("synbt")
    if synbt is not None:
        probe = subprocess.run([synbt, "demo", "--help"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [synbt, "demo"]
    return [sys.executable, "-c", _FALLBACK]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _steps(out: Path, names: tuple[str, ...]) -> dict[str, float]:
    """Seconds of each step from its marker, in execution order."""
    return {name: float(json.loads((out / "steps" / f"{name}.done.json").read_text())["seconds"]) for name in names}


def _table(out: Path) -> list[dict[str, Any]]:
    with open(out / "eval_table.csv", newline="") as fh:
        return [
            {
                "method": r["method"],
                "arm": r["arm"],
                "n_cases": int(r["n_cases"]),
                "dice_mean": float(r["dice_mean"]),
                "hd95_mean": float(r["hd95_mean"]),
                "msd_mean": float(r["msd_mean"]),
            }
            for r in csv.DictReader(fh)
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=("tiny", "small"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders under this folder")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="synbt-demo-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    from synbt_factory.experiments.demo import DEMO_PRESETS

    names = DEMO_PRESETS[args.preset].step_names()
    command = demo_command()
    runs: list[dict[str, Any]] = []
    try:
        for i in range(args.runs):
            out = base / f"run{i}"
            if out.exists():
                shutil.rmtree(out)
            cmd = [
                *command,
                "--out",
                str(out),
                "--preset",
                args.preset,
                "--device",
                args.device,
                "--seed",
                str(args.seed),
            ]
            load_before = _load()
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
                raise SystemExit(f"run {i} failed with exit code {proc.returncode}")
            runs.append(
                {
                    "wall_s": round(wall, 2),
                    "load_before": load_before,
                    "load_after": _load(),
                    "steps_s": _steps(out, names),
                    "table": _table(out),
                }
            )
            print(f"run {i}: {wall:.1f} s (load {load_before} → {runs[-1]['load_after']})", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)

    walls = [r["wall_s"] for r in runs]
    step_names = list(runs[0]["steps_s"])
    figures = {
        "preset": args.preset,
        "device": args.device,
        "runs": len(runs),
        "command": " ".join(command[:2]) if command[0] != sys.executable else "typer.run(cli.demo.demo)",
        "wall_s_median": statistics.median(walls),
        "wall_s_all": walls,
        "steps_s_median": {n: round(statistics.median(r["steps_s"][n] for r in runs), 2) for n in step_names},
        "load_1min": [(r["load_before"], r["load_after"]) for r in runs],
        "cpu_count": os.cpu_count(),
        "eval_table_last_run": runs[-1]["table"],
        "per_run": runs,
    }
    save_result("demo", figures)


if __name__ == "__main__":
    main()
