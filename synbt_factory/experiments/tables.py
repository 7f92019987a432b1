"""Markdown tables of the experiments' results, rendered in one place.

* :func:`render_table1`: segmenters on the test cases, shaped like the paper's Table 1 (Table 1 experiment and
  the demo's evaluation table).
* :func:`render_realism_table`: the realism headline of each synthetic store (evidence experiment).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_mean_std", "render_realism_table", "render_table1"]


def format_mean_std(stats: dict[str, Any] | None, digits: int) -> str:
    """``mean ± std`` of a metric's summary, or ``n/a`` when it has no finite mean.

    Args:
        stats: ``{"mean": ..., "std": ...}`` (or ``None``).
        digits: decimals of both numbers.
    """
    if not stats or stats.get("mean") is None or not math.isfinite(float(stats["mean"])):
        return "n/a"
    return f"{float(stats['mean']):.{digits}f} ± {float(stats['std']):.{digits}f}"


def render_table1(rows: list[dict[str, Any]], *, notes: list[str] | None = None, mama_mia: bool = False) -> str:
    """Markdown shaped like the paper's Table 1 (DSC as a fraction, distances in mm, mean ± std).

    Args:
        rows: one per method, in table order: ``method`` and ``metrics`` (``dice``, ``hd95``, ``msd`` summaries),
            ``mama_mia_score`` with ``mama_mia``, or ``skipped`` (the reason) instead of the metrics.
        notes: bullet points under the table.
        mama_mia: add the MAMA-MIA challenge score column.

    Returns:
        The table, its caption and notes, ending with a newline.
    """
    head = "| Method | DSC ↑ | 95HD (mm) ↓ | MSD (mm) ↓ |" + (" MAMA-MIA score ↑ |" if mama_mia else "")
    rule = "|---|---|---|---|" + ("---|" if mama_mia else "")
    lines = [
        "Table 1. Segmentation on the test cases: Dice (DSC), 95% Hausdorff distance (95HD) and mean "
        "surface distance (MSD), mean ± std over cases (MedPy, mm).",
        "",
        head,
        rule,
    ]
    for row in rows:
        if row.get("skipped"):
            lines.append(f"| {row['method']} | {row['skipped']} | | |" + (" |" if mama_mia else ""))
            continue
        m = row["metrics"]
        line = (
            f"| {row['method']} | {format_mean_std(m.get('dice'), 4)} | {format_mean_std(m.get('hd95'), 2)} "
            f"| {format_mean_std(m.get('msd'), 2)} |"
        )
        if mama_mia:
            score = row.get("mama_mia_score")
            line += f" {score:.4f} |" if isinstance(score, float) and math.isfinite(score) else " n/a |"
        lines.append(line)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def render_realism_table(realism: dict[str, dict[str, Any]]) -> str:
    """One row per synthetic store: its realism headline against the real tumors of its size.

    Args:
        realism: by store name, its realism headline (post/pre ratios, footprint ratios, ``targets`` verdict).

    Returns:
        The Markdown table, rows sorted by store name, without a final newline.
    """

    def num(value: Any) -> str:
        return "–" if value is None else f"{float(value):.2f}"

    lines = [
        "| store | post/pre synthetic | post/pre real | outside/inside | far/mask | targets |",
        "|---|---|---|---|---|---|",
    ]
    for name, h in sorted(realism.items()):
        targets = h.get("targets") or {}
        verdict = targets.get("verdict", "–") + (f" ({', '.join(targets['failed'])})" if targets.get("failed") else "")
        lines.append(
            f"| {name} | {num(h.get('synthetic_post_over_pre_median'))} | "
            f"{num(h.get('real_post_over_pre_mean'))} | {num(h.get('footprint_outside_over_inside_median'))} "
            f"| {num(h.get('footprint_far_changed_over_mask_median'))} | {verdict} |"
        )
    return "\n".join(lines)
