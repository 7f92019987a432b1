"""generate on a process LocalCluster: surviving a SIGKILLed worker, and a case that always kills one."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from synbt_factory.generate import GenerateConfig, run_generate
from synbt_factory.generate.methods import SynTumorMethod
from synbt_factory.generate.pipeline import GenerateError
from synbt_factory.store import CaseStore
from synbt_factory.store.verify import verify_store

distributed = pytest.importorskip("dask.distributed")


class KillsWorkerOn(SynTumorMethod):
    """SynTumor, except that the worker process running case ``index`` is SIGKILLed (fault injection)."""

    def __init__(self, stats: Any, index: int) -> None:
        super().__init__(stats)
        self.index = index

    def synthesize(self, cases: Sequence[Any]) -> list:
        if any(c.job.index == self.index for c in cases):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().synthesize(cases)


@pytest.fixture
def cluster() -> Any:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


def test_run_survives_a_killed_worker(factory_inputs: dict[str, str], tmp_path: Path, cluster: Any) -> None:
    out = tmp_path / "d.zarr"
    killed: list[int] = []
    client = distributed.Client(cluster)
    pids = sorted(client.run(os.getpid).values())
    client.close()

    def kill_once(done: int, total: int, _: Any) -> None:
        if done >= 2 and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    method = SynTumorMethod.from_prepared(factory_inputs["prepared"])
    config = GenerateConfig(n=10, seed=21, method="syntumor", workers=2)
    result = run_generate(
        config,
        out=out,
        prepared=factory_inputs["prepared"],
        bank=factory_inputs["bank"],
        method=method,
        scheduler=cluster.scheduler_address,
        progress=kill_once,
    )
    assert killed, "no worker was killed"
    store = CaseStore.open(out)
    expected = [f"SYN_{i:06d}" for i in range(10)]
    assert store.case_ids() == expected and store.all_case_groups() == expected
    assert sorted(result.written) == expected
    assert verify_store(out).ok
    # the same cases as a single-process run
    ref = run_generate(
        config,
        out=tmp_path / "ref.zarr",
        prepared=factory_inputs["prepared"],
        bank=factory_inputs["bank"],
        method=method,
    )
    assert ref.written == expected
    a, b = CaseStore.open(out), CaseStore.open(tmp_path / "ref.zarr")
    assert all((a.read_array(c, "image") == b.read_array(c, "image")).all() for c in expected)


def test_case_that_always_kills_its_worker_is_named_and_others_kept(
    factory_inputs: dict[str, str], tmp_path: Path, cluster: Any
) -> None:
    out = tmp_path / "k.zarr"
    base = SynTumorMethod.from_prepared(factory_inputs["prepared"])
    method = KillsWorkerOn(base.stats, index=2)
    config = GenerateConfig(n=5, seed=4, method="syntumor", workers=2)
    with pytest.raises(GenerateError, match="SYN_000002"):
        run_generate(
            config,
            out=out,
            prepared=factory_inputs["prepared"],
            bank=factory_inputs["bank"],
            method=method,
            scheduler=cluster.scheduler_address,
        )
    store = CaseStore.open(out)
    assert store.case_ids() == ["SYN_000000", "SYN_000001", "SYN_000003", "SYN_000004"]
    assert verify_store(out).bad_cases == {}
