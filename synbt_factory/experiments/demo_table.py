"""The demo's evaluation table: one row per segmentation arm, written as Markdown, CSV and JSON.

The Markdown is the paper's Table 1 layout (:func:`synbt_factory.experiments.tables.render_table1`), with notes on
the budgets and, per synthetic arm, its paired per-case Dice change against real only.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from synbt_factory.config import config_to_dict
from synbt_factory.experiments.demo_config import DemoConfig
from synbt_factory.experiments.tables import render_table1
from synbt_factory.io import atomic_write_text

__all__ = ["ARM_METHOD", "table_rows", "write_eval_table"]

#: Row label of each segmentation arm.
ARM_METHOD = {
    "real": "Volume-UNet (real only)",
    "synbt": "SynBT-UNet (real + SynBT)",
    "syntumor": "SynTumor-UNet (real + SynTumor)",
}

_CSV_METRICS = ("dice", "hd95", "msd")
_CSV_STATS = ("mean", "std", "median")


def table_rows(out: Path, config: DemoConfig) -> list[dict[str, Any]]:
    """One row per segmentation arm from its ``segment/<arm>/eval/summary.json``.

    Args:
        out: the run folder.
        config: the demo's settings (its arms and mix).

    Returns:
        Rows with ``method``, ``arm``, ``synthetic_store``, ``mix``, ``n_cases``, ``metrics`` and ``checkpoint``.
    """
    rows = []
    for arm in config.seg_arms:
        summary = json.loads((Path(out) / f"segment/{arm}/eval/summary.json").read_text())
        rows.append(
            {
                "method": ARM_METHOD[arm],
                "arm": arm,
                "synthetic_store": None if arm == "real" else f"synthetic_{arm}.zarr",
                "mix": 0.0 if arm == "real" else config.seg_mix,
                "n_cases": summary["n_cases"],
                "metrics": summary["metrics"],
                "checkpoint": summary["checkpoint"],
            }
        )
    return rows


def _num(stats: dict[str, Any], key: str) -> float:
    value = stats.get(key)
    return float("nan") if value is None else float(value)


def _case_dice(path: Path) -> dict[str, float]:
    with open(path, newline="") as fh:
        return {row["case_id"]: float(row["dice"]) for row in csv.DictReader(fh) if row.get("dice") not in (None, "")}


def _paired_notes(out: Path, config: DemoConfig, *, seed: int) -> list[str]:
    """One line per synthetic arm: its per-case Dice change against real only, with a CI and a paired test."""
    import numpy as np

    from synbt_factory.evaluate.paired import paired_difference

    base_csv = Path(out) / "segment/real/eval/metrics.csv"
    if not base_csv.is_file():
        return []
    base = _case_dice(base_csv)
    notes = []
    for arm in config.seg_arms[1:]:
        arm_csv = Path(out) / f"segment/{arm}/eval/metrics.csv"
        if not arm_csv.is_file():
            continue
        diff = paired_difference(base, _case_dice(arm_csv), generator=np.random.default_rng(seed))
        notes.append(f"{ARM_METHOD[arm]} against real only, per test case: " + diff.summary("ΔDice") + ".")
    return notes


def _csv_text(rows: list[dict[str, Any]]) -> str:
    """The rows flattened: method, arm, mix, n_cases and mean / std / median of Dice, HD95 and MSD."""
    columns = ["method", "arm", "mix", "n_cases"] + [f"{m}_{s}" for m in _CSV_METRICS for s in _CSV_STATS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        flat = {k: row[k] for k in ("method", "arm", "mix", "n_cases")}
        for m in _CSV_METRICS:
            for s in _CSV_STATS:
                flat[f"{m}_{s}"] = _num(row["metrics"].get(m, {}), s)
        writer.writerow(flat)
    return buffer.getvalue()


def write_eval_table(out: Path, rows: list[dict[str, Any]], config: DemoConfig, *, seed: int) -> None:
    """Write ``eval_table.md`` (Table 1 layout with notes), ``eval_table.csv`` and ``eval_table.json`` into ``out``.

    Args:
        out: the run folder.
        rows: :func:`table_rows`.
        config: the demo's settings (for the notes and the JSON).
        seed: the run seed (notes, JSON, and the bootstrap of the paired notes).
    """
    out = Path(out)
    n_cases = sorted({r["n_cases"] for r in rows})
    notes = [
        f"synbt demo, preset {config.name}: {config.n_cases} phantom cases "
        f"({config.fov_mm[0]}×{config.fov_mm[1]}×{config.fov_mm[2]} mm at 1 mm), seed {seed}.",
        f"Every arm: U-Net ({config.seg_preset}), crop {tuple(config.seg_crop)}, {config.seg_epochs} epochs × "
        f"{config.seg_samples_per_epoch} samples = {config.seg_steps} steps at lr {config.seg_lr:g}, "
        "best validation checkpoint; "
        f"synthetic arms draw a fraction {config.seg_mix} of samples from {config.n_generate} synthetic cases.",
        f"Rests on {', '.join(str(n) for n in n_cases)} test cases (phantom test split) and 1 seed ({seed}).",
        *_paired_notes(out, config, seed=seed),
        "Demo budgets are tiny: these numbers show the pipeline runs, they do not reproduce the paper.",
    ]
    atomic_write_text(out / "eval_table.md", render_table1(rows, notes=notes))
    atomic_write_text(out / "eval_table.csv", _csv_text(rows))
    atomic_write_text(
        out / "eval_table.json",
        json.dumps(
            {"config": config_to_dict(config), "seed": seed, "rows": rows},
            indent=2,
            default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else str(v),
        )
        + "\n",
    )
