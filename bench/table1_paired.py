"""Paired per-case comparison of Table 1 arms against the real-only volume arm, over one or more runs.

    python -m bench.table1_paired bench/results/table1_cpu/seed0_cases.csv bench/results/table1_cpu/seed1_cases.csv

Reads the ``table1_cases.csv`` files that ``synbt experiment table1`` writes (one per seed) and, for every
model and arm, gives the per-case Dice difference to ``volume-real`` of the same model and seed: mean,
range and the number of test cases that improved. Prints and writes ``bench/results/table1_paired.json``.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

from bench.common import save_result

BASELINE = "volume-real"


def paired(path: Path) -> dict[str, dict[str, Any]]:
    """``{"<model> <arm>": {mean_delta, min_delta, max_delta, improved, cases}}`` for one cases CSV."""
    dice: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            dice[(row["model"], row["arm"])][row["case_id"]] = float(row["dice"])
    out: dict[str, dict[str, Any]] = {}
    for (model, arm), cases in sorted(dice.items()):
        base = dice.get((model, BASELINE))
        if arm == BASELINE or not base:
            continue
        deltas = [cases[c] - base[c] for c in base if c in cases]
        if deltas:
            out[f"{model} {arm}"] = {
                "mean_delta_dice": mean(deltas),
                "min_delta_dice": min(deltas),
                "max_delta_dice": max(deltas),
                "improved": sum(d > 0 for d in deltas),
                "cases": len(deltas),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases_csv", nargs="+", type=Path, help="table1_cases.csv of each run")
    args = parser.parse_args()
    figures = {str(p): paired(p) for p in args.cases_csv}
    save_result("table1_paired", {"baseline": BASELINE, "runs": figures})


if __name__ == "__main__":
    main()
