"""Cases written straight into a local folder are the files zarr's store API writes, and a failure stays unmarked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import synbt_factory.store.case_store as case_store
import synbt_factory.store.local_writer as local_writer
from synbt_factory.store import CaseStore, StoreLayout
from synbt_factory.store.lock import writer_lock
from synbt_factory.store.verify import verify_store

ATTRS = {"affine": np.eye(4).tolist(), "spacing": [1.0, 1.0, 1.0], "note": "ü and a list", "n": [1, 2.5, None]}


def _arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 30, (2, 20, 17, 9)).astype(np.float16)
    return {"image": image, "mask": (image[1] > 130).astype(np.uint8), "depth": rng.random((20, 17, 9)).astype(">f4")}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", [StoreLayout(chunk=8), StoreLayout(chunk=8, separator=".")], ids=["slash", "dot"])
def test_local_folder_writes_equal_the_store_api_writes(
    tmp_path: Path, layout: StoreLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = local_writer.write_encoded_case
    monkeypatch.setattr(case_store, "write_encoded_case", lambda *a: calls.append(a[0]) or real(*a))
    fast = CaseStore.create(tmp_path / "fast.zarr", kind="synthetic", card={}, layout=layout)
    fast.write_case("C1", _arrays(0), ATTRS)
    assert calls == [tmp_path / "fast.zarr" / "cases" / "C1"]  # the local path was taken
    monkeypatch.setattr(case_store.CaseStore, "_local_folder", lambda self: None)
    slow = CaseStore.create(tmp_path / "api.zarr", kind="synthetic", card={}, layout=layout)
    slow.write_case("C1", _arrays(0), ATTRS)
    assert len(calls) == 1  # and not here
    a, b = _files(tmp_path / "fast.zarr" / "cases"), _files(tmp_path / "api.zarr" / "cases")
    assert a.keys() == b.keys() and not [k for k in a if k.endswith(".partial")]
    assert [k for k in a if a[k] != b[k]] == []
    assert verify_store(tmp_path / "fast.zarr").ok


def test_a_failed_file_write_leaves_an_unmarked_case_that_resume_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.zarr"
    store = CaseStore.create(path, kind="synthetic", card={}, layout=StoreLayout(chunk=8))
    store.write_case("C1", _arrays(1), ATTRS)
    real_open = open
    opened = []

    def failing_open(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if "w" in mode and "C2" in str(file):
            opened.append(file)
            if len(opened) == 6:
                raise OSError("disk full")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(local_writer, "open", failing_open, raising=False)
    with pytest.raises(OSError, match="disk full"):
        store.write_case("C2", _arrays(2), ATTRS)
    monkeypatch.undo()
    assert len(opened) == 6
    assert store.case_ids() == ["C1"] and store.incomplete_case_ids() == ["C2"]
    assert not list(path.rglob("*.partial"))
    with writer_lock(str(path), command="test"):
        assert store.remove_incomplete() == ["C2"]
    store.write_case("C2", _arrays(2), ATTRS)
    assert store.case_ids() == ["C1", "C2"] and verify_store(path).ok
