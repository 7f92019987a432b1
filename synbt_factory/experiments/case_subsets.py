"""Prepared stores holding a chosen subset of another prepared store's cases, with their split set explicitly.

An experiment needs nested real-data sizes (the 8 scarce training cases are among the 40) and one held-out
test set shared by every arm. The training code reads a store's ``split`` attributes, so each real-data size
gets its own small prepared store: its training cases (``split = "train"``) and the validation cases
(``split = "val"``), copied array by array with their checksums verified on read and recomputed on write.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synbt_factory.store import CaseStore
from synbt_factory.store.case_store import COMPLETE_KEY

__all__ = ["CaseSplit", "draw_case_split", "write_subset_store"]

log = logging.getLogger(__name__)

#: attributes ``CaseStore.write_case`` sets itself
_WRITER_KEYS = ("sha256", "case_id", COMPLETE_KEY)


@dataclass(frozen=True, kw_only=True)
class CaseSplit:
    """Case ids of one experiment: a training pool (nested sizes take its first cases), validation, test."""

    train_pool: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def train(self, size: int) -> tuple[str, ...]:
        """The first ``size`` cases of the pool: every smaller size is a subset of every larger one."""
        if not 1 <= size <= len(self.train_pool):
            raise ValueError(f"size must be in [1, {len(self.train_pool)}], got {size}")
        return self.train_pool[:size]

    def to_dict(self) -> dict[str, list[str]]:
        return {"train_pool": list(self.train_pool), "val": list(self.val), "test": list(self.test)}


def draw_case_split(
    case_ids: Sequence[str], *, pool: int, val: int, rng: np.random.Generator, min_test: int = 1
) -> CaseSplit:
    """Shuffle ``case_ids`` (sorted first, so the result depends on ``rng`` and the ids only) into pool/val/test.

    Raises:
        ValueError: when fewer than ``pool + val + min_test`` cases are given.
    """
    ids = sorted(case_ids)
    if len(ids) < pool + val + min_test:
        raise ValueError(
            f"{len(ids)} cases cannot hold a training pool of {pool}, {val} validation and at least "
            f"{min_test} test cases; make more phantom cases"
        )
    order = [ids[i] for i in rng.permutation(len(ids))]
    return CaseSplit(
        train_pool=tuple(order[:pool]), val=tuple(order[pool : pool + val]), test=tuple(sorted(order[pool + val :]))
    )


def write_subset_store(source: str | Path, out: str | Path, splits: dict[str, Sequence[str]]) -> CaseStore:
    """Copy cases of ``source`` into the prepared store ``out``, setting each case's ``split``.

    Args:
        source: prepared store.
        out: new prepared store (resumes: cases already complete there are kept).
        splits: ``{"train": ids, "val": ids, ...}``; every id must be a complete case of ``source``.

    Returns:
        the store at ``out``.
    """
    src = CaseStore.open(source)
    card = {k: v for k, v in src.attrs.items() if k not in ("synbt_schema", "store_kind", "layout")}
    card["subset_of"] = {"store": str(source), "splits": {k: list(v) for k, v in splits.items()}}
    dst = CaseStore.create(out, kind="prepared", card=card, layout=src.layout, exist_ok=True)
    have = set(dst.case_ids())
    missing = [cid for ids in splits.values() for cid in ids if cid not in src]
    if missing:
        raise ValueError(
            f"{source} has no complete case {missing[0]} ({len(missing)} missing); rebuild it or choose ids it holds"
        )
    for split, ids in splits.items():
        for case_id in ids:
            if case_id in have:
                continue
            arrays, attrs = src.read_case(case_id, src.array_names(case_id))
            kept = {k: v for k, v in attrs.items() if k not in _WRITER_KEYS}
            dst.write_case(case_id, arrays, {**kept, "split": split})
    log.info("%s: %s", out, ", ".join(f"{len(v)} {k}" for k, v in splits.items()))
    return dst
