"""Commands that replace or write an output never delete, overwrite or mix files synbt did not write."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.store import CaseStore, StoreLayout
from synbt_factory.store.export import EXPORT_MARKER, export_store
from synbt_factory.store.outputs import OutputError
from synbt_factory.store.verify import verify_store
from synbt_factory.synthesis.bank import TumorBank, build_bank

SHAPE = (16, 16, 16)


def _prepared(path: Path, n: int = 2, *, kind: str = "prepared", prefix: str = "C") -> Path:
    """A small store whose cases each hold one cube tumor."""
    store = CaseStore.create(
        path,
        kind=kind,
        card={"synthetic": kind == "synthetic"},  # type: ignore[arg-type]
        layout=StoreLayout(chunk=8),
    )
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros(SHAPE, np.uint8)
        mask[4:9, 5:10, 6:11] = 1
        image = (rng.random((2, *SHAPE)) + 0.5).astype(np.float16)
        store.write_case(
            f"{prefix}{i}",
            {"image": image, "mask": mask},
            {"affine": np.eye(4).tolist(), "spacing": [1.0, 1.0, 1.0], "split": "train"},
        )
    return path


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- bank build --overwrite
@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_bank_out_touching_the_input_store_is_refused_and_the_input_kept(tmp_path: Path, where: str) -> None:
    prepared = _prepared(tmp_path / "data" / "p.zarr")
    before = _files(prepared)
    out = {"same": prepared, "inside": prepared / "cases" / "bank.zarr", "contains": tmp_path / "data"}[where]
    with pytest.raises(OutputError, match="the input"):
        build_bank(prepared, out, overwrite=True)
    assert _files(prepared) == before and verify_store(prepared).ok


def test_cli_bank_build_refuses_its_input_as_out(tmp_path: Path) -> None:
    prepared = _prepared(tmp_path / "p.zarr")
    before = _files(prepared)
    run = CliRunner().invoke(app, ["bank", "build", "--data", str(prepared), "--out", str(prepared), "--overwrite"])
    assert run.exit_code == 2 and str(prepared) in run.output and "Traceback" not in run.output
    assert _files(prepared) == before


def test_bank_overwrite_refuses_an_unrelated_folder(tmp_path: Path) -> None:
    prepared = _prepared(tmp_path / "p.zarr")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.txt").write_text("three years of work")
    with pytest.raises(OutputError, match="not a synbt store"):
        build_bank(prepared, notes, overwrite=True)
    run = CliRunner().invoke(app, ["bank", "build", "--data", str(prepared), "--out", str(notes), "--overwrite"])
    assert run.exit_code == 2 and str(notes) in run.output
    assert (notes / "thesis.txt").read_text() == "three years of work"


def test_bank_overwrite_replaces_a_bank_but_not_a_store_of_another_kind(tmp_path: Path) -> None:
    prepared = _prepared(tmp_path / "p.zarr")
    bank_path = tmp_path / "bank.zarr"
    build_bank(prepared, bank_path)
    (bank_path / "cases" / "T000000" / "stale.partial").write_bytes(b"x")  # gone once the bank is replaced
    bank = build_bank(prepared, bank_path, overwrite=True, splits=None)
    assert len(bank) == 2 and not list(bank_path.rglob("*.partial"))
    assert TumorBank.open(bank_path).template_ids == ["T000000", "T000001"]
    other = _prepared(tmp_path / "other.zarr", kind="synthetic")
    before = _files(other)
    with pytest.raises(OutputError, match="'synthetic' store, not a 'bank'"):
        build_bank(prepared, other, overwrite=True)
    assert _files(other) == before


# ----------------------------------------------------------------------------- store export
def _raw_dataset(root: Path) -> dict[str, bytes]:
    """A folder as a raw dataset looks: a scan under the exported name and a splits file."""
    (root / "images" / "C0").mkdir(parents=True)
    (root / "images" / "C0" / "C0_0000.nii.gz").write_bytes(b"original scan")
    (root / "train_test_splits.csv").write_text("train_split,test_split\nC0,\n")
    return _files(root)


def test_export_refuses_a_folder_with_unrelated_files(tmp_path: Path) -> None:
    store = _prepared(tmp_path / "p.zarr")
    raw = tmp_path / "raw"
    before = _raw_dataset(raw)
    with pytest.raises(OutputError, match="not empty"):
        export_store(store, raw, fmt="nifti")
    with pytest.raises(OutputError, match="C0_0000.nii.gz"):  # even when allowed in, nothing is overwritten
        export_store(store, raw, fmt="nifti", into_nonempty=True)
    assert _files(raw) == before
    run = CliRunner().invoke(app, ["store", "export", str(store), "--format", "nifti", "--out", str(raw)])
    assert run.exit_code == 2 and str(raw) in run.output
    run = CliRunner().invoke(
        app, ["store", "export", str(store), "--format", "nifti", "--out", str(raw), "--into-nonempty"]
    )
    assert run.exit_code == 2 and "C0_0000.nii.gz" in run.output
    assert _files(raw) == before


def test_export_into_nonempty_writes_next_to_other_files(tmp_path: Path) -> None:
    store = _prepared(tmp_path / "p.zarr")
    out = tmp_path / "shared"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    export_store(store, out, fmt="nifti", into_nonempty=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "images" / "C1" / "C1_0001.nii.gz").exists()
    assert json.loads((out / EXPORT_MARKER).read_text())["complete"] is True


def test_export_of_another_store_into_an_export_folder_is_refused(tmp_path: Path) -> None:
    a = _prepared(tmp_path / "a.zarr", prefix="A")
    b = _prepared(tmp_path / "b.zarr", prefix="B")
    out = tmp_path / "export"
    export_store(a, out, fmt="nifti")
    before = _files(out)
    for into_nonempty in (False, True):
        with pytest.raises(OutputError, match="another store"):
            export_store(b, out, fmt="nifti", into_nonempty=into_nonempty)
    run = CliRunner().invoke(app, ["store", "export", str(b), "--format", "nifti", "--out", str(out)])
    assert run.exit_code == 2 and str(out) in run.output
    assert _files(out) == before
    nn = export_store(a, tmp_path / "nn", fmt="nnunet")
    with pytest.raises(OutputError, match="another store"):
        export_store(b, tmp_path / "nn", fmt="nnunet")
    assert sorted(p.name for p in (nn / "labelsTr").iterdir()) == ["A0.nii.gz", "A1.nii.gz"]


def test_rerun_of_the_same_export_updates_it_without_stale_cases(tmp_path: Path) -> None:
    store_path = _prepared(tmp_path / "s.zarr", n=3)
    out = tmp_path / "export"
    export_store(store_path, out, fmt="nifti")
    first = _files(out)
    export_store(store_path, out, fmt="nifti")  # a rerun into its own export works
    assert _files(out) == first
    CaseStore.open(store_path, mode="r+").delete_case("C2")
    export_store(store_path, out, fmt="nifti")
    assert not (out / "images" / "C2").exists() and not (out / "segmentations" / "expert" / "C2.nii.gz").exists()
    assert (out / "train_test_splits.csv").read_text() == "train_split,test_split\nC0,\nC1,\n"
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert marker["complete"] is True and marker["cases"] == 2 and marker["store"] == str(store_path.resolve())


def test_export_out_inside_the_store_is_refused(tmp_path: Path) -> None:
    store = _prepared(tmp_path / "s.zarr")
    before = _files(store)
    with pytest.raises(OutputError, match="lies inside the input"):
        export_store(store, store / "export", fmt="nifti")
    with pytest.raises(OutputError, match="lies inside the input"):
        export_store(store, store / "x.h5", fmt="hdf5")
    assert _files(store) == before


def test_failing_and_interrupted_exports_leave_no_partial_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nibabel as nib

    store = _prepared(tmp_path / "s.zarr", n=3)
    out = tmp_path / "export"
    real_save = nib.save
    calls = {"n": 0}

    def failing_save(img, filename):  # writes part of the file, then the disk is full
        calls["n"] += 1
        if calls["n"] == 4:
            Path(filename).write_bytes(b"half a file")
            raise OSError(28, "No space left on device")
        return real_save(img, filename)

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        export_store(store, out, fmt="nifti")
    assert not list(out.rglob("*.partial*"))
    monkeypatch.setattr(nib, "save", real_save)
    # a killed export leaves its partial file behind; the rerun removes it and finishes
    killed = out / "images" / "C2" / "C2_0001.nii.gz.partial.nii.gz"
    killed.parent.mkdir(parents=True, exist_ok=True)
    killed.write_bytes(b"killed mid-write")
    export_store(store, out, fmt="nifti")
    assert not list(out.rglob("*.partial*"))
    assert json.loads((out / EXPORT_MARKER).read_text())["complete"] is True
    assert len(list((out / "images").rglob("*.nii.gz"))) == 6


def test_hdf5_export_replaces_only_its_own_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _prepared(tmp_path / "a.zarr", prefix="A")
    b = _prepared(tmp_path / "b.zarr", prefix="B")
    foreign = tmp_path / "results.h5"
    foreign.write_bytes(b"a user's file")
    with pytest.raises(OutputError, match="results.h5"):
        export_store(a, foreign, fmt="hdf5")
    assert foreign.read_bytes() == b"a user's file"
    run = CliRunner().invoke(app, ["store", "export", str(a), "--format", "hdf5", "--out", str(foreign)])
    assert run.exit_code == 2 and str(foreign) in run.output
    out = tmp_path / "a.h5"
    export_store(a, out, fmt="hdf5")
    export_store(a, out, fmt="hdf5")  # a rerun replaces its own export
    with pytest.raises(OutputError, match="not an HDF5 export of"):
        export_store(b, out, fmt="hdf5")
    with h5py.File(out) as h5:
        assert sorted(h5["cases"]) == ["A0", "A1"]
    monkeypatch.setattr(CaseStore, "case_attrs", lambda *_: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        export_store(a, out, fmt="hdf5")
    assert not (tmp_path / "a.h5.partial").exists()
    with h5py.File(out) as h5:  # the previous export is untouched
        assert sorted(h5["cases"]) == ["A0", "A1"]
