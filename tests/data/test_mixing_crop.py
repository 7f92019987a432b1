"""The default segmentation crop fits the prepared volumes."""

from __future__ import annotations

from pathlib import Path

from synbt_factory.data.mixing import PAPER_CROP, crop_for_store
from synbt_factory.store import CaseStore


def _store(path: Path, card: dict) -> CaseStore:
    return CaseStore.create(path, kind="prepared", card=card)


def test_crop_is_cut_to_the_prepared_field_of_view(tmp_path: Path) -> None:
    small = _store(tmp_path / "a.zarr", {"prepare_config": {"fov_mm": [64, 64, 48], "spacing_mm": 1.0}})
    assert crop_for_store(small) == (64, 64, 48)
    assert crop_for_store(small, divisor=32) == (64, 64, 32)
    coarse = _store(tmp_path / "b.zarr", {"prepare_config": {"fov_mm": [200, 100, 128], "spacing_mm": [2, 1, 1]}})
    assert crop_for_store(coarse) == (96, 96, 128)  # 100 voxels → a multiple of 16; 128 already fits
    paper = _store(tmp_path / "c.zarr", {"prepare_config": {"fov_mm": [192, 192, 128], "spacing_mm": 1.0}})
    assert crop_for_store(paper) == PAPER_CROP
    assert crop_for_store(_store(tmp_path / "d.zarr", {})) == PAPER_CROP
