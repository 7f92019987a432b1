"""Load a background case and place a tumor mask in it (runs on Dask workers)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synbt_factory.generate.jobs import CaseJob
from synbt_factory.rng import case_generator

__all__ = ["PlacedCase", "Placer", "shared_placer"]


@dataclass
class PlacedCase:
    """A background with its new tumor mask, ready for texture synthesis.

    Attributes:
        background: the source case actually used (the job's first choice or an alternate).
        image: (2, X, Y, Z) float32 background (pre, post).
        mask: (X, Y, Z) uint8 real tumor mask of the background (may be empty).
        synthetic_mask: (X, Y, Z) uint8 placed tumor.
        source_attrs: the background case's attributes (affine, spacing, split ...).
        placement: replayable placement record (JSON-ready).
        timings: seconds spent per stage so far.
    """

    job: CaseJob
    background: str
    image: np.ndarray
    mask: np.ndarray
    synthetic_mask: np.ndarray
    source_attrs: dict[str, Any]
    placement: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


#: memory the placement contexts of one placer may hold (about 240 backgrounds of 128×128×80, 6 of 512×512×160)
CONTEXT_CACHE_BYTES = 2 * 2**30
#: of which contexts read from the store (their anatomy stored by ``synbt data prepare`` / ``placement-context``)
#: may hold this much: reading one again costs about what its case's placement does (0.1 CPU s at 128×128×80),
#: building one costs seconds, so the built ones keep the larger budget
STORED_CONTEXT_CACHE_BYTES = 256 * 2**20


def _context_bytes(ctx: Any) -> int:
    return sum(getattr(ctx, name).nbytes for name in ("breast", "fgt", "forbidden", "avoid", "centres"))


def _is_stored(ctx: Any) -> bool:
    """Whether the context's anatomy was read from the store (cheap to read again) rather than built."""
    return getattr(ctx, "notes", {}).get("anatomy") == "stored"


class Placer:
    """Picklable: holds store/bank locations and opens them lazily on each worker.

    The placement masks of a background (body, breast, chest wall, FGT centres) depend on the
    background alone, so they are computed once and kept, the least recently used dropped first
    once they hold more than ``cache_bytes``: backgrounds repeat across thousands of cases. Contexts
    whose anatomy was read from the store are cheap to read again, so they hold at most
    ``stored_cache_bytes`` (the least recently used of them dropped first), which a run reaches
    sooner: its memory stops growing after fewer cases.
    Caching never changes results. Memory stays bounded by ``cache_bytes`` whatever the run's N.

    ``max_contexts`` (0: no bound) also bounds how many contexts are kept, whatever their size. A run whose
    cases come grouped by background (:func:`~synbt_factory.generate.jobs.by_background`, as ``generate`` does
    for methods that are not batched) needs each context only while its group runs, so a bound of about its
    worker count reads each context once per run all the same, and its memory no longer depends on how many
    backgrounds the run touches: the byte budgets alone held every background a run had touched (5.3 MB each at
    128×128×80; a 20-case SynTumor run of the 8-background bench touched 7, a 200-case run all 8, which was most
    of the difference in peak memory between them).

    A placer travels to Dask tasks by pickle, once per task; every copy of one placer unpickles to a single
    placer in the receiving process (:func:`shared_placer`), so its contexts serve every task of the run there.
    Fresh copies would rebuild a context per case, and Dask's message logs would keep each one with its contexts.
    Another ``Placer`` (a later run) shares nothing with it, so it reads the stores as they are then.
    """

    def __init__(
        self,
        prepared: str,
        bank: str,
        placement_config: dict[str, Any] | None = None,
        *,
        cache_bytes: int = CONTEXT_CACHE_BYTES,
        token: str | None = None,
        stored_cache_bytes: int = STORED_CONTEXT_CACHE_BYTES,
        max_contexts: int = 0,
    ) -> None:
        if max_contexts < 0:
            raise ValueError(f"max_contexts must be >= 0 (0: no bound), got {max_contexts}")
        self.prepared = prepared
        self.bank_location = bank
        self.placement_config = placement_config or {}
        self.cache_bytes = cache_bytes
        self.stored_cache_bytes = stored_cache_bytes
        self.max_contexts = max_contexts
        self.token = token or uuid.uuid4().hex
        self._store: Any = None
        self._bank: Any = None
        self._config: Any = None
        self._contexts: OrderedDict[str, Any] = OrderedDict()
        self._cached_bytes = 0
        self._stored_bytes = 0
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        """Unpickles to the receiving process's one copy of this placer (:func:`shared_placer`)."""
        return shared_placer, (
            self.token,
            self.prepared,
            self.bank_location,
            self.placement_config,
            self.cache_bytes,
            self.stored_cache_bytes,
            self.max_contexts,
        )

    def _context(self, store: Any, case_id: str, config: Any) -> Any:
        from synbt_factory.synthesis.background_context import context_from_store

        with self._lock:
            if case_id in self._contexts:
                self._contexts.move_to_end(case_id)
                return self._contexts[case_id]
            building = self._building.setdefault(case_id, threading.Lock())
        with building:  # threads wanting the same background wait for one build
            with self._lock:
                if case_id in self._contexts:
                    return self._contexts[case_id]
            ctx = context_from_store(store, case_id, config)
            with self._lock:
                self._contexts[case_id] = ctx
                self._cached_bytes += _context_bytes(ctx)
                self._stored_bytes += _context_bytes(ctx) if _is_stored(ctx) else 0
                self._building.pop(case_id, None)
                self._evict(keep=case_id)
        return ctx

    def _evict(self, keep: str) -> None:
        """Drop least recently used contexts (never ``keep``) until both budgets and ``max_contexts`` hold; the
        caller holds the lock. A dropped context still in use by another thread lives on until that case is
        placed."""
        while len(self._contexts) > 1:
            if self._cached_bytes > self.cache_bytes or 0 < self.max_contexts < len(self._contexts):
                victim = next(iter(self._contexts))
            elif self._stored_bytes > self.stored_cache_bytes:
                victim = next((c for c, ctx in self._contexts.items() if c != keep and _is_stored(ctx)), keep)
            else:
                return
            if victim == keep:
                return
            dropped = self._contexts.pop(victim)
            self._cached_bytes -= _context_bytes(dropped)
            self._stored_bytes -= _context_bytes(dropped) if _is_stored(dropped) else 0

    def _open(self) -> tuple[Any, Any]:
        """The prepared store and the loaded bank, opened once per placer. Worker threads call this at the same
        time: the lock makes the others wait for the first opening, so none sees a store without its bank."""
        with self._open_lock:
            if self._store is None:
                from synbt_factory.store import CaseStore
                from synbt_factory.synthesis.bank import TumorBank

                bank = TumorBank.open(self.bank_location)
                bank.load_all()
                self._bank = bank
                self._store = CaseStore.open(self.prepared)
        return self._store, self._bank

    def place(self, job: CaseJob) -> PlacedCase:
        """Read the background, draw an accepted placement from the job's own stream.

        When no placement is accepted in a background (breast too small, tumor already filling it),
        the job's alternate backgrounds are tried in order, each with its own stream.

        The background's image and mask are compared with their recorded sha256 as they are read, so
        the ``source_sha256`` the synthetic case records is the checksum of the data it was made from;
        a damaged background is never used (a deleted chunk would read back as zeros).

        Raises:
            PlacementError: naming the case and every background tried when none accepts a tumor.
            StoreError: naming the background, the array and ``synbt store verify`` when it is damaged.
        """
        from synbt_factory.config import config_from_dict
        from synbt_factory.synthesis.placement import PlacementConfig, PlacementError, place_tumor

        t0 = time.perf_counter()
        store, bank = self._open()
        if self._config is None:
            self._config = (
                config_from_dict(PlacementConfig, self.placement_config) if self.placement_config else PlacementConfig()
            )
        config = self._config
        reasons = []
        for attempt, background in enumerate(job.candidates):
            stream = "placement" if attempt == 0 else f"placement-{attempt}"
            try:
                ctx = self._context(store, background, config)
                synthetic, record = place_tumor(case_generator(job.seed, job.index, stream), bank, ctx, config)
            except PlacementError as exc:
                reasons.append(f"{background}: {exc}")
                continue
            arrays, attrs = store.read_case(background, ("image", "mask"), verify=True)
            return PlacedCase(
                job=job,
                background=background,
                image=arrays["image"].astype(np.float32),
                mask=arrays["mask"],
                synthetic_mask=synthetic,
                source_attrs=attrs,
                placement={**record.to_dict(), "background_attempt": attempt},
                timings={"placement": time.perf_counter() - t0},
            )
        raise PlacementError(f"{job.case_id}: no background accepted a tumor; " + " | ".join(reasons))


#: the placers this process unpickled, by token (see :func:`shared_placer`); the least recently used dropped first
_SHARED_PLACERS: OrderedDict[str, Placer] = OrderedDict()
_SHARED_KEEP = 2
_SHARED_LOCK = threading.Lock()


def shared_placer(
    token: str,
    prepared: str,
    bank: str,
    placement_config: dict[str, Any] | None = None,
    cache_bytes: int = CONTEXT_CACHE_BYTES,
    stored_cache_bytes: int = STORED_CONTEXT_CACHE_BYTES,
    max_contexts: int = 0,
) -> Placer:
    """This process's copy of the placer ``token`` names, made on first use; at most ``_SHARED_KEEP`` are kept."""
    key = token
    with _SHARED_LOCK:
        placer = _SHARED_PLACERS.get(key)
        if placer is None:
            placer = _SHARED_PLACERS[key] = Placer(
                prepared,
                bank,
                placement_config,
                cache_bytes=cache_bytes,
                token=token,
                stored_cache_bytes=stored_cache_bytes,
                max_contexts=max_contexts,
            )
            while len(_SHARED_PLACERS) > _SHARED_KEEP:
                _SHARED_PLACERS.popitem(last=False)
        _SHARED_PLACERS.move_to_end(key)
        return placer
