"""Where did a run put its tumors? A summary of the placement records of a synthetic store's cases.

The placer falls back from fibroglandular tissue to the whole breast when a background has no usable FGT (a
weak tissue model, or none). That is legal per case, but a run whose tumors all fell back is not the method the
paper describes, so the summary says so (:attr:`PlacementSummary.warning`). Likewise a run whose tumors were
mostly shrunk to the breast-size cap: the cap is a fraction of the background's breast size, and a breast mask
that covers only part of the breast (a weak tissue model's ``breast_pred``) makes every tumor small.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PlacementSummary", "summarize_placements"]

#: below this share of cases centred in FGT, the summary warns
MIN_FGT_SHARE = 0.5
#: above this share of tumors shrunk to the breast-size cap, the summary warns
MAX_CAPPED_SHARE = 0.5


@dataclass(frozen=True)
class PlacementSummary:
    """Placement of ``n`` cases.

    Attributes:
        n: cases with a placement record.
        in_fgt_region: cases whose centre was drawn in FGT (the rest fell back to the whole breast).
        mean_in_fgt_fraction: mean share of tumor voxels inside the FGT mask.
        voxels_p10_median_p90: tumor sizes in voxels.
        mean_tries: mean placement attempts per case.
        capped: tumors shrunk to the breast-size cap, among ``cap_known`` records that say (older ones do not).
        median_breast_size_mm: the backgrounds' breast sizes the cap used (None when no record has one).
    """

    n: int
    in_fgt_region: int
    mean_in_fgt_fraction: float
    voxels_p10_median_p90: tuple[float, float, float]
    mean_tries: float
    capped: int = 0
    cap_known: int = 0
    median_breast_size_mm: float | None = None

    @property
    def fallbacks(self) -> int:
        return self.n - self.in_fgt_region

    def text(self) -> str:
        if self.n == 0:
            return "placement: no placement records"
        p10, med, p90 = self.voxels_p10_median_p90
        return (
            f"placement: {self.in_fgt_region}/{self.n} centred in FGT ({self.fallbacks} fell back to the whole "
            f"breast), mean in-FGT share of tumor voxels {self.mean_in_fgt_fraction:.2f}, tumor voxels median "
            f"{med:.0f} (p10–p90 {p10:.0f}–{p90:.0f}), {self.mean_tries:.1f} tries per case"
            + (f", {self.capped}/{self.cap_known} shrunk to the breast-size cap" if self.cap_known else "")
        )

    @property
    def warnings(self) -> list[str]:
        """Sentences naming the cause and the fix: fewer than half the tumors placed in FGT, or most of them
        shrunk to the breast-size cap."""
        out = []
        if self.n and self.in_fgt_region < MIN_FGT_SHARE * self.n:
            out.append(
                f"only {self.in_fgt_region} of {self.n} tumors were centred in fibroglandular tissue; the "
                "others fell back to the whole breast because their background has no usable FGT mask. Train "
                "or improve the tissue model (synbt train tissue, then synbt data tissue) and check it with "
                "synbt store preview"
            )
        if self.cap_known and self.capped > MAX_CAPPED_SHARE * self.cap_known:
            size = "" if self.median_breast_size_mm is None else f" (median {self.median_breast_size_mm:.0f} mm)"
            out.append(
                f"{self.capped} of {self.cap_known} tumors were shrunk to the breast-size cap "
                f"(PlacementConfig.max_diameter_fraction × the background's breast size{size}), so they are "
                "smaller than the bank's. A breast mask that covers only part of the breast (a weak tissue "
                "model's breast_pred) does this: check the masks with synbt bank preview, improve the "
                "tissue model, or raise max_diameter_fraction"
            )
        return out

    @property
    def warning(self) -> str | None:
        """All :attr:`warnings` in one line, or None."""
        return " | ".join(self.warnings) or None


def summarize_placements(records: Iterable[dict[str, Any] | None]) -> PlacementSummary:
    """Summarise placement records (the ``placement`` attribute of synthetic cases; ``None`` entries are skipped)."""
    rows = [r for r in records if r]
    if not rows:
        return PlacementSummary(0, 0, 0.0, (0.0, 0.0, 0.0), 0.0)
    voxels = np.array([float(r.get("voxels", 0)) for r in rows])
    p10, med, p90 = (float(v) for v in np.percentile(voxels, [10, 50, 90]))
    known = [r for r in rows if "size_capped" in r]
    sizes = [float(r["breast_size_mm"]) for r in known if r.get("breast_size_mm")]
    return PlacementSummary(
        n=len(rows),
        in_fgt_region=sum(r.get("centre_region") == "fgt" for r in rows),
        mean_in_fgt_fraction=float(np.mean([float(r.get("in_fgt_fraction", 0.0)) for r in rows])),
        voxels_p10_median_p90=(p10, med, p90),
        mean_tries=float(np.mean([float(r.get("tries", 1)) for r in rows])),
        capped=sum(bool(r["size_capped"]) for r in known),
        cap_known=len(known),
        median_breast_size_mm=float(np.median(sizes)) if sizes else None,
    )
