"""verify trusts checksums (deleted/corrupted chunks); export writes formats other tools read."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.data.mamamia import index_dataset
from synbt_factory.store import CaseStore, StoreLayout
from synbt_factory.store.export import export_store
from synbt_factory.store.verify import verify_store


def _store(path: Path, n: int = 3, test_cases: tuple[int, ...] = ()) -> Path:
    rng = np.random.default_rng(0)
    store = CaseStore.create(path, kind="synthetic", card={"synthetic": True}, layout=StoreLayout(chunk=8))
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    for i in range(n):
        image = (rng.random((2, 16, 16, 16)) + 0.5).astype(np.float16)
        mask = np.zeros((16, 16, 16), np.uint8)
        mask[4:9, 5:10, 6:11] = 1
        split = "test" if i in test_cases else "train"
        store.write_case(
            f"SYN_{i:06d}",
            {"image": image, "mask": mask, "synthetic_mask": mask},
            {"affine": affine.tolist(), "spacing": [1, 1, 1], "split": split, "method": "syntumor"},
        )
    return path


def test_verify_catches_deleted_and_corrupted_chunks(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    assert verify_store(path).ok
    chunk = path / "cases" / "SYN_000000" / "image" / "c" / "1" / "0" / "1" / "0"
    assert chunk.exists()
    chunk.unlink()  # reads back as fill value, no error from zarr
    corrupt = path / "cases" / "SYN_000001" / "mask" / "c" / "0" / "1" / "1"
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    result = verify_store(path)
    assert set(result.bad_cases) == {"SYN_000000", "SYN_000001"}
    assert "image" in result.bad_cases["SYN_000000"][0]
    run = CliRunner().invoke(app, ["store", "verify", str(path)])
    assert run.exit_code == 1 and "SYN_000000" in run.output and "SYN_000001" in run.output


def test_verify_reports_incomplete_cases(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    CaseStore.open(path, mode="r+")._cases["SYN_000002"].attrs.update({"complete": False})
    result = verify_store(path)
    assert result.incomplete == ["SYN_000002"] and not result.ok


def test_export_nnunet_layout(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    root = export_store(path, tmp_path / "nn", fmt="nnunet", dataset_id=7, dataset_name="Syn")
    assert root.name == "Dataset007_Syn"
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["labels"] == {"background": 0, "tumor": 1}
    assert sorted(p.name for p in (root / "imagesTr").iterdir())[:2] == [
        "SYN_000000_0000.nii.gz",
        "SYN_000000_0001.nii.gz",
    ]
    label = nib.load(str(root / "labelsTr" / "SYN_000001.nii.gz"))
    assert label.get_fdata().sum() == 125 and np.allclose(label.affine[:3, 3], [-10, 20, 5])


def test_export_nnunet_puts_test_cases_in_images_ts(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr", n=3, test_cases=(1,))
    root = export_store(path, tmp_path / "nn", fmt="nnunet")
    assert json.loads((root / "dataset.json").read_text())["numTraining"] == 2
    assert sorted(p.name for p in (root / "imagesTs").iterdir()) == ["SYN_000001_0000.nii.gz", "SYN_000001_0001.nii.gz"]
    assert [p.name for p in (root / "labelsTs").iterdir()] == ["SYN_000001.nii.gz"]
    assert not any(p.name.startswith("SYN_000001") for p in (root / "imagesTr").iterdir())
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == ["SYN_000000.nii.gz", "SYN_000002.nii.gz"]


def test_export_nifti_is_read_back_by_the_indexer(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr", n=2)
    export_store(path, tmp_path / "nifti", fmt="nifti")
    index = index_dataset(tmp_path / "nifti")
    assert [c.case_id for c in index.cases] == ["SYN_000000", "SYN_000001"]
    assert all(c.n_post_phases == 1 and c.expert_mask is not None and c.split == "train" for c in index.cases)
    back = nib.load(str(index.cases[0].phases[1])).get_fdata()
    ref = CaseStore.open(path).read_array("SYN_000000", "image")[1].astype(np.float32)
    assert np.allclose(back, ref)


def test_export_hdf5_single_file(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr", n=2)
    out = export_store(path, tmp_path / "x.h5", fmt="hdf5")
    assert out.exists() and not (tmp_path / "x.h5.partial").exists()
    with h5py.File(out) as h5:
        assert sorted(h5["cases"]) == ["SYN_000000", "SYN_000001"]
        ref = CaseStore.open(path).read_array("SYN_000001", "mask")
        assert np.array_equal(h5["cases/SYN_000001/mask"][...], ref)
        assert json.loads(h5["cases/SYN_000001"].attrs["attrs"])["method"] == "syntumor"


def test_cli_info_json_and_preview(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    run = CliRunner().invoke(app, ["store", "info", str(path), "--json"])
    assert run.exit_code == 0, run.output
    info = json.loads(run.output)
    assert info["complete_cases"] == 3 and info["card"]["synthetic"] is True and info["bytes_per_case"] > 0
    png = tmp_path / "p.png"
    run = CliRunner().invoke(app, ["store", "preview", str(path), "--out", str(png)])
    assert run.exit_code == 0, run.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
