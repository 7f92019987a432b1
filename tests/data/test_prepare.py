"""prepare keeps world positions, enhancement and the case schema."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dataset_files import make_case, write_nifti, write_splits

from synbt_factory.data.mamamia import index_dataset
from synbt_factory.data.prepare import PrepareConfig, crop_window, prepare_case, prepare_dataset
from synbt_factory.store import CaseStore

TINY = PrepareConfig(fov_mm=(48, 56, 40))


def centroid_world(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return nib.affines.apply_affine(np.asarray(affine), np.argwhere(mask > 0).mean(axis=0))


def test_tumor_keeps_world_position_through_lps_anisotropic_scaled_int16(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    # LPS-stored, 0.8 x 0.8 x 2.0 mm, int16 with scl_slope 0.5: every trap at once.
    case = make_case(root, "GEO_001", tumor_world=(62.0, 77.0, -18.0), slope=0.5)
    write_splits(root, ["GEO_001"], [])
    img = nib.load(str(root / "images/GEO_001/GEO_001_0000.nii.gz"))
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert img.get_data_dtype() == np.int16 and float(img.dataobj.slope) == 0.5
    truth_world = centroid_world(case["tumor"], case["affine"])

    result = prepare_dataset(root, tmp_path / "p.zarr", config=TINY, workers=1)
    assert result.prepared == ["GEO_001"] and not result.failed
    store = CaseStore.open(tmp_path / "p.zarr")
    arrays, attrs = store.read_case("GEO_001", names=("image", "mask", "phases"))
    affine = np.asarray(attrs["affine"])
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    assert np.allclose(np.abs(np.diag(affine)[:3]), 1.0)
    assert arrays["image"].shape == (2, 48, 56, 40) and arrays["image"].dtype == np.float16
    assert np.linalg.norm(centroid_world(arrays["mask"], affine) - truth_world) < 1.5
    inside = arrays["mask"] > 0
    pre, post = arrays["image"][0].astype(np.float32), arrays["image"][1].astype(np.float32)
    assert post[inside].mean() > 1.8 * pre[inside].mean()
    # one shared scale: the post/pre ratio of the source (2.5) survives normalisation
    assert abs(np.median(post[inside] / pre[inside]) - 2.5) < 0.1
    assert arrays["phases"].shape[0] == 2
    assert np.array_equal(arrays["phases"][0], arrays["image"][1])


def test_prepare_resumes_and_skips_complete_cases(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.zarr"
    first = prepare_dataset(small_dataset, out, config=TINY, workers=2)
    assert sorted(first.prepared) == ["TEST_001", "TEST_002", "TEST_003"]
    store = CaseStore.open(out, mode="r+")
    before = store.read_array("TEST_001", "image")
    # simulate a crash mid-write of TEST_002: marker cleared
    store._cases["TEST_002"].attrs.update({"complete": False})
    second = prepare_dataset(small_dataset, out, config=TINY, workers=2)
    assert second.prepared == ["TEST_002"]
    assert sorted(second.skipped) == ["TEST_001", "TEST_003"]
    assert np.array_equal(CaseStore.open(out).read_array("TEST_001", "image"), before)
    attrs = CaseStore.open(out).case_attrs("TEST_003")
    assert attrs["split"] == "test" and attrs["dataset"] == "TESTSET"


def test_prepare_refuses_store_with_other_config(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.zarr"
    prepare_dataset(small_dataset, out, config=TINY, case_ids=["TEST_001"])
    with pytest.raises(Exception, match="another config"):
        prepare_dataset(small_dataset, out, config=PrepareConfig(fov_mm=(40, 40, 40)))


def test_bad_case_is_reported_and_others_prepared(small_dataset: Path, tmp_path: Path) -> None:
    (small_dataset / "images/TEST_001/TEST_001_0001.nii.gz").unlink()
    (small_dataset / "images/TEST_001/TEST_001_0002.nii.gz").unlink()
    result = prepare_dataset(small_dataset, tmp_path / "p.zarr", config=TINY)
    assert "TEST_001" in result.failed and "post-contrast" in result.failed["TEST_001"]
    assert sorted(result.prepared) == ["TEST_002", "TEST_003"]


def test_crop_window_anchors_anterior_and_contains_tumor() -> None:
    body = np.zeros((100, 100, 60), bool)
    body[20:80, 10:70, 10:50] = True
    w = crop_window(body, (40, 40, 20), anterior_margin=5)
    assert w[1] == (35, 75)  # ends 5 voxels in front of the anterior body edge (index 70)
    assert w[0] == (30, 70) and w[2] == (20, 40)
    tumor = np.zeros_like(body)
    tumor[75:78, 40:43, 45:48] = True
    w = crop_window(body, (40, 40, 20), anterior_margin=5, tumor=tumor)
    assert w[0][0] <= 75 and w[0][1] >= 78 and w[2][0] <= 45 and w[2][1] >= 48


def test_prepare_case_names_case_on_missing_mask(small_dataset: Path) -> None:
    (small_dataset / "segmentations/expert/TEST_003.nii.gz").unlink()
    case = index_dataset(small_dataset).get("TEST_003")
    with pytest.raises(ValueError, match="TEST_003.*expert"):
        prepare_case(case, TINY)


# --- prepare never writes what check rejects ----------------------------------------------------------------------


def _set_header(path: Path, **fields: object) -> None:
    """Rewrite raw header fields (nibabel's loader would silently 'fix' a zero pixdim)."""
    import gzip
    import io

    raw = gzip.decompress(path.read_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    for key, value in fields.items():
        header[key] = value
    path.write_bytes(gzip.compress(header.binaryblock + raw[348:]))


def _reaffine(path: Path, affine: np.ndarray) -> None:
    img = nib.load(str(path))
    write_nifti(path, np.asarray(img.dataobj), affine, dtype=img.get_data_dtype())


def _lr_flipped(c: dict) -> np.ndarray:
    """Same voxels with the first voxel axis reversed: the mask lands mirrored in world space."""
    aff = c["affine"].copy()
    aff[:3, 0] = -c["affine"][:3, 0]
    aff[:3, 3] = c["affine"][:3, 3] + c["affine"][:3, 0] * (80 - 1)
    return aff


def _shifted(c: dict, mm: float, axis: int) -> np.ndarray:
    aff = c["affine"].copy()
    aff[axis, 3] += mm
    return aff


def _nan_post(root: Path, c: dict) -> None:
    data = np.full((80, 90, 30), 300.0, np.float32)
    data[10:14, 10:14, 5:14] = np.nan
    write_nifti(root / "images/BAD_002/BAD_002_0001.nii.gz", data, c["affine"], dtype=np.float32)


def _series(root: Path, c: dict) -> None:
    write_nifti(root / "images/BAD_002/BAD_002_0001.nii.gz", np.full((80, 90, 30, 2), 300.0), c["affine"])


def _loop(root: Path, c: dict) -> None:
    phase = root / "images/BAD_002/BAD_002_0001.nii.gz"
    phase.unlink()
    phase.symlink_to(phase.name)


def _pixdim_zero(root: Path, c: dict) -> None:
    for path in sorted(root.rglob("BAD_002*.nii.gz")):
        _set_header(path, pixdim=np.array([1, 0, 0.8, 2, 1, 1, 1, 1], np.float32), sform_code=0)


DAMAGE = {
    "nan in post": (_nan_post, "BAD_002_0001.nii.gz: 144 NaN/Inf voxels"),
    "mask L/R-flipped affine": (
        lambda r, c: _reaffine(r / "segmentations/expert/BAD_002.nii.gz", _lr_flipped(c)),
        "segmentations/expert/BAD_002.nii.gz: mask shape",
    ),
    "mask shifted 15 mm": (
        lambda r, c: _reaffine(r / "segmentations/expert/BAD_002.nii.gz", _shifted(c, 15, 0)),
        "segmentations/expert/BAD_002.nii.gz: mask shape",
    ),
    "post shifted 7 mm": (
        lambda r, c: _reaffine(r / "images/BAD_002/BAD_002_0001.nii.gz", _shifted(c, 7, 2)),
        "BAD_002_0001.nii.gz: geometry differs",
    ),
    "4D series": (_series, "BAD_002_0001.nii.gz: 4D image"),
    "symlink loop": (_loop, "BAD_002_0001.nii.gz: unreadable"),
    "phase gap": (lambda r, c: (r / "images/BAD_002/BAD_002_0001.nii.gz").unlink(), "phases 0, 2: _0001 is missing"),
    "pixdim 0": (_pixdim_zero, "BAD_002_0000.nii.gz: voxel size pixdim (0.0, 0.8, 2.0)"),
    "constant pre": (
        lambda r, c: write_nifti(r / "images/BAD_002/BAD_002_0000.nii.gz", np.full((80, 90, 30), 100.0), c["affine"]),
        "BAD_002_0000.nii.gz: pre-contrast phase is constant",
    ),
    "train/test leak": (
        lambda r, c: write_splits(r, ["OK_001", "BAD_002"], ["BAD_002"]),
        "train_test_splits.csv: BAD_002 is listed in train and test",
    ),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_prepare_refuses_every_case_check_rejects(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "ds"
    make_case(root, "OK_001")
    c = make_case(root, "BAD_002", slope=None, n_post=2)
    write_splits(root, ["OK_001", "BAD_002"], [])
    damage, cause = DAMAGE[kind]
    damage(root, c)
    result = prepare_dataset(root, tmp_path / "p.zarr", config=TINY, workers=1)
    assert result.prepared == ["OK_001"]
    assert cause in result.failed["BAD_002"], result.failed
    assert "BAD_002" not in CaseStore.open(tmp_path / "p.zarr").all_case_groups()


def test_prepare_names_file_and_root_cause_of_a_broken_file(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_case(root, "TRUNC_001")
    phase = root / "images/TRUNC_001/TRUNC_001_0001.nii.gz"
    phase.write_bytes(phase.read_bytes()[:400])
    result = prepare_dataset(root, tmp_path / "p.zarr", config=TINY, workers=1)
    message = result.failed["TRUNC_001"]
    assert "images/TRUNC_001/TRUNC_001_0001.nii.gz: unreadable" in message
    assert "applying transform" not in message and "object at 0x" not in message


def test_prepare_ignores_patient_info_that_is_a_list(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_case(root, "INFO_001")
    (root / "patient_info_files/info_001.json").write_text("[1, 2, 3]")
    result = prepare_dataset(root, tmp_path / "p.zarr", config=TINY, workers=1)
    assert result.prepared == ["INFO_001"] and not result.failed
    assert CaseStore.open(tmp_path / "p.zarr").case_attrs("INFO_001")["dataset"] is None


def test_prepare_refuses_a_dataset_whose_splits_file_is_unreadable(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_case(root, "OK_001")
    (root / "train_test_splits.csv").write_bytes(b"train_split,test_split\nOK_001,\nPatient_\xe9,\n")
    with pytest.raises(ValueError, match=r"train_test_splits.csv: cannot read the splits file: not UTF-8"):
        prepare_dataset(root, tmp_path / "p.zarr", config=TINY, workers=1)
    assert not (tmp_path / "p.zarr").exists()


def test_cli_prepare_exits_nonzero_naming_the_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    root = tmp_path / "ds"
    make_case(root, "OK_001")
    c = make_case(root, "BAD_002", slope=None)
    _nan_post(root, c)
    out = tmp_path / "p.zarr"
    result = CliRunner().invoke(
        app,
        ["data", "prepare", str(root), "--out", str(out), "--fov", "48", "56", "40", "--workers", "1"],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 1, result.output
    assert "failed BAD_002 images/BAD_002/BAD_002_0001.nii.gz: 144 NaN/Inf voxels" in result.output
    assert CaseStore.open(out).case_ids() == ["OK_001"]
