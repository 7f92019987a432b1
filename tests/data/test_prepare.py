"""prepare keeps world positions, enhancement and the case schema."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_case, write_splits

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
