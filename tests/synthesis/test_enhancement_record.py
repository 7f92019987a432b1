"""SynTumor's enhancement statistics come from the record ``data prepare`` writes, not from every case's arrays."""

from __future__ import annotations

from pathlib import Path

import pytest

from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
from synbt_factory.store import CaseStore
from synbt_factory.synthesis.syntumor import (
    ENHANCEMENT_ATTR,
    ENHANCEMENT_VERSION,
    EnhancementStats,
    enhancement_record,
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synbt_factory.phantom import write_phantom

    root = tmp_path_factory.mktemp("enhancement")
    write_phantom(root / "phantom", n=5, seed=5, size="tiny", healthy_fraction=0.2)
    prepare_dataset(root / "phantom", root / "prepared.zarr", config=PrepareConfig(fov_mm=(64, 64, 48)), workers=2)
    return root / "prepared.zarr"


def test_prepare_records_every_case_and_the_record_is_the_measure_of_the_stored_arrays(prepared: Path) -> None:
    store = CaseStore.open(prepared)
    for case_id in store.case_ids():
        record = store.case_attrs(case_id)[ENHANCEMENT_ATTR]
        arrays, _ = store.read_case(case_id, ("image", "mask"))
        assert record == enhancement_record(arrays["image"], arrays["mask"])
        assert record["version"] == ENHANCEMENT_VERSION
    values = [store.case_attrs(c)[ENHANCEMENT_ATTR]["value"] for c in store.case_ids()]
    assert any(v is None for v in values) and any(v is not None for v in values)  # the healthy case has none


def test_stats_from_the_records_equal_the_stats_measured_from_the_arrays(prepared: Path) -> None:
    stored = EnhancementStats.from_store(prepared)
    measured = EnhancementStats.from_store(prepared, use_stored=False)
    assert stored == measured
    assert EnhancementStats.from_store(prepared, splits=("train",)) == EnhancementStats.from_store(
        prepared, splits=("train",), use_stored=False
    )


def test_records_spare_the_array_reads_and_a_store_without_them_is_measured(
    prepared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    original = CaseStore.read_case

    def counting(self: CaseStore, case_id: str, *args: object, **kwargs: object) -> object:
        reads.append(case_id)
        return original(self, case_id, *args, **kwargs)

    monkeypatch.setattr(CaseStore, "read_case", counting)
    EnhancementStats.from_store(prepared)
    assert reads == []
    EnhancementStats.from_store(prepared, use_stored=False)
    assert len(reads) == len(CaseStore.open(prepared).case_ids())


def test_a_record_of_another_version_is_measured_again(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import synbt_factory.synthesis.syntumor as syntumor

    monkeypatch.setattr(syntumor, "ENHANCEMENT_VERSION", ENHANCEMENT_VERSION + 1)
    reads: list[str] = []
    original = CaseStore.read_case
    monkeypatch.setattr(
        CaseStore, "read_case", lambda self, case_id, *a, **k: reads.append(case_id) or original(self, case_id, *a, **k)
    )
    assert EnhancementStats.from_store(prepared) == EnhancementStats.from_store(prepared, use_stored=False)
    assert len(reads) == 2 * len(CaseStore.open(prepared).case_ids())
