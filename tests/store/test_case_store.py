"""The case schema: write/read round trip, markers, resume cleanup, safety checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synbt_factory.store import CaseIdError, CaseStore, StoreError, StoreLayout, array_sha256


def _case(rng: np.random.Generator, shape=(20, 24, 16)) -> dict[str, np.ndarray]:
    image = rng.random((2, *shape)).astype(np.float16)
    return {"image": image, "mask": (image[1] > 0.9).astype(np.uint8)}


ATTRS = {"affine": np.eye(4).tolist(), "spacing": [1.0, 1.0, 1.0], "source_case": "X"}


@pytest.fixture(params=["local", "memory"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "s.zarr") if request.param == "local" else f"memory://synbt-test-{request.node.name}"


def test_round_trip_and_checksums(location: str) -> None:
    rng = np.random.default_rng(0)
    store = CaseStore.create(location, kind="synthetic", card={"synthetic": True}, layout=StoreLayout(chunk=8))
    arrays = _case(rng)
    store.write_case("SYN_000001", arrays, ATTRS)
    back, attrs = CaseStore.open(location).read_case("SYN_000001")
    assert np.array_equal(back["image"], arrays["image"]) and back["image"].dtype == np.float16
    assert attrs["sha256"]["mask"] == array_sha256(arrays["mask"])
    assert attrs["complete"] is True and CaseStore.open(location).attrs["synthetic"] is True


def test_unmarked_case_is_invisible_and_removed_on_resume(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    store = CaseStore.create(tmp_path / "s.zarr", kind="synthetic", card={})
    store.write_case("A", _case(rng), ATTRS)
    store.write_case("B", _case(rng), ATTRS)
    store._cases["B"].attrs.update({"complete": False})
    (tmp_path / "s.zarr" / "cases" / "A" / "image" / "junk.abc.partial").write_bytes(b"x")
    assert store.case_ids() == ["A"] and "B" not in store
    with pytest.raises(StoreError, match="not a complete case"):
        store.read_case("B")
    assert store.remove_incomplete() == ["B"]
    assert store.all_case_groups() == ["A"]
    assert not list((tmp_path / "s.zarr").rglob("*.partial"))


def test_unsafe_case_ids_are_refused(tmp_path: Path) -> None:
    store = CaseStore.create(tmp_path / "s.zarr", kind="synthetic", card={})
    for bad in ("../evil", "a/b", "", ".hidden", "x..y"):
        with pytest.raises(CaseIdError):
            store.write_case(bad, _case(np.random.default_rng(0)), ATTRS)


def test_open_refuses_foreign_or_other_kind(tmp_path: Path) -> None:
    import zarr

    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a synbt store"):
        CaseStore.open(tmp_path / "foreign.zarr")
    CaseStore.create(tmp_path / "p.zarr", kind="prepared", card={})
    with pytest.raises(StoreError, match="prepared"):
        CaseStore.create(tmp_path / "p.zarr", kind="synthetic", card={}, exist_ok=True)
    with pytest.raises(StoreError, match="does not exist"):
        CaseStore.open(tmp_path / "missing.zarr")


def test_disallowed_codec_is_refused_on_read(tmp_path: Path) -> None:
    store = CaseStore.create(tmp_path / "s.zarr", kind="synthetic", card={})
    store.write_case("A", _case(np.random.default_rng(0)), ATTRS)
    import json

    meta_path = tmp_path / "s.zarr" / "cases" / "A" / "mask" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"].append({"name": "numcodecs.pickle", "configuration": {}})
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(Exception):
        CaseStore.open(tmp_path / "s.zarr").read_array("A", "mask")


def test_add_arrays_keeps_checksums(tmp_path: Path) -> None:
    store = CaseStore.create(tmp_path / "s.zarr", kind="prepared", card={})
    arrays = _case(np.random.default_rng(2))
    store.write_case("A", arrays, ATTRS)
    tissue = np.ones(arrays["mask"].shape, np.uint8)
    store.add_arrays("A", {"tissue_pred": tissue})
    attrs = store.case_attrs("A")
    assert attrs["sha256"]["tissue_pred"] == array_sha256(tissue) and store.is_complete("A")
