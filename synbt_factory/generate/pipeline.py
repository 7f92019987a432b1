"""The production pipeline: workers place and write, the driver samples in batches.

Flow per case: pick background → place mask (worker) → synthesize texture (driver batch on
the device for SynBT; the worker for SynTumor) → write arrays, attributes, then the marker
(worker). At most ``max_inflight`` cases are in flight; a method that is not batched runs its cases grouped
by background with one placement context per worker (+1), and each case volume is mapped on its own
(:func:`_map_volumes`), so memory does not grow with N (nor with the backgrounds a run touches).
Truth lives in the store's markers: a rerun removes unmarked groups and ``*.partial`` files
and produces exactly the missing cases.

Workers: a run in one process (``cluster="threads"``, the default) uses a pool of ``workers`` threads
(:class:`_ThreadExecutor`) and never imports Dask; a process ``LocalCluster`` or a joined scheduler uses
Dask (:class:`_DaskExecutor`). In one process Dask's scheduler, worker and comms added about 1 CPU s to every
call (importing ``dask.distributed`` and starting a client; 3.8 → 2.9 CPU s for a one-case call on a loaded
2-core machine) and per-task bookkeeping, for no parallelism a thread pool lacks; the pool's cost per case is
no higher (``bench/generate_bench``), so it is the executor of every in-process run, whatever N.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from synbt_factory import __version__
from synbt_factory.config import config_from_dict, config_to_dict
from synbt_factory.generate.jobs import CaseJob, GenerateConfig, by_background, plan_jobs
from synbt_factory.generate.methods import Synthesized, TumorMethod
from synbt_factory.generate.placing import PlacedCase, Placer
from synbt_factory.generate.quality_gate import QualityGate, check_first_batch, gate_applies, gate_off_record
from synbt_factory.progress import ProgressFn, report
from synbt_factory.store import CaseStore, StoreError, StoreLayout
from synbt_factory.store.lock import writer_lock

__all__ = ["GenerateError", "GenerateResult", "QualityGateError", "run_generate", "write_synthetic_case"]

log = logging.getLogger(__name__)

LICENCE = (
    "Synthetic data derived from the source dataset named in this card; the source dataset's licence and "
    "terms of use apply. Intended use: training and evaluating tumor segmentation models in research. "
    "Not for diagnosis. Every case carries a synthetic tumor (synthetic_mask); backgrounds are real source cases."
)


class GenerateError(RuntimeError):
    """The run could not produce some cases; finished cases are kept."""


class QualityGateError(GenerateError):
    """The quality gate stopped the run after its first batch (:mod:`synbt_factory.generate.quality_gate`);
    finished cases are kept and the card records the verdict."""


@dataclass
class GenerateResult:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    removed_incomplete: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0


def _library_versions() -> dict[str, str]:
    """Versions of the libraries a run uses, read from package metadata (importing torch and MONAI just to name
    their versions cost a SynTumor run seconds of CPU; ``"not installed"`` where a package has no metadata)."""
    versions = {"synbt": __version__}
    for package in ("torch", "monai", "zarr", "numpy", "dask"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


#: Test-only: with ``SYNBT_TEST_KILL_AFTER=N`` in its environment, a process SIGKILLs itself right after it has
#: committed (written the marker of) its N-th case, before any other case is committed; see :func:`_commit_case`.
KILL_AFTER_ENV = "SYNBT_TEST_KILL_AFTER"
_kill_lock = threading.Lock()
_committed_here = 0


def _commit_case(store: CaseStore, case_id: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """``store.write_case``, plus the test-only stop of :data:`KILL_AFTER_ENV`.

    With ``SYNBT_TEST_KILL_AFTER=N`` set, the writes of this process are serialised and counted, and the one that
    commits the N-th case kills the process with SIGKILL while it still holds the lock: the store then holds
    exactly N complete cases of this run (a crash at a known point, for the resume tests), whatever the machine's
    speed. The count is per process, so it stops a run on the in-process (``threads``) cluster, which writes on
    the driver's process. Unset (always, outside tests), writes are neither serialised nor counted.

    Raises:
        ValueError: the variable is set but not a positive integer.
    """
    raw = os.environ.get(KILL_AFTER_ENV)
    if not raw:
        store.write_case(case_id, arrays, attrs)
        return
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"{KILL_AFTER_ENV} must be a positive integer (a test-only hook), got {raw!r}")
    global _committed_here
    with _kill_lock:
        store.write_case(case_id, arrays, attrs)
        _committed_here += 1
        if _committed_here >= limit:
            log.warning("%s=%d: killing this process after committing case %s", KILL_AFTER_ENV, limit, case_id)
            os.kill(os.getpid(), signal.SIGKILL)


#: blocks of at least this many bytes get their own memory map from glibc's malloc (:func:`_map_volumes`): every
#: volume of a case (its 2-channel float32 image is 10.5 MB at 128×128×80), not its masks (1.3 MB)
MMAP_THRESHOLD_BYTES = 4 * 2**20
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_mapping_set = False
_mapping_lock = threading.Lock()


def _map_volumes() -> None:
    """Have glibc's malloc map each block of :data:`MMAP_THRESHOLD_BYTES` or more on its own, once per process.

    By default glibc raises its mmap threshold to the size of the largest mapped block freed so far (up to
    32 MiB), so after the first case every volume a case allocates (background read and cast, synthesized
    image, its float16 copy, the encoder's buffers) is carved from the malloc arenas of the thread that asks
    for it: two generate threads, zarr's and the store's I/O threads (13 arenas in a SynTumor run). Freed
    volumes stay there as fragments, resident, and the fragments grow with the cases written: with the same
    placement contexts held, arenas grew 122 → 150 MiB (of which 93 → 110 MiB free) between case 20 and 199,
    and peak RSS 218 → 233 MiB from a 20- to a 200-case run. Mapped, a freed volume goes back to the system
    at once: with the placement contexts bounded too, ``bench/generate_bench`` measured a peak (``VmHWM``) of
    147 MiB at N=20 and 154 MiB at N=200 (medians of 8 rounds, 1.05; 227 and 252 MiB before), for the page
    faults of mapping each volume afresh (about 6,000 per case; +14–36 % CPU in 3 interleaved pairs at N=100).
    Masks and smaller blocks stay in the arenas.

    The setting is the process's (glibc has no call to restore the moving threshold), set by ``generate`` in
    the process that runs its cases: the driver, and each Dask worker process on its first task. It works from
    then on: a free block already in the heap that a volume fits in is still reused (in a long-lived process, a
    test session or a notebook, volumes may keep coming from there). A no-op where the C library is not glibc.
    """
    global _mapping_set
    if _mapping_set:
        return
    with _mapping_lock:
        if _mapping_set:
            return
        _mapping_set = True
        import platform

        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return
        import ctypes

        try:
            done = ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        except (AttributeError, OSError):
            done = 0
        if not done:
            log.debug("mallopt(M_MMAP_THRESHOLD) is not available: volumes are allocated as malloc decides")


def _clipped_half(image: np.ndarray, clip: float) -> np.ndarray:
    """``np.clip(image, 0, clip).astype(np.float16)``, the same bytes, clipped straight into the float16 array
    (no clipped full-precision copy of the volume)."""
    out = np.empty(np.shape(image), dtype=np.float16)
    np.clip(image, 0.0, clip, out=out, casting="unsafe")
    return out


def _drop_background(placed: PlacedCase) -> None:
    """Free a placed case's background image once its synthesized image exists: writing the case needs only the
    masks and attributes, so the volume is not held through the write's buffers."""
    placed.image = np.empty((0,), dtype=np.float32)


def write_synthetic_case(location: str, placed: PlacedCase, synthesized: Synthesized, method: str) -> dict[str, float]:
    """Write one synthetic case (arrays, attributes, marker last); returns stage seconds.

    Tests can stop the process right after a given number of committed cases with ``SYNBT_TEST_KILL_AFTER``
    (:func:`_commit_case`).
    """
    return _write_next(location, placed, [synthesized], method)


def _write_next(location: str, placed: PlacedCase, pending: list[Synthesized], method: str) -> dict[str, float]:
    """:func:`write_synthetic_case` of ``pending[0]``, taken off the list: where the list held the only reference,
    its full-precision image is freed once clipped into float16, before the case is encoded."""
    t0 = time.perf_counter()
    store = CaseStore.open(location, mode="r+")
    clip = float(store.attrs.get("clip_max", 8.0))
    image, record, timings = pending.pop(0)
    arrays = {
        "image": _clipped_half(image, clip),
        "mask": ((placed.mask > 0) | (placed.synthetic_mask > 0)).astype(np.uint8),
        "synthetic_mask": (placed.synthetic_mask > 0).astype(np.uint8),
    }
    del image
    src = placed.source_attrs
    attrs = {
        "affine": src["affine"],
        "spacing": src["spacing"],
        "source_case": placed.background,
        "source_sha256": src.get("sha256", {}).get("image"),
        "split": "train",
        "dataset": src.get("dataset"),
        "method": method,
        "seed": placed.job.seed,
        "case_index": placed.job.index,
        "placement": placed.placement,
        "synthesis": record,
    }
    _commit_case(store, placed.job.case_id, arrays, attrs)
    return {**placed.timings, **timings, "write": time.perf_counter() - t0}


def _open_or_create(
    out: str,
    config: GenerateConfig,
    method: TumorMethod,
    prepared: CaseStore,
    bank: str,
    layout: StoreLayout | None,
    placement: dict[str, Any],
) -> CaseStore:
    identity = {
        **config.identity(),
        "method_card": method.card(),
        "prepared": str(prepared.location),
        "bank": str(bank),
        "placement_config": placement,
    }
    card = {
        "synthetic": True,
        "generator_version": __version__,
        "generate_config": config_to_dict(config),
        "run_identity": identity,
        "library_versions": _library_versions(),
        "source_dataset": prepared.attrs.get("source_dataset"),
        "source_prepare_config": prepared.attrs.get("prepare_config"),
        "licence": LICENCE,
        "clip_max": float((prepared.attrs.get("prepare_config") or {}).get("clip_max", 8.0)),
    }
    store = CaseStore.create(out, kind="synthetic", card=card, layout=layout, exist_ok=True)
    if store.attrs.get("run_identity") != identity:
        raise StoreError(
            f"{out} was generated with other settings (seed, method, models, source, bank or placement differ); "
            "rerun with the same options to resume, or choose a new --out"
        )
    return store


_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def _holding_writer_lock(fn: _Fn) -> _Fn:
    """Run ``fn`` under the writer lock of its ``out`` store (taken by the driver; workers write without it)."""

    @functools.wraps(fn)
    def locked(*args: Any, out: str | Path, **kwargs: Any) -> Any:
        with writer_lock(str(out), command="generate"):
            return fn(*args, out=out, **kwargs)

    return locked  # type: ignore[return-value]


def _note_unstored_anatomy(
    source: CaseStore, backgrounds: dict[str, dict[str, Any]], placement_config: dict[str, Any] | None
) -> None:
    """Log once when backgrounds (id → attributes, read once by the caller) lack a stored placement anatomy: the
    run builds each one (it is slower, never different), and one command stores them for every later run."""
    from synbt_factory.synthesis.background_context import has_stored_anatomy
    from synbt_factory.synthesis.placement import PlacementConfig

    config = config_from_dict(PlacementConfig, placement_config or {})
    lacking = sum(not has_stored_anatomy(source, c, config, attrs=attrs) for c, attrs in backgrounds.items())
    if lacking:
        log.info(
            "%d of %d backgrounds have no stored placement context for these placement settings, so this run "
            "builds each one; store them once with: synbt data placement-context --data %s",
            lacking,
            len(backgrounds),
            source.location,
        )


@_holding_writer_lock
def run_generate(
    config: GenerateConfig,
    *,
    out: str | Path,
    prepared: str | Path,
    bank: str | Path,
    method: TumorMethod,
    scheduler: str | None = None,
    cluster: str = "threads",
    layout: StoreLayout | None = None,
    placement_config: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    quality_gate: QualityGate | None = None,
) -> GenerateResult:
    """Produce the missing cases of ``out`` (all of them on a first run).

    Args:
        config: the run (n, seed, method, batch size, workers).
        out: synthetic store location (created, or resumed when it exists with the same settings).
        prepared: prepared store of backgrounds (``synbt data prepare``).
        bank: tumor bank location (``synbt bank build``).
        method: texture method (SynTumor or SynBT).
        scheduler: Dask scheduler address to join (``tcp://HOST:8786``); overrides ``cluster``.
        cluster: ``"threads"``: this process, a pool of ``config.workers`` threads and no Dask (batched
            methods sample on the driver while workers place and write); ``"local"``: a Dask
            ``LocalCluster`` of ``config.workers`` processes (one per GPU when CUDA is visible and
            dask-cuda is installed). On a Dask cluster, each task places, synthesises and writes a batch
            of cases; each worker loads the models once.
        quality_gate: for SynBT, check the first ``config.batch_size`` cases against the real tumors
            (:mod:`synbt_factory.generate.quality_gate`) and stop when they are far from real; None = no
            check. The card's ``quality_gate`` entry records the verdict, or that the run was not checked.

    The whole run holds the writer lock of ``out`` (:func:`~synbt_factory.store.lock.writer_lock`), so
    a second ``generate`` on the same store is refused while the workers of this run write their own cases.

    Raises:
        StoreError: the output store exists with other settings, the prepared store is missing, or
            another command holds the writer lock of ``out`` (:class:`~synbt_factory.store.lock.StoreLockedError`).
        GenerateError: some cases could not be produced (listed; finished cases are kept).
        QualityGateError: the first batch failed the quality gate (finished cases are kept).
    """
    t_start = time.perf_counter()
    _map_volumes()
    out, prepared_loc, bank_loc = str(out), str(prepared), str(bank)
    source = CaseStore.open(prepared_loc)
    from synbt_factory.synthesis.placement import PlacementConfig

    placement = config_to_dict(config_from_dict(PlacementConfig, placement_config or {}))  # defaults resolved
    if tuple(placement.get("size_spread", (1.0, 1.0))) == (1.0, 1.0):
        # no spread places exactly as before the option existed: stores begun then keep their identity and resume
        placement.pop("size_spread", None)
    store = _open_or_create(out, config, method, source, bank_loc, layout, placement)
    result = GenerateResult(removed_incomplete=store.remove_incomplete())
    # every background's attributes are read once, for the split and the stored-anatomy note alike
    candidates = {c: source.case_attrs(c) for c in source.case_ids()}
    background_attrs = {
        c: a
        for c, a in candidates.items()
        if config.background_split is None or a.get("split") == config.background_split
    }
    backgrounds = list(background_attrs)
    _note_unstored_anatomy(source, background_attrs, placement_config)
    jobs = plan_jobs(config, backgrounds)
    done_ids = set(store.case_ids())
    todo = [j for j in jobs if j.case_id not in done_ids]
    result.skipped = [j.case_id for j in jobs if j.case_id in done_ids]
    total, finished = len(jobs), len(result.skipped)
    report(progress, finished, total)
    if not method.batched:
        # grouped by background, a run needs each placement context while its group runs: the placer keeps one
        # per worker (+1 for a case falling back to an alternate background) and reads each once, so a run's
        # memory does not grow with the backgrounds it touches (the 8-background bench: 7 contexts held at N=20,
        # 8 at N=200, 5.3 MB each; now 3 at both). Batched methods keep case order: it decides which cases share
        # a batch.
        todo = by_background(todo)
    placer = Placer(prepared_loc, bank_loc, placement_config, max_contexts=0 if method.batched else config.workers + 1)
    stage: dict[str, float] = {}

    def account(job: CaseJob, timings: dict[str, float]) -> None:
        nonlocal finished
        for k, v in timings.items():
            stage[k] = stage.get(k, 0.0) + v
        result.written.append(job.case_id)
        finished += 1
        elapsed = time.perf_counter() - t_start
        report(progress, finished, total, {"cases/s": len(result.written) / max(elapsed, 1e-9)})

    gated = quality_gate is not None and gate_applies(method.name) and bool(todo)
    if todo and not gated:
        store.update_card(quality_gate=gate_off_record(method.name))
    # a gated run produces its first batch, checks it, then the rest: the same batches as one pass
    parts = [todo[: config.batch_size], todo[config.batch_size :]] if gated else [todo]
    executor = _connect(scheduler, cluster, config.workers)
    distributed = isinstance(executor, _DaskExecutor)
    try:
        for index, part in enumerate(parts):
            if not part:
                continue
            if not method.batched:
                _run_tasks(executor, placer, method, out, [[j] for j in part], config, result, account)
            elif distributed:
                batches = [part[i : i + config.batch_size] for i in range(0, len(part), config.batch_size)]
                _run_tasks(executor, placer, method, out, batches, config, result, account)
            else:
                _run_batched(executor, placer, method, out, part, config, result, account, stage)
            if gated and index == 0:
                _check_gate(out, prepared_loc, part, result, quality_gate, store)  # type: ignore[arg-type]
    finally:
        executor.close()
    # the cases found complete at the start plus those written: no second survey of every case's marker
    store.update_card(complete_cases=len(done_ids | set(result.written)), source_case_ids=sorted(set(backgrounds)))
    result.stage_seconds = stage
    result.wall_seconds = time.perf_counter() - t_start
    result.written.sort()
    if result.failed:
        listed = "; ".join(f"{k}: {v}" for k, v in sorted(result.failed.items())[:10])
        raise GenerateError(f"{len(result.failed)} case(s) failed, {len(result.written)} written and kept: {listed}")
    return result


def _check_gate(
    out: str, prepared: str, jobs: list[CaseJob], result: GenerateResult, gate: QualityGate, store: CaseStore
) -> None:
    """The quality gate on the written cases of ``jobs``; raises :class:`QualityGateError` when they fail it."""
    written = set(result.written)
    checked = [j.case_id for j in jobs if j.case_id in written]
    if not checked:
        return
    verdict = check_first_batch(out, prepared, checked, gate, store)
    if not verdict.passed:
        kept = len(store.case_ids())
        store.update_card(complete_cases=kept)
        raise QualityGateError(
            verdict.message(
                f"the first {len(checked)} SynBT case(s) of {out}",
                kept=f"The {kept} finished case(s) are kept in {out}. ",
            )
        )


class _Completed:
    """Futures in the order they finish, more added while iterating (Dask's ``as_completed``, for a thread pool)."""

    def __init__(self) -> None:
        self._finished: queue.Queue[Future[Any]] = queue.Queue()
        self._pending = 0

    def add(self, future: Future[Any]) -> None:
        self._pending += 1
        future.add_done_callback(self._finished.put)

    def __iter__(self) -> Iterator[Future[Any]]:
        while self._pending:
            future = self._finished.get()
            self._pending -= 1
            yield future


def _retrying(fn: Callable[..., Any], args: tuple[Any, ...], retries: int) -> Any:
    """``fn(*args)``, run again up to ``retries`` times while it raises (as Dask's ``retries``); the last error
    is raised."""
    for attempt in range(retries):
        try:
            return fn(*args)
        except Exception:
            log.debug("task %s failed (attempt %d of %d); retrying", fn.__name__, attempt + 1, retries + 1)
    return fn(*args)


class _ThreadExecutor:
    """The workers of a run in one process: a pool of threads, with the part of Dask's client the pipeline uses.

    Tasks share the driver's objects (the placer and its cached contexts), so nothing is pickled and nothing
    keeps a task's arrays once its future is dropped.
    """

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synbt-generate")

    def submit(self, fn: Callable[..., Any], *args: Any, key: str, pure: bool = False, retries: int = 0) -> Future[Any]:
        """Run ``fn(*args)`` on a pool thread (``key`` and ``pure`` are Dask's, unused here)."""
        return self._pool.submit(_retrying, fn, args, retries)

    def completed(self) -> _Completed:
        return _Completed()

    def close(self) -> None:
        """Wait for the running tasks; queued ones are cancelled (an error or Ctrl-C stopped the run)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class _DaskExecutor:
    """The workers of a Dask cluster: a joined scheduler, or a process ``LocalCluster`` this run starts and stops."""

    def __init__(self, client: Any, local_cluster: Any = None) -> None:
        self.client = client
        self._local_cluster = local_cluster

    def submit(self, fn: Callable[..., Any], *args: Any, key: str, pure: bool = False, retries: int = 0) -> Any:
        return self.client.submit(fn, *args, key=key, pure=pure, retries=retries)

    def completed(self) -> Any:
        from dask.distributed import as_completed

        return as_completed()

    def close(self) -> None:
        self.client.close()
        if self._local_cluster is not None:
            self._local_cluster.close()


_Executor = _ThreadExecutor | _DaskExecutor


def _connect(scheduler: str | None, cluster: str, workers: int) -> _Executor:
    """The run's workers: a joined Dask scheduler, a process LocalCluster, or (``"threads"``) a thread pool."""
    if scheduler:
        from dask.distributed import Client

        return _DaskExecutor(Client(scheduler))
    if cluster == "threads":
        return _ThreadExecutor(workers)
    if cluster != "local":
        raise ValueError(f"cluster must be 'threads' or 'local', got {cluster!r}")
    import torch
    from dask.distributed import Client, LocalCluster

    # Dask's scheduler always serves HTTP; dashboard_address=None still binds :8787, and a second run on the
    # machine then warns "Port 8787 is already in use". ":0" takes any free port.
    if torch.cuda.is_available():
        try:
            from dask_cuda import LocalCUDACluster

            local = LocalCUDACluster(dashboard_address=":0", resources={"GPU": 1})
            return _DaskExecutor(Client(local), local)
        except ImportError:
            log.info("dask-cuda is not installed: a CPU-process LocalCluster is used (pip install 'synbt[cuda]')")
    local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    return _DaskExecutor(Client(local), local)


def _process_jobs(placer: Placer, method: TumorMethod, location: str, jobs: list[CaseJob]) -> list[dict[str, float]]:
    """One task: place, synthesise (one batch) and write ``jobs``; returns stage seconds per case."""
    _map_volumes()  # a Dask worker process's first task sets it there
    placed = [placer.place(job) for job in jobs]
    outputs = method.synthesize(placed)
    if len(outputs) != len(placed):
        raise ValueError(f"method {method.name} returned {len(outputs)} images for {len(placed)} cases")
    for case in placed:
        _drop_background(case)
    # each write takes its image off the list, so a case's volumes are freed as soon as it is encoded
    return [_write_next(location, case, outputs, method.name) for case in placed]


def _run_tasks(
    executor: _Executor,
    placer: Placer,
    method: TumorMethod,
    out: str,
    groups: list[list[CaseJob]],
    config: GenerateConfig,
    result: GenerateResult,
    account: Any,
) -> None:
    """Submit one task per group of jobs, at most ``inflight`` cases at a time; retries on lost workers.

    A group that fails as a whole (e.g. its worker kept dying) is retried one case at a time, so
    the error names the case that fails and its batch-mates are still produced.
    """
    pending = deque(groups)
    running = executor.completed()
    futures: dict[Any, list[CaseJob]] = {}
    in_flight = 0

    def submit(group: list[CaseJob]) -> None:
        nonlocal in_flight
        key = f"cases-{group[0].case_id}-{len(group)}-{group[0].seed}"
        fut = executor.submit(_process_jobs, placer, method, out, group, key=key, pure=False, retries=2)
        futures[fut] = group
        running.add(fut)
        in_flight += len(group)

    def top_up() -> None:
        while pending and in_flight < config.inflight:
            submit(pending.popleft())

    top_up()
    for fut in running:
        group = futures.pop(fut)
        in_flight -= len(group)
        try:
            for job, timings in zip(group, fut.result(), strict=True):
                account(job, timings)
        except Exception as exc:
            if len(group) > 1:
                log.warning(
                    "batch %s..%s failed (%s); retrying its cases one by one", group[0].case_id, group[-1].case_id, exc
                )
                pending.extendleft([j] for j in reversed(group))
            else:
                result.failed[group[0].case_id] = f"{type(exc).__name__}: {exc}"
                log.warning("case %s failed: %s", group[0].case_id, exc)
        top_up()


def _run_batched(
    executor: _Executor,
    placer: Placer,
    method: TumorMethod,
    out: str,
    todo: list[CaseJob],
    config: GenerateConfig,
    result: GenerateResult,
    account: Any,
    stage: dict[str, float],
) -> None:
    pending = deque(todo)
    placing: deque[tuple[CaseJob, Any]] = deque()
    writing: deque[tuple[CaseJob, Any]] = deque()

    def fill() -> None:
        while pending and len(placing) + len(writing) < config.inflight:
            job = pending.popleft()
            placing.append(
                (job, executor.submit(placer.place, job, key=f"place-{job.case_id}-{job.seed}", pure=False, retries=2))
            )

    def drain_writes(limit: int) -> None:
        """Account writes in order: every one already finished (so progress never trails the store), then wait
        for the oldest until at most ``limit`` are in flight."""
        while writing and (len(writing) > limit or writing[0][1].done()):
            job, fut = writing.popleft()
            try:
                account(job, fut.result())
            except Exception as exc:
                result.failed[job.case_id] = f"{type(exc).__name__}: {exc}"

    fill()
    while placing:
        batch: list[PlacedCase] = []
        while placing and len(batch) < config.batch_size:
            job, fut = placing.popleft()
            try:
                batch.append(fut.result())
            except Exception as exc:
                result.failed[job.case_id] = f"{type(exc).__name__}: {exc}"
        fill()
        if not batch:
            continue
        t0 = time.perf_counter()
        outputs = method.synthesize(batch)
        stage["driver_synthesis"] = stage.get("driver_synthesis", 0.0) + time.perf_counter() - t0
        for placed, synthesized in zip(batch, outputs, strict=True):
            _drop_background(placed)
            writing.append(
                (
                    placed.job,
                    executor.submit(
                        write_synthetic_case,
                        out,
                        placed,
                        synthesized,
                        method.name,
                        key=f"write-{placed.job.case_id}-{placed.job.seed}",
                        pure=False,
                        retries=2,
                    ),
                )
            )
        drain_writes(config.inflight // 2)
        fill()
    drain_writes(0)
