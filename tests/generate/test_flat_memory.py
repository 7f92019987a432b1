"""Generation keeps no per-case data after a case is written, whatever the run's N.

Each Dask task receives the placer by pickle; every copy must resolve to the one placer of the process, so a
background's placement context is built once and Dask's message logs hold no per-task contexts. The in-process
cluster keeps no message logs, so arrays sent to write tasks are freed once the case is written.
"""

from __future__ import annotations

import gc
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synbt_factory.generate import GenerateConfig, run_generate
from synbt_factory.generate.methods import Synthesized, SynTumorMethod
from synbt_factory.generate.placing import PlacedCase, Placer, shared_placer
from synbt_factory.store import CaseStore


def test_copies_of_a_placer_unpickle_to_one_placer(factory_inputs: dict[str, str]) -> None:
    placer = Placer(factory_inputs["prepared"], factory_inputs["bank"], {"min_in_breast": 0.7})
    first, second = pickle.loads(pickle.dumps(placer)), pickle.loads(pickle.dumps(placer))
    assert first is second and first is shared_placer(placer.token, placer.prepared, placer.bank_location)
    assert (first.placement_config, first.cache_bytes) == ({"min_in_breast": 0.7}, placer.cache_bytes)
    other = Placer(factory_inputs["prepared"], factory_inputs["bank"], {"min_in_breast": 0.7})
    assert pickle.loads(pickle.dumps(other)) is not first  # another run's placer shares no contexts


def test_a_run_builds_each_background_context_once(factory_inputs: dict[str, str], tmp_path: Path, monkeypatch) -> None:
    from synbt_factory.synthesis import background_context

    built: list[str] = []
    original = background_context.context_from_store

    def counting(store: Any, case_id: str, config: Any) -> Any:
        built.append(case_id)
        return original(store, case_id, config)

    monkeypatch.setattr(background_context, "context_from_store", counting)
    prepared = factory_inputs["prepared"]
    method = SynTumorMethod.from_prepared(prepared)
    result = run_generate(
        GenerateConfig(n=10, seed=5, workers=2, background_split=None),
        out=tmp_path / "s.zarr",
        prepared=prepared,
        bank=factory_inputs["bank"],
        method=method,
    )
    assert len(result.written) == 10
    backgrounds = {CaseStore.open(tmp_path / "s.zarr").case_attrs(c)["source_case"] for c in result.written}
    assert len(backgrounds) < 10  # backgrounds repeat, so a per-case rebuild would show
    assert sorted(built) == sorted(set(built))  # no background built twice


class _BatchedIdentity:
    """A batched method that returns each background unchanged (stands in for SynBT's driver-side sampler)."""

    name = "identity"
    batched = True

    def card(self) -> dict[str, Any]:
        return {"method": self.name}

    def synthesize(self, cases: Sequence[PlacedCase]) -> list[Synthesized]:
        return [(np.array(c.image), {}, {"synthesis": 0.0}) for c in cases]


def test_the_driver_holds_no_written_cases(factory_inputs: dict[str, str], tmp_path: Path) -> None:
    config = GenerateConfig(n=12, seed=1, method="synbt", batch_size=1, workers=1, background_split=None)
    alive: list[int] = []

    def progress(done: int, total: int, metrics: Any) -> None:
        if done == total:
            gc.collect()
            # type(), not isinstance: isinstance reads each object's __class__, and one of torch's deprecated module
            # attributes warns when asked
            alive.append(sum(type(o) is PlacedCase for o in gc.get_objects()))

    result = run_generate(
        config,
        out=tmp_path / "s.zarr",
        prepared=factory_inputs["prepared"],
        bank=factory_inputs["bank"],
        method=_BatchedIdentity(),
        progress=progress,
    )
    assert len(result.written) == 12 and len(alive) == 1
    assert alive[0] <= config.inflight < config.n  # at most the cases still in flight, not one per case written


class _WaitsForEarlierWrites(_BatchedIdentity):
    """Before each batch after the first, waits until the previous batches' cases are complete in the store, so
    the driver's accounting finds their writes finished (a condition, not a race against the clock)."""

    def __init__(self, out: Path, batch_size: int) -> None:
        self.out, self.batch_size, self.calls = out, batch_size, 0
        self.reported_before_call: list[int] = []
        self.reported = 0

    def synthesize(self, cases: Sequence[PlacedCase]) -> list[Synthesized]:
        import time

        expected = self.calls * self.batch_size
        deadline = time.monotonic() + 60
        while expected and time.monotonic() < deadline:
            if self.out.exists() and len(CaseStore.open(self.out).case_ids()) >= expected:
                break
            time.sleep(0.05)
        self.reported_before_call.append(self.reported)
        self.calls += 1
        return super().synthesize(cases)


def test_progress_reports_each_written_case_without_waiting_for_the_in_flight_window(
    factory_inputs: dict[str, str], tmp_path: Path
) -> None:
    config = GenerateConfig(
        n=12, seed=1, method="synbt", batch_size=2, workers=1, background_split=None, max_inflight=12
    )
    method = _WaitsForEarlierWrites(tmp_path / "s.zarr", config.batch_size)

    def progress(done: int, total: int, metrics: Any) -> None:
        method.reported = done

    run_generate(
        config,
        out=tmp_path / "s.zarr",
        prepared=factory_inputs["prepared"],
        bank=factory_inputs["bank"],
        method=method,
        progress=progress,
    )
    # the progress shown before batch k includes the cases of batches < k - 1 (written before batch k - 1 was
    # sampled: a lag of 2), or at worst < k - 2 if Dask marks a finished write's future a moment after the case is
    # complete; accounting only once half the window (6 cases) was in flight lagged by 6
    lags = [k * 2 - r for k, r in enumerate(method.reported_before_call)]
    assert method.calls == 6 and max(lags) <= 4, method.reported_before_call
