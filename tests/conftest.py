"""Shared fixtures: small hand-made MAMA-MIA-layout datasets with known geometry."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_files import lps_anisotropic_affine, make_case, write_nifti, write_splits  # noqa: F401


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """Three clean cases (one with lower-case file names) and a wide splits file."""
    root = tmp_path / "mm"
    make_case(root, "TEST_001")
    make_case(root, "TEST_002", lower=True, n_post=3, tumor_world=(50.0, 70.0, -20.0))
    make_case(root, "TEST_003", slope=None, tumor_world=(55.0, 80.0, -10.0))
    write_splits(root, ["TEST_001", "TEST_002"], ["TEST_003"])
    return root
