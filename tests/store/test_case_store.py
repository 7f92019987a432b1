"""The case schema: write/read round trip, markers, resume cleanup, safety checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synbt_factory.store import CaseIdError, CaseStore, StoreError, StoreLayout, array_sha256
from synbt_factory.store.lock import writer_lock


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
    with writer_lock(str(tmp_path / "s.zarr"), command="test"):
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
    with pytest.raises(StoreError, match="pickle"):
        CaseStore.open(tmp_path / "s.zarr").read_array("A", "mask")


def test_add_arrays_keeps_checksums(tmp_path: Path) -> None:
    store = CaseStore.create(tmp_path / "s.zarr", kind="prepared", card={})
    arrays = _case(np.random.default_rng(2))
    store.write_case("A", arrays, ATTRS)
    tissue = np.ones(arrays["mask"].shape, np.uint8)
    store.add_arrays("A", {"tissue_pred": tissue})
    attrs = store.case_attrs("A")
    assert attrs["sha256"]["tissue_pred"] == array_sha256(tissue) and store.is_complete("A")


def test_empty_leftover_folder_is_reused_and_open_names_the_fix(tmp_path: Path) -> None:
    leftover = tmp_path / "s.zarr"
    leftover.mkdir()  # what a creation that failed used to leave
    with pytest.raises(StoreError, match="empty folder with no zarr.json.*rerun the command that creates it"):
        CaseStore.open(leftover)
    store = CaseStore.create(leftover, kind="synthetic", card={})
    store.write_case("A", _case(np.random.default_rng(0)), ATTRS)
    assert CaseStore.open(leftover).case_ids() == ["A"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(StoreError, match="no zarr.json"):
        CaseStore.open(tmp_path / "notes")


@pytest.mark.parametrize("existing", [False, True])
def test_failed_create_removes_only_what_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    import zarr

    target = tmp_path / "new" / "deeper" / "s.zarr"
    if existing:
        target.mkdir(parents=True)
    real = zarr.Group.require_group

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zarr.Group, "require_group", disk_full)
    with pytest.raises(StoreError, match="cannot create a store.*No space"):
        CaseStore.create(target, kind="prepared", card={})
    if existing:
        assert target.is_dir() and not any(target.iterdir())
    else:
        assert not (tmp_path / "new").exists()
    monkeypatch.setattr(zarr.Group, "require_group", real)
    CaseStore.create(target, kind="prepared", card={})  # the rerun works
    assert CaseStore.open(target).kind == "prepared"


@pytest.mark.parametrize("crash_at", ["array write", "checksum"])
def test_add_arrays_crash_never_hides_the_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str) -> None:
    import zarr

    import synbt_factory.store.case_store as case_store

    store = CaseStore.create(tmp_path / "s.zarr", kind="prepared", card={})
    arrays = _case(np.random.default_rng(3))
    store.write_case("A", {**arrays, "tissue_pred": np.zeros(arrays["mask"].shape, np.uint8)}, ATTRS)
    new = np.ones(arrays["mask"].shape, np.uint8)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    if crash_at == "array write":
        monkeypatch.setattr(zarr.Group, "create_array", crash)
    else:  # the array is written, its checksum entry is not
        monkeypatch.setattr(case_store, "array_sha256", crash)
    with pytest.raises(KeyboardInterrupt):
        store.add_arrays("A", {"tissue_pred": new})
    monkeypatch.undo()
    back = CaseStore.open(tmp_path / "s.zarr", mode="r+")
    assert back.case_ids() == ["A"] and back.is_complete("A")
    assert np.array_equal(back.read_array("A", "image"), arrays["image"])
    assert np.array_equal(back.read_array("A", "mask"), arrays["mask"])
    assert "tissue_pred" not in back.case_attrs("A")["sha256"]  # an unfinished addition
    with pytest.raises(StoreError):
        back.read_array("A", "tissue_pred")
    back.add_arrays("A", {"tissue_pred": new})  # the rerun finishes it
    assert np.array_equal(back.read_array("A", "tissue_pred"), new)


def test_symlinked_incomplete_case_loses_only_its_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    import synbt_factory.store.case_store as case_store

    path = tmp_path / "s.zarr"
    store = CaseStore.create(path, kind="synthetic", card={})
    store.write_case("A", _case(np.random.default_rng(4)), ATTRS)
    store.write_case("B", _case(np.random.default_rng(5)), ATTRS)
    elsewhere = tmp_path / "elsewhere" / "B"
    elsewhere.parent.mkdir()
    shutil.move(str(path / "cases" / "B"), str(elsewhere))
    (path / "cases" / "B").symlink_to(elsewhere, target_is_directory=True)
    store._cases["B"].attrs.update({"complete": False})
    assert store.incomplete_case_ids() == ["B"]
    kept = sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*"))
    with writer_lock(str(path), command="test"):
        with monkeypatch.context() as m, caplog.at_level("INFO", logger="synbt_factory"):
            m.setattr(case_store.Path, "unlink", lambda *a, **k: None)  # a link that cannot be removed
            with pytest.raises(StoreError, match=f"{path / 'cases' / 'B'}.*still there"):
                store.remove_incomplete()
        assert "removed" not in caplog.text
        assert store.remove_incomplete() == ["B"]
    assert not (path / "cases" / "B").is_symlink() and store.all_case_groups() == ["A"]
    assert sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*")) == kept and kept
