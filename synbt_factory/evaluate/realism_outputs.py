"""Outputs of the realism report: JSON-ready figures, the one-line headline, the card entry, report.json and
the montage."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from synbt_factory.evaluate.realism_types import RealismReport, json_ready
from synbt_factory.io import atomic_write_json
from synbt_factory.store import CaseStore

__all__ = ["CARD_KEY", "CARD_TEXT_KEY", "headline_text", "json_ready", "record_headline", "write_report"]

#: Card key of the headline dict and of its one-line text.
CARD_KEY, CARD_TEXT_KEY = "realism", "realism_headline"


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3g}"


def headline_text(headline: dict[str, Any]) -> str:
    """One line (the card's ``realism_headline``, shown by ``synbt store info``)."""
    h = headline
    parts = [
        f"post/pre {_fmt(h.get('synthetic_post_over_pre_median'))} vs real {_fmt(h.get('real_post_over_pre_mean'))}",
        f"outside/inside {_fmt(h.get('footprint_outside_over_inside_median'))}",
        f"far/mask {_fmt(h.get('footprint_far_changed_over_mask_median'))}",
    ]
    if "frechet_distance" in h:
        parts.append(f"FD {_fmt(h['frechet_distance'])} (floor {_fmt(h['frechet_floor'])})")
    if "dice_synthetic" in h:
        parts.append(f"Dice syn {_fmt(h['dice_synthetic'])} vs real {_fmt(h['dice_real'])}")
    gate = h.get("gate")
    if isinstance(gate, dict):
        parts.append(f"gate {gate.get('verdict')}" + (f" ({', '.join(gate['failed'])})" if gate.get("failed") else ""))
    return "; ".join(parts)


def record_headline(synthetic: str | Path, headline: dict[str, Any]) -> None:
    """Write the headline into the store's dataset card (root attributes ``realism`` and ``realism_headline``),
    with the time it was computed; the caller holds the store's writer lock."""
    entry = json_ready({**headline, "computed": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    CaseStore.open(synthetic, mode="r+").update_card(**{CARD_KEY: entry, CARD_TEXT_KEY: headline_text(entry)})


def write_report(report_: RealismReport, out_dir: Path, *, headline: dict[str, Any] | None = None) -> dict[str, Path]:
    """``report.json`` and ``montage.png`` (real rows, then synthetic rows: pre, post, subtraction, outline,
    one intensity window for all rows) in ``out_dir``; returns their paths.

    Args:
        report_: the report.
        out_dir: folder (created).
        headline: the headline to write (e.g. with the gate verdict added); default ``report_.headline``.
    """
    from synbt_factory.figures import CaseView, case_montage

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = report_.to_dict()
    if headline is not None:
        doc["headline"] = json_ready(headline)
    path = atomic_write_json(out_dir / "report.json", doc)
    paths = {"json": path}
    rows = [CaseView(title, image, mask, second) for title, image, mask, second in report_.montage_rows]
    if rows:
        post = np.concatenate([np.asarray(r.image[1], dtype=np.float32).ravel() for r in rows])
        sub = np.concatenate(
            [(np.asarray(r.image[1], np.float32) - np.asarray(r.image[0], np.float32)).ravel() for r in rows]
        )
        window = (float(np.percentile(post, 99.8)) or 1.0, max(float(np.percentile(sub, 99.8)), 1e-3))
        paths["montage"] = case_montage(
            rows,
            out_dir / "montage.png",
            window=window,
            title=f"real tumors (red) vs synthetic (cyan): {Path(report_.synthetic).name}",
        )
    return paths
