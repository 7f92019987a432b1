"""A run of a method that is not batched holds a bounded number of placement contexts, whatever its N.

``generate`` groups such a run's cases by background (:func:`by_background`) and gives its placer a bound of one
context per worker plus one, so a 20-case run and a 200-case run hold the same contexts at most, each read once.
Case content depends on ``(seed, case_index)`` alone, so the order changes no case. Counted by instrumenting the
placer, never by timing.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synbt_factory.generate import GenerateConfig, run_generate
from synbt_factory.generate import pipeline as pipeline_module
from synbt_factory.generate.jobs import by_background, plan_jobs
from synbt_factory.generate.methods import SynTumorMethod
from synbt_factory.generate.placing import Placer
from synbt_factory.store import CaseStore
from synbt_factory.synthesis.placement import PlacementConfig


def test_jobs_grouped_by_background_keep_every_job_in_case_order_within_a_group() -> None:
    backgrounds = [f"BG_{i}" for i in range(5)]
    jobs = plan_jobs(GenerateConfig(n=40, seed=3), backgrounds)
    grouped = by_background(jobs)
    assert sorted(j.index for j in grouped) == list(range(40))
    order = [j.background for j in grouped]
    groups = [b for i, b in enumerate(order) if i == 0 or order[i - 1] != b]
    assert len(groups) == len(set(order))  # one contiguous group per background
    firsts = [min(j.index for j in jobs if j.background == b) for b in groups]
    assert firsts == sorted(firsts)  # groups in the order of their first case, not of their names
    assert groups != sorted(groups)  # (this plan draws them in another order than their names)
    for background in set(order):
        indices = [j.index for j in grouped if j.background == background]
        assert indices == sorted(indices)


def test_a_placer_holds_at_most_max_contexts(factory_inputs: dict[str, str]) -> None:
    prepared, bank = factory_inputs["prepared"], factory_inputs["bank"]
    store = CaseStore.open(prepared)
    ids = store.case_ids()[:4]
    placer = Placer(prepared, bank, max_contexts=2)
    placer._open()
    held = []
    for case_id in ids:
        placer._context(store, case_id, PlacementConfig())
        held.append(list(placer._contexts))
    assert held[-1] == ids[-2:]  # the least recently used dropped first
    assert max(len(h) for h in held) == 2
    assert pickle.loads(pickle.dumps(placer)).max_contexts == 2
    with pytest.raises(ValueError, match="max_contexts"):
        Placer(prepared, bank, max_contexts=-1)


class _Recorder:
    """Wraps ``background_context.context_from_store`` to count reads, and records how many contexts a run's
    placer holds after every insertion (the placer's own bookkeeping, under its lock)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from synbt_factory.synthesis import background_context

        self.reads: list[str] = []
        self.held: list[int] = []
        self.placers: list[Placer] = []
        self._lock = threading.Lock()
        read = background_context.context_from_store
        evict = Placer._evict
        init = Placer.__init__

        def counting(store: Any, case_id: str, config: Any) -> Any:
            with self._lock:
                self.reads.append(case_id)
            return read(store, case_id, config)

        def evicting(placer: Placer, keep: str) -> None:
            evict(placer, keep)
            self.held.append(len(placer._contexts))

        def creating(placer: Placer, *args: Any, **kwargs: Any) -> None:
            init(placer, *args, **kwargs)
            self.placers.append(placer)

        monkeypatch.setattr(background_context, "context_from_store", counting)
        monkeypatch.setattr(Placer, "_evict", evicting)
        monkeypatch.setattr(Placer, "__init__", creating)


def test_an_unbatched_run_holds_one_context_per_worker_and_reads_each_once(
    factory_inputs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder(monkeypatch)
    prepared = factory_inputs["prepared"]
    config = GenerateConfig(n=24, seed=4, workers=2, background_split=None)
    result = run_generate(
        config,
        out=tmp_path / "s.zarr",
        prepared=prepared,
        bank=factory_inputs["bank"],
        method=SynTumorMethod.from_prepared(prepared),
    )
    assert len(result.written) == 24
    (placer,) = recorder.placers
    assert placer.max_contexts == config.workers + 1
    touched = {CaseStore.open(tmp_path / "s.zarr").case_attrs(c)["source_case"] for c in result.written}
    assert len(touched) > config.workers + 1  # the bound is reached, not just never needed
    assert recorder.held and max(recorder.held) <= config.workers + 1  # never exceeded
    assert sorted(recorder.reads) == sorted(set(recorder.reads))  # grouped: each background read once


def test_grouping_changes_no_case(
    factory_inputs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cases of a grouped run are those of a run in case order (every array and attribute)."""
    prepared, bank = factory_inputs["prepared"], factory_inputs["bank"]
    config = GenerateConfig(n=8, seed=6, workers=2, background_split=None)
    method = SynTumorMethod.from_prepared(prepared)
    run_generate(config, out=tmp_path / "grouped.zarr", prepared=prepared, bank=bank, method=method)
    monkeypatch.setattr(pipeline_module, "by_background", lambda jobs: list(jobs))
    run_generate(config, out=tmp_path / "in_order.zarr", prepared=prepared, bank=bank, method=method)
    grouped, ordered = CaseStore.open(tmp_path / "grouped.zarr"), CaseStore.open(tmp_path / "in_order.zarr")
    assert grouped.case_ids() == ordered.case_ids() and len(grouped.case_ids()) == 8
    for case_id in grouped.case_ids():
        assert grouped.case_attrs(case_id) == ordered.case_attrs(case_id)
        assert grouped.array_names(case_id) == ordered.array_names(case_id)
        for name in grouped.array_names(case_id):
            a, b = grouped.read_array(case_id, name), ordered.read_array(case_id, name)
            assert a.dtype == b.dtype and np.array_equal(a, b)


_FREED_VOLUME = r"""
import os, sys
import numpy as np
from synbt_factory.generate import pipeline

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

pipeline._map_volumes()
big = np.ones(16 * 2**20, dtype=np.uint8)  # freed: glibc's moving threshold would rise to 16 MiB
del big
volume = np.ones(2 * pipeline.MMAP_THRESHOLD_BYTES, dtype=np.uint8)  # 8 MiB, touched
held = rss()
del volume
print(held - rss())
"""


def _freed_bytes() -> int:
    run = subprocess.run([sys.executable, "-c", _FREED_VOLUME], capture_output=True, text=True, timeout=120, check=True)
    return int(run.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    not Path("/proc/self/statm").exists() or __import__("platform").libc_ver()[0] != "glibc",
    reason="glibc's mallopt and /proc only",
)
def test_a_freed_volume_goes_back_to_the_system() -> None:
    """Once generate has set the mmap threshold, a freed volume above it is unmapped: resident memory falls by its
    size, even after a bigger block was freed (which moves glibc's default threshold up, so that volumes come from
    the heap; whether they then stay resident depends on the heap's history, so the default is not asserted). In a
    fresh interpreter: in a long-lived one (the test session) the heap may already hold a free block the volume
    fits in, which malloc reuses whatever the threshold."""
    assert _freed_bytes() >= pipeline_module.MMAP_THRESHOLD_BYTES
