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


@pytest.mark.parametrize("indent", [2, 0, None], ids=["indent2", "indent0", "compact"])
def test_group_documents_are_zarrs_rendering_byte_for_byte(indent: int | None) -> None:
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.group import GroupMetadata

    attrs = {
        **ATTRS,
        "nested": {"b": [1, (2, 3), {"x": float("nan")}], "a": -float("inf"), "big": 2**63 + 5, "flag": False},
        "tuple": (1.0, 0.1, 1e-300),
        "empty": {},
        "sha256": {"image": "ab" * 32, "mask": "cd" * 32},
        "complete": True,
    }
    with zarr.config.set({"json_indent": indent}):
        zarrs = GroupMetadata(attributes=attrs, zarr_format=3).to_buffer_dict(default_buffer_prototype())["zarr.json"]
        assert case_store._group_document(attrs) == zarrs.to_bytes()
        assert (
            case_store._group_document({})
            == GroupMetadata(zarr_format=3).to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
        )


def test_a_written_group_document_is_the_one_zarr_writes_for_the_same_attributes(tmp_path: Path) -> None:
    store = CaseStore.create(tmp_path / "s.zarr", kind="synthetic", card={}, layout=StoreLayout(chunk=8))
    store.write_case("C1", _arrays(0), ATTRS)
    written = (tmp_path / "s.zarr" / "cases" / "C1" / "zarr.json").read_bytes()
    import zarr

    group = zarr.open_group(tmp_path / "s.zarr" / "cases" / "C1", mode="r")
    rewritten = zarr.open_group(tmp_path / "copy.zarr", mode="w")
    rewritten.attrs.update(dict(group.attrs))  # zarr renders the same attributes itself
    assert written == (tmp_path / "copy.zarr" / "zarr.json").read_bytes()
