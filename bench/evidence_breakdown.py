"""Where does each arm gain or lose against real-only? The evidence run's per-case Dice, split by tumor kind.

Each case's Dice is averaged over the seeds first, then ΔDice = arm − real-only per case (paired), then grouped:
by tumor size (the case's largest diameter, from its patient-info file) and, for the external family, by fat
suppression, shape and enhancement pattern. Subgroups are small: the table shows n and the share of cases that
improved, not tests.

    python -m bench.evidence_breakdown runs/evidence --out bench/results/evidence/breakdown
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

SIZE_BINS_MM = ((0, 10), (10, 15), (15, 20), (20, 1000))


def _patient_info(family: Path) -> dict[str, dict[str, Any]]:
    info = {}
    for path in sorted((family / "patient_info_files").glob("*.json")):
        data = json.loads(path.read_text())
        lesion, imaging = data.get("primary_lesion", {}), data.get("imaging_data", {})
        info[data["patient_id"]] = {
            "diameter_mm": lesion.get("largest_diameter_mm"),
            "shape": lesion.get("shape"),
            "enhancement": lesion.get("enhancement_pattern"),
            "fat_suppressed": imaging.get("fat_suppressed"),
        }
    return info


def _size_bin(diameter: float | None) -> str:
    if diameter is None:
        return "unknown"
    for lo, hi in SIZE_BINS_MM:
        if lo <= diameter < hi:
            return f"{lo}–{hi} mm" if hi < 1000 else f"≥ {lo} mm"
    return "unknown"


def breakdown(run: Path) -> dict[str, Any]:
    """{test_set: {size: {arm: {grouping: {group: {n, delta_dice, improved}}}}}}."""
    table = run / "evidence_cases.csv"
    files = [table] if table.is_file() else sorted(run.glob("runs/*/*/*/cases.csv"))  # finished runs so far
    rows = [r for f in files for r in csv.DictReader(f.open())]
    info = {
        "own": _patient_info(run / "data" / "own_phantom"),
        "external": _patient_info(run / "data" / "external_phantom"),
    }
    per_case: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for r in rows:
        per_case[(r["test_set"], r["size"], r["arm"], r["case_id"])].append(float(r["dice"]))
    mean = {k: float(np.mean(v)) for k, v in per_case.items()}
    out: dict[str, Any] = {}
    for (test_set, size, arm, case_id), dice in sorted(mean.items()):
        if arm == "real" or (test_set, size, "real", case_id) not in mean:
            continue
        delta = dice - mean[(test_set, size, "real", case_id)]
        case = info[test_set].get(case_id, {})
        groups = {"size": _size_bin(case.get("diameter_mm"))}
        if test_set == "external":
            groups.update(
                {
                    "fat_suppressed": str(case.get("fat_suppressed")),
                    "shape": str(case.get("shape")),
                    "enhancement": str(case.get("enhancement")),
                }
            )
        for grouping, group in groups.items():
            cell = out.setdefault(test_set, {}).setdefault(size, {}).setdefault(arm, {}).setdefault(grouping, {})
            cell.setdefault(group, []).append(delta)
    for test_set in out.values():
        for size in test_set.values():
            for arm in size.values():
                for grouping, groups in arm.items():
                    arm[grouping] = {
                        g: {
                            "n": len(d),
                            "delta_dice": round(float(np.mean(d)), 4),
                            "improved": round(float(np.mean(np.array(d) > 0)), 3),
                        }
                        for g, d in sorted(groups.items())
                    }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["# ΔDice against real-only by tumor kind (per case, seeds averaged)", ""]
    for test_set, sizes in result.items():
        for size, arms in sizes.items():
            lines += [f"## {test_set} test set, {size} real training cases", ""]
            groupings = list(next(iter(arms.values())).keys())
            for grouping in groupings:
                groups = sorted({g for a in arms.values() for g in a[grouping]})
                lines += [
                    f"| {grouping} | "
                    + " | ".join(
                        f"{g} (n={arms[next(iter(arms))][grouping][g]['n']})"
                        if g in arms[next(iter(arms))][grouping]
                        else g
                        for g in groups
                    )
                    + " |",
                    "|---|" + "---|" * len(groups),
                ]
                for arm, cells in arms.items():
                    lines.append(
                        f"| {arm} | "
                        + " | ".join(
                            f"{cells[grouping][g]['delta_dice']:+.3f} ({cells[grouping][g]['improved']:.0%} better)"
                            if g in cells[grouping]
                            else "–"
                            for g in groups
                        )
                        + " |"
                    )
                lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the evidence run folder")
    parser.add_argument("--out", type=Path, required=True, help="prefix: writes <out>.json and <out>.md")
    args = parser.parse_args(argv)
    result = breakdown(args.run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(args.out.with_suffix(".md"))


if __name__ == "__main__":
    main()
