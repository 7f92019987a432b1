"""``synbt store info``: counts, size on disk and the dataset card."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from synbt_factory.store.case_store import CaseStore

__all__ = ["store_info"]


def _size_on_disk(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total


def store_info(location: str | Path) -> dict[str, Any]:
    """A JSON-ready summary: kind, complete/incomplete/damaged counts, bytes on disk, the card.

    Damaged case groups (unsafe names, unreadable metadata) are counted, not read: ``synbt store
    verify`` names them.
    """
    store = CaseStore.open(location)
    complete = store.case_ids()
    local = Path(str(location))
    size = _size_on_disk(local) if local.exists() else None
    card = {k: v for k, v in store.attrs.items() if k != "case_ids"}
    return {
        "location": str(location),
        "kind": store.kind,
        "complete_cases": len(complete),
        "incomplete_cases": len(store.incomplete_case_ids()),
        "damaged_case_groups": len(store.damaged_case_groups()),
        "bytes_on_disk": size,
        "bytes_per_case": (size / len(complete)) if size and complete else None,
        "card": card,
    }
