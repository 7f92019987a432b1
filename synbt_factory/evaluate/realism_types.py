"""The small shared pieces of the realism report: its config, the report and per-tumor records, and helpers.

They live below :mod:`~synbt_factory.evaluate.realism`, :mod:`~synbt_factory.evaluate.realism_networks` and
:mod:`~synbt_factory.evaluate.realism_outputs`, which all import from here (and never from each other upwards);
:mod:`~synbt_factory.evaluate.realism` re-exports them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synbt_factory.evaluate.realism_figures import CHANGE_THRESHOLD, FAR_MM

__all__ = ["RealismConfig", "RealismReport", "TumorFigures", "case_spacing", "json_ready", "spread"]


def json_ready(value: Any) -> Any:
    """JSON-ready: numpy scalars → Python, tuples → lists, NaN/inf → None."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True, kw_only=True)
class RealismConfig:
    """What the report computes.

    Args:
        max_cases: synthetic cases, and real tumors, compared at most (spread evenly over the case ids).
        shell_mm: the shell around a tumor whose FGT and fat it is contrasted with, (lo, hi] mm.
        change_threshold: |Δ| above which a far voxel counts as changed.
        far_mm: distance from the mask beyond which a changed voxel is far.
        crop: tumor-centred crop (voxels) for the feature distance; None = the VQ-VAE's patch size.
        segmenter_cases: synthetic cases, and held-out real cases, segmented for detectability.
        ridge: covariance ridge of the Fréchet distance (relative to the mean variance).
    """

    max_cases: int = 48
    shell_mm: tuple[float, float] = (1.0, 5.0)
    change_threshold: float = CHANGE_THRESHOLD
    far_mm: float = FAR_MM
    crop: tuple[int, int, int] | None = None
    segmenter_cases: int = 8
    ridge: float = 1e-6

    def __post_init__(self) -> None:
        if self.max_cases < 1:
            raise ValueError(f"max_cases must be >= 1, got {self.max_cases}")
        if not 0 <= self.shell_mm[0] < self.shell_mm[1]:
            raise ValueError(f"shell_mm must be (lo, hi) with 0 <= lo < hi, got {self.shell_mm}")
        if self.segmenter_cases < 1:
            raise ValueError(f"segmenter_cases must be >= 1, got {self.segmenter_cases}")


@dataclass(frozen=True)
class RealismReport:
    """The report: ``figures`` by section, the ``headline`` (what the card and the gate use), ``notes``."""

    synthetic: str
    real: str
    figures: dict[str, Any]
    headline: dict[str, Any]
    notes: tuple[str, ...] = ()
    montage_rows: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return json_ready(
            {
                "synthetic": self.synthetic,
                "real": self.real,
                "headline": self.headline,
                "figures": self.figures,
                "notes": list(self.notes),
            }
        )


def spread(ids: Sequence[Any], n: int) -> list[Any]:
    """At most ``n`` of ``ids``, evenly spaced over the list (all of them when there are fewer)."""
    if len(ids) <= n:
        return list(ids)
    return [ids[int(i)] for i in np.linspace(0, len(ids) - 1, n).round().astype(int)]


def case_spacing(attrs: dict[str, Any]) -> tuple[float, float, float]:
    """A case's voxel spacing (mm) from its attributes (1 mm when unrecorded)."""
    return tuple(float(s) for s in attrs.get("spacing", (1.0, 1.0, 1.0)))  # type: ignore[return-value]


@dataclass
class TumorFigures:
    """Figures of one tumor (real or synthetic) and what the later sections need."""

    case_id: str
    ratio: float | None
    voxels: int
    contrast: dict[str, float | None]
    shape: dict[str, float | None]
    footprint: Any = None
