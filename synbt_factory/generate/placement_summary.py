"""Where did a run put its tumors? A summary of the placement records of a synthetic store's cases.

The placer falls back from fibroglandular tissue to the whole breast when a background has no usable FGT (a
weak tissue model, or none). That is legal per case, but a run whose tumors all fell back is not the method the
paper describes, so the summary says so (:attr:`PlacementSummary.warning`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PlacementSummary", "summarize_placements"]

#: below this share of cases centred in FGT, the summary warns
MIN_FGT_SHARE = 0.5


@dataclass(frozen=True)
class PlacementSummary:
    """Placement of ``n`` cases.

    Attributes:
        n: cases with a placement record.
        in_fgt_region: cases whose centre was drawn in FGT (the rest fell back to the whole breast).
        mean_in_fgt_fraction: mean share of tumor voxels inside the FGT mask.
        voxels_p10_median_p90: tumor sizes in voxels.
        mean_tries: mean placement attempts per case.
    """

    n: int
    in_fgt_region: int
    mean_in_fgt_fraction: float
    voxels_p10_median_p90: tuple[float, float, float]
    mean_tries: float

    @property
    def fallbacks(self) -> int:
        return self.n - self.in_fgt_region

    def text(self) -> str:
        if self.n == 0:
            return "placement: no placement records"
        p10, med, p90 = self.voxels_p10_median_p90
        return (f"placement: {self.in_fgt_region}/{self.n} centred in FGT ({self.fallbacks} fell back to the whole "
                f"breast), mean in-FGT share of tumor voxels {self.mean_in_fgt_fraction:.2f}, tumor voxels median "
                f"{med:.0f} (p10–p90 {p10:.0f}–{p90:.0f}), {self.mean_tries:.1f} tries per case")

    @property
    def warning(self) -> str | None:
        """A sentence naming the cause and the fix when fewer than half the tumors were placed in FGT."""
        if self.n == 0 or self.in_fgt_region >= MIN_FGT_SHARE * self.n:
            return None
        return (f"only {self.in_fgt_region} of {self.n} tumors were centred in fibroglandular tissue; the others fell "
                "back to the whole breast because their background has no usable FGT mask. Train or improve the "
                "tissue model (synbt train tissue, then synbt data tissue) and check it with synbt store preview")


def summarize_placements(records: Iterable[dict[str, Any] | None]) -> PlacementSummary:
    """Summarise placement records (the ``placement`` attribute of synthetic cases; ``None`` entries are skipped)."""
    rows = [r for r in records if r]
    if not rows:
        return PlacementSummary(0, 0, 0.0, (0.0, 0.0, 0.0), 0.0)
    voxels = np.array([float(r.get("voxels", 0)) for r in rows])
    p10, med, p90 = (float(v) for v in np.percentile(voxels, [10, 50, 90]))
    return PlacementSummary(
        n=len(rows),
        in_fgt_region=sum(r.get("centre_region") == "fgt" for r in rows),
        mean_in_fgt_fraction=float(np.mean([float(r.get("in_fgt_fraction", 0.0)) for r in rows])),
        voxels_p10_median_p90=(p10, med, p90),
        mean_tries=float(np.mean([float(r.get("tries", 1)) for r in rows])),
    )
