"""Tumor texture methods the factory can run: the interface and the SynTumor adapter.

A method turns placed cases into images with a tumor. ``batched`` methods (SynBT's diffusion
sampler) run on the driver's device over batches; the others run per case on Dask workers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from synbt_factory.generate.placing import PlacedCase
from synbt_factory.rng import case_generator

__all__ = ["TumorMethod", "Synthesized", "SynTumorMethod"]

#: (image (2, X, Y, Z) float32 with the tumor, JSON-ready record of what was drawn, stage seconds)
Synthesized = tuple[np.ndarray, dict[str, Any], dict[str, float]]


@runtime_checkable
class TumorMethod(Protocol):
    name: str
    batched: bool

    def card(self) -> dict[str, Any]:
        """Config and checkpoint hashes, recorded in the store's dataset card."""
        ...

    def synthesize(self, cases: Sequence[PlacedCase]) -> list[Synthesized]:
        """Insert a tumor texture inside each case's ``synthetic_mask``; one result per case, same order."""
        ...


class SynTumorMethod:
    """The analytical SynTumor baseline (Hu et al. 2023) adapted to DCE-MRI; no model, CPU only.

    Enhancement amplitudes are drawn from the real tumors of the prepared store. A placed case's float32 image
    is overwritten with its tumor (no copy of the volume): each result's image is the case's own array.
    """

    name = "syntumor"
    batched = False

    def __init__(self, stats: Any) -> None:
        self.stats = stats

    @classmethod
    def from_prepared(cls, prepared: str) -> SynTumorMethod:
        from synbt_factory.store import CaseStore
        from synbt_factory.synthesis.syntumor import EnhancementStats

        return cls(EnhancementStats.from_store(CaseStore.open(prepared)))

    def card(self) -> dict[str, Any]:
        stats = self.stats.to_dict() if hasattr(self.stats, "to_dict") else {}
        return {"method": self.name, "enhancement_stats": stats}

    def synthesize(self, cases: Sequence[PlacedCase]) -> list[Synthesized]:
        from synbt_factory.synthesis.syntumor import syntumor_insert

        out: list[Synthesized] = []
        for case in cases:
            t0 = time.perf_counter()
            rng = case_generator(case.job.seed, case.job.index, "texture")
            in_place = case.image.dtype == np.float32 and case.image.flags.writeable
            image, _, record = syntumor_insert(case.image, case.synthetic_mask, rng, self.stats, in_place=in_place)
            rec = record.to_dict() if hasattr(record, "to_dict") else dict(record)
            out.append((np.asarray(image, dtype=np.float32), rec, {"synthesis": time.perf_counter() - t0}))
        return out
