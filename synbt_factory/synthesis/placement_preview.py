"""Try the placement of bank tumors in a few background cases, for a figure (``synbt bank preview``).

:func:`preview_placements` places one bank tumor in each of a store's first cases exactly as ``synbt generate``
would (same placement rules, per-case random stream ``"placement"``) and returns the rows
:func:`synbt_factory.synthesis.placement.placement_figure` draws.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synbt_factory.store import CaseStore
    from synbt_factory.synthesis.bank import TumorBank

__all__ = ["PlacementPreview", "preview_placements"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlacementPreview:
    """The placements tried by :func:`preview_placements`.

    Attributes:
        rows: one :func:`~synbt_factory.synthesis.placement.placement_figure` row per placed tumor: ``title``
            (case, template, fractions in breast and FGT), ``image``, ``mask`` (the case's real tumor),
            ``breast``, ``fgt`` and ``new`` (the placed tumor).
        skipped: ``(case id, why)`` for each case where no placement was accepted.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def preview_placements(store: CaseStore, bank: TumorBank, *, max_cases: int = 4, seed: int = 0) -> PlacementPreview:
    """Place one tumor of ``bank`` in each of the first ``max_cases`` cases of a prepared ``store``.

    Args:
        store: prepared store (tissue from ``tissue_pred`` or tissue labels; placement contexts are read from the
            store when present, else built).
        bank: the tumor-mask bank.
        max_cases: cases tried.
        seed: run seed; case ``i`` draws from stream ``(seed, i, "placement")``.

    Returns:
        The placed rows, and the cases where no placement was accepted (a
        :class:`~synbt_factory.synthesis.placement.PlacementError`) with its message.
    """
    from synbt_factory.rng import case_generator
    from synbt_factory.synthesis.background_context import context_from_store
    from synbt_factory.synthesis.placement import PlacementError, place_tumor

    preview = PlacementPreview()
    for i, case_id in enumerate(store.case_ids()[:max_cases]):
        try:
            ctx = context_from_store(store, case_id)
            new, record = place_tumor(case_generator(seed, i, "placement"), bank, ctx)
        except PlacementError as exc:
            log.debug("no placement in %s: %s", case_id, exc)
            preview.skipped.append((case_id, str(exc)))
            continue
        arrays, _ = store.read_case(case_id, ("image", "mask"))
        preview.rows.append(
            {
                "title": f"{case_id} {record.template.template_id} in-breast {record.in_breast_fraction:.0%} "
                f"in-FGT {record.in_fgt_fraction:.0%}",
                "image": arrays["image"],
                "mask": arrays["mask"],
                "breast": ctx.breast,
                "fgt": ctx.fgt,
                "new": new,
            }
        )
    return preview
