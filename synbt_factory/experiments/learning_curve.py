"""The training budget from learning curves: where validation Dice stops rising, for every real-data size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["plateau_step", "choose_budget", "plot_learning_curves"]

#: a curve has reached its plateau once its smoothed value is within this of its best smoothed value
PLATEAU_TOLERANCE = 0.02


def _smoothed(values: np.ndarray) -> np.ndarray:
    """Mean of each point and its two neighbours (one neighbour at the ends): validation Dice on a few cases is
    noisy from one evaluation to the next."""
    padded = np.concatenate([values[:1], values, values[-1:]])
    return (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0


def plateau_step(curve: Sequence[Mapping[str, float]], *, tolerance: float = PLATEAU_TOLERANCE) -> int:
    """First step whose smoothed validation Dice is within ``tolerance`` of the curve's best smoothed Dice.

    Args:
        curve: ``[{"step": s, "val_dice": d}, ...]`` in step order.
    """
    points = [(int(p["step"]), float(p["val_dice"])) for p in curve if np.isfinite(float(p["val_dice"]))]
    if not points:
        raise ValueError("the learning curve has no finite validation Dice")
    steps = np.array([s for s, _ in points])
    smooth = _smoothed(np.array([d for _, d in points]))
    return int(steps[int(np.argmax(smooth >= smooth.max() - tolerance))])


def choose_budget(curves: Mapping[str, Sequence[Mapping[str, float]]], *, tolerance: float = PLATEAU_TOLERANCE) -> int:
    """The latest plateau step over every real-data size's curve: no size is stopped while it still learns."""
    if not curves:
        raise ValueError("no learning curves")
    return max(plateau_step(c, tolerance=tolerance) for c in curves.values())


def plot_learning_curves(
    curves: Mapping[str, Sequence[Mapping[str, float]]], out_png: str | Path, *, chosen: int | None = None
) -> Path:
    """Validation Dice against training step, one line per real-data size; a dashed line at the chosen budget."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=110)
    ax = fig.add_subplot()
    for size, curve in sorted(curves.items(), key=lambda kv: int(kv[0])):
        steps = [int(p["step"]) for p in curve]
        dice = [float(p["val_dice"]) for p in curve]
        (line,) = ax.plot(steps, dice, marker="o", ms=3, lw=1, alpha=0.5, label=f"{size} real cases")
        ax.plot(steps, _smoothed(np.asarray(dice)), lw=2, color=line.get_color())
        ax.axvline(plateau_step(curve), color=line.get_color(), lw=0.8, ls=":")
    if chosen is not None:
        ax.axvline(chosen, color="black", lw=1.2, ls="--", label=f"budget: {chosen} steps")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation Dice (real-only, seed 0)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Learning curves: thin = raw, thick = 3-point mean, dotted = plateau", fontsize=9)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, bbox_inches="tight")
    return out_png
