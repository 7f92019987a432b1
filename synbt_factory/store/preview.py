"""A PNG montage of a store's first complete cases (``synbt store preview``)."""

from __future__ import annotations

import logging
from pathlib import Path

from synbt_factory.store import CaseStore, StoreError

__all__ = ["write_store_preview"]

log = logging.getLogger(__name__)


def write_store_preview(store: str | Path, out: str | Path, *, max_cases: int = 6) -> Path:
    """Draw the first ``max_cases`` complete cases of a store, one montage row each.

    Columns pre | post | post − pre | post with the tumor outlines (:func:`synbt_factory.figures.case_montage`):
    the case's mask in red and, in a synthetic store, the synthetic tumor's in cyan. A row is labelled with
    the case id and the case's method (synthetic store) or source case.

    Args:
        store: the store's location.
        out: PNG to write (its folder is created).
        max_cases: rows at most.

    Returns:
        The PNG's path.

    Raises:
        StoreError: the store cannot be read, or has no complete case.
    """
    from synbt_factory.figures import CaseView, case_montage

    s = CaseStore.open(store)
    views = []
    for case_id in s.case_ids()[:max_cases]:
        names = ["image", "mask"] + (["synthetic_mask"] if "synthetic_mask" in s.array_names(case_id) else [])
        arrays, attrs = s.read_case(case_id, names)
        label = f"{case_id} ({attrs.get('method', attrs.get('source_case', ''))})"
        views.append(CaseView(label, arrays["image"], arrays["mask"], arrays.get("synthetic_mask")))
    if not views:
        raise StoreError(f"{store} has no complete cases to preview")
    path = case_montage(views, Path(out), title=str(store))
    log.debug("wrote a preview of %d case(s) of %s to %s", len(views), store, path)
    return path
