"""What a generate call costs before its first case, and what it keeps while it runs.

A run in one process uses a thread pool, not Dask: ``generate --method syntumor`` imports neither torch, MONAI
nor Dask. The pool keeps Dask's retries and hands futures back in the order they finish. Contexts read from the
store are held within a smaller budget than built ones; the write clips straight into float16, the same bytes.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synbt_factory.generate.pipeline import _clipped_half, _Completed, _connect, _ThreadExecutor
from synbt_factory.generate.placing import Placer
from synbt_factory.store import CaseStore
from synbt_factory.synthesis.placement import PlacementConfig


def test_the_threads_cluster_is_a_thread_pool_and_other_names_are_refused() -> None:
    executor = _connect(None, "threads", 2)
    try:
        assert isinstance(executor, _ThreadExecutor)
        assert executor.submit(pow, 2, 5, key="k").result() == 32
    finally:
        executor.close()
    with pytest.raises(ValueError, match="'threads' or 'local'"):
        _connect(None, "processes", 2)


def test_the_thread_pool_retries_a_failing_task_then_raises_its_error() -> None:
    calls: list[int] = []

    def flaky(fail_times: int) -> str:
        calls.append(1)
        if len(calls) <= fail_times:
            raise OSError(f"attempt {len(calls)}")
        return "done"

    executor = _ThreadExecutor(1)
    try:
        assert executor.submit(flaky, 2, key="a", retries=2).result() == "done" and len(calls) == 3
        calls.clear()
        with pytest.raises(OSError, match="attempt 3"):
            executor.submit(flaky, 5, key="b", retries=2).result()
        assert len(calls) == 3
    finally:
        executor.close()


def test_completed_yields_futures_as_they_finish_including_ones_added_meanwhile() -> None:
    first, second, third = Future(), Future(), Future()
    completed = _Completed()
    completed.add(first)
    completed.add(second)
    second.set_result("second")
    seen = []
    for future in completed:
        seen.append(future.result())
        if future is second:
            completed.add(third)
            threading.Timer(0.01, third.set_result, args=("third",)).start()
            first.set_result("first")
    assert seen == ["second", "first", "third"]


def _contexts(placer: Placer, prepared: str, ids: list[str]) -> list[str]:
    store = CaseStore.open(prepared)
    placer._open()
    for case_id in ids:
        placer._context(store, case_id, PlacementConfig())
    return list(placer._contexts)


def test_stored_contexts_are_held_within_their_own_budget(factory_inputs: dict[str, str]) -> None:
    prepared, bank = factory_inputs["prepared"], factory_inputs["bank"]
    ids = CaseStore.open(prepared).case_ids()[:3]
    assert _contexts(Placer(prepared, bank, stored_cache_bytes=1), prepared, ids) == ids[-1:]
    assert _contexts(Placer(prepared, bank), prepared, ids) == ids  # the default budget holds these small ones


def test_built_contexts_keep_the_larger_budget(factory_inputs: dict[str, str], monkeypatch) -> None:
    from synbt_factory.synthesis import background_context

    monkeypatch.setattr(background_context, "has_stored_anatomy", lambda *a, **k: False)
    prepared, bank = factory_inputs["prepared"], factory_inputs["bank"]
    ids = CaseStore.open(prepared).case_ids()[:3]
    placer = Placer(prepared, bank, stored_cache_bytes=1)
    assert _contexts(placer, prepared, ids) == ids
    assert {ctx.notes["anatomy"] for ctx in placer._contexts.values()} == {"built"}


def test_a_placer_copy_keeps_both_budgets(factory_inputs: dict[str, str]) -> None:
    import pickle

    placer = Placer(factory_inputs["prepared"], factory_inputs["bank"], cache_bytes=7, stored_cache_bytes=3)
    copy = pickle.loads(pickle.dumps(placer))
    assert (copy.cache_bytes, copy.stored_cache_bytes) == (7, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipping_into_float16_gives_the_bytes_of_clip_then_cast(dtype: Any) -> None:
    rng = np.random.default_rng(0)
    image = (rng.standard_normal((2, 16, 12, 8)) * 6).astype(dtype)
    image[0, 0, 0, :6] = [np.inf, -np.inf, 8.0, 7.999, -0.0, 1e-9]
    for clip in (8.0, 2.5):
        expected = np.clip(image, 0.0, clip).astype(np.float16)
        got = _clipped_half(image, clip)
        assert got.dtype == np.float16 and got.tobytes() == expected.tobytes()


def test_syntumor_in_place_writes_the_values_a_copy_holds() -> None:
    from synbt_factory.synthesis.syntumor import EnhancementStats, syntumor_insert

    rng = np.random.default_rng(3)
    image = rng.random((2, 24, 20, 16), dtype=np.float32) + 0.5
    mask = np.zeros((24, 20, 16), np.uint8)
    mask[8:14, 7:12, 5:10] = 1
    stats = EnhancementStats.default()
    copy, _, record = syntumor_insert(image, mask, np.random.default_rng(1), stats)
    own = image.copy()
    same, _, record_in_place = syntumor_insert(own, mask, np.random.default_rng(1), stats, in_place=True)
    assert same is own and same.tobytes() == copy.tobytes() and record_in_place == record
    with pytest.raises(ValueError, match="writable float32"):
        syntumor_insert(image.astype(np.float64), mask, np.random.default_rng(1), stats, in_place=True)


def test_a_task_frees_each_synthesized_image_before_its_case_is_encoded(
    factory_inputs, tmp_path: Path, monkeypatch
) -> None:
    import weakref

    from synbt_factory.generate import pipeline
    from synbt_factory.generate.jobs import GenerateConfig, plan_jobs
    from synbt_factory.generate.methods import SynTumorMethod
    from synbt_factory.generate.pipeline import _process_jobs

    prepared, out = factory_inputs["prepared"], str(tmp_path / "s.zarr")
    CaseStore.create(out, kind="synthetic", card={"clip_max": 8.0})
    method = SynTumorMethod.from_prepared(prepared)
    images: list[weakref.ref] = []

    class Watching(SynTumorMethod):
        def synthesize(self, cases):  # noqa: ANN001, ANN202
            outputs = super().synthesize(cases)
            images.extend(weakref.ref(image) for image, _, _ in outputs)
            return outputs

    freed_at_commit: list[list[bool]] = []
    commit = pipeline._commit_case

    def recording(*args: Any) -> None:
        freed_at_commit.append([ref() is None for ref in images])
        commit(*args)

    monkeypatch.setattr(pipeline, "_commit_case", recording)
    jobs = plan_jobs(GenerateConfig(n=2, seed=4), CaseStore.open(prepared).case_ids())
    timings = _process_jobs(Placer(prepared, factory_inputs["bank"]), Watching(method.stats), out, jobs)
    assert len(timings) == 2
    # the first case's float32 image is gone when it is encoded; the second's waits for its own write
    assert freed_at_commit == [[True, False], [True, True]]
    assert CaseStore.open(out).case_ids() == ["SYN_000000", "SYN_000001"]
