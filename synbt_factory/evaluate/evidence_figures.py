"""Figure of a segmentation experiment: Dice against the number of real training cases, one line per arm.

Reads an :func:`~synbt_factory.evaluate.evidence_stats.evidence_summary` (or the per-case rows it is made from)
and draws one panel per test set: x = real training cases (categorical, ascending), y = mean Dice over the
(seed × case) matrix with its two-level bootstrap CI as error bars, arms slightly offset along x so their bars
do not overlap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synbt_factory.evaluate.evidence_stats import evidence_summary
from synbt_factory.figures import new_figure, save_figure

__all__ = ["plot_dice_vs_size"]

logger = logging.getLogger(__name__)


def _span(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def plot_dice_vs_size(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    out_png: str | Path,
    *,
    test_sets: Sequence[str] | None = None,
    rng: np.random.Generator | None = None,
    baseline: str = "real",
    n_boot: int = 2000,
    level: float = 0.95,
) -> Path:
    """Write a PNG of mean Dice [CI] against real training cases, one panel per test set, one line per arm.

    Args:
        data: an :func:`~synbt_factory.evaluate.evidence_stats.evidence_summary`, or its per-case rows.
        out_png: PNG to write (atomically, :func:`synbt_factory.figures.save_figure`; the folder is created).
        test_sets: panels, in order; None = every test set of the summary.
        rng: draws the bootstrap when ``data`` is rows (required then, unused for a summary).
        baseline, n_boot, level: passed to ``evidence_summary`` when ``data`` is rows.

    Returns:
        The PNG's path.

    Raises:
        ValueError: rows without ``rng``, an unknown test set, or an empty summary.
    """
    if isinstance(data, Mapping):
        summary = data
    else:
        if rng is None:
            raise ValueError("plotting from per-case rows needs rng= (a numpy Generator) for the bootstrap")
        summary = evidence_summary(data, rng=rng, baseline=baseline, n_boot=n_boot, level=level)
    groups = summary.get("groups") or []
    if not groups:
        raise ValueError("the summary has no (test set, size) group to plot")
    available = list(summary.get("test_sets") or dict.fromkeys(g["test_set"] for g in groups))
    panels = list(test_sets) if test_sets is not None else available
    unknown = [t for t in panels if t not in available]
    if unknown or not panels:
        raise ValueError(f"test sets {unknown or panels} not in the summary (it has: {', '.join(available)})")

    sizes = sorted({int(g["size"]) for g in groups})
    arms = list(summary.get("arms") or dict.fromkeys(e["arm"] for g in groups for e in g["arms"]))
    step = min(0.12, 0.6 / max(len(arms), 1))
    offsets = {arm: (j - (len(arms) - 1) / 2) * step for j, arm in enumerate(arms)}
    level_pct = f"{summary.get('level', level) * 100:g} %"
    fig, axes = new_figure(1, len(panels), figsize=(5.2 * len(panels), 4.2), sharey=True)
    for ax, test_set in zip(axes[0], panels, strict=True):
        mine = [g for g in groups if g["test_set"] == test_set]
        for j, arm in enumerate(arms):
            xs, ys, lows, highs = [], [], [], []
            for g in mine:
                entry = next((e for e in g["arms"] if e["arm"] == arm), None)
                if entry is None or entry["dice"]["mean"] is None:
                    continue
                d = entry["dice"]
                xs.append(sizes.index(int(g["size"])) + offsets[arm])
                ys.append(d["mean"])
                lows.append(d["mean"] - (d["ci_low"] if d["ci_low"] is not None else d["mean"]))
                highs.append((d["ci_high"] if d["ci_high"] is not None else d["mean"]) - d["mean"])
            if xs:
                ax.errorbar(
                    xs,
                    ys,
                    yerr=[lows, highs],
                    marker="o",
                    capsize=4,
                    linewidth=1.5,
                    markersize=5,
                    color=f"C{j}",
                    label=arm,
                )
        ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
        ax.set_xlim(-0.5, len(sizes) - 0.5)
        ax.set_xlabel("real training cases")
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(
            f"test set: {test_set}\nmean over {_span([g['n_seeds'] for g in mine])} seeds × "
            f"{_span([g['n_cases'] for g in mine])} test cases, {level_pct} bootstrap CI",
            fontsize=10,
        )
    axes[0][0].set_ylabel("Dice")
    axes[0][-1].legend(title="training arm", fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, out_png, dpi=110)
    logger.info("wrote %s", path)
    return path
