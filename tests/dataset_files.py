"""MAMA-MIA-layout test files: NIfTI writers, small cases and the splits file (shared by tests/ and conftest.py).

A module of its own, not ``conftest``: several ``conftest.py`` files exist, and ``from conftest import ...`` gets
whichever one pytest loaded last.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np


def write_nifti(
    path: Path, data: np.ndarray, affine: np.ndarray, *, dtype=np.int16, slope: float | None = None
) -> Path:
    """Write ``data`` with ``affine``; with ``slope`` the stored ints are data/slope and scl_slope=slope."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if slope is not None:
        stored = np.rint(data / slope).astype(dtype)
        img = nib.Nifti1Image(stored, affine)
        img.header.set_slope_inter(slope, 0.0)
    else:
        img = nib.Nifti1Image(data.astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def lps_anisotropic_affine(spacing=(0.8, 0.8, 2.0), origin=(90.0, 120.0, -40.0)) -> np.ndarray:
    """Voxel → RAS+ mm affine of an LPS-stored volume (first two axes flipped), anisotropic spacing."""
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = origin
    return aff


def make_case(
    root: Path,
    case_id: str,
    *,
    shape=(80, 90, 30),
    affine: np.ndarray | None = None,
    tumor_world: tuple[float, float, float] = (60.0, 75.0, -15.0),
    tumor_radius_mm: float = 6.0,
    n_post: int = 2,
    slope: float | None = 0.5,
    lower: bool = False,
    split: str = "train",
) -> dict:
    """One case: a bright body block, a tumor sphere at a world position that enhances 2.5×."""
    affine = lps_anisotropic_affine() if affine is None else affine
    ijk = np.indices(shape).reshape(3, -1).T
    world = nib.affines.apply_affine(affine, ijk).reshape(*shape, 3)
    dist = np.linalg.norm(world - np.asarray(tumor_world), axis=-1)
    tumor = dist <= tumor_radius_mm
    body = np.zeros(shape, bool)
    body[5:-5, 5:-5, 2:-2] = True
    pre = np.where(body, 400.0, 5.0)
    pre[tumor] = 300.0
    name = case_id.lower() if lower else case_id
    folder = root / "images" / name
    write_nifti(folder / f"{name}_0000.nii.gz", pre, affine, slope=slope)
    for k in range(1, n_post + 1):
        post = pre.copy()
        post[body] *= 1.05
        post[tumor] = 300.0 * (2.5 - 0.1 * (k - 1))
        write_nifti(folder / f"{name}_{k:04d}.nii.gz", post, affine, slope=slope)
    (folder / "SYNAPSE_METADATA_MANIFEST.tsv").write_text("name\tid\nx\t1\n")
    write_nifti(root / "segmentations" / "expert" / f"{name}.nii.gz", tumor.astype(np.uint8), affine, dtype=np.uint8)
    info_dir = root / "patient_info_files"
    info_dir.mkdir(parents=True, exist_ok=True)
    (info_dir / f"{case_id.lower()}.json").write_text(
        json.dumps({"patient_id": case_id, "imaging_data": {"dataset": "TESTSET", "bilateral": True}})
    )
    return {"case_id": case_id, "tumor": tumor, "affine": affine, "split": split, "tumor_world": tumor_world}


def write_splits(root: Path, train: list[str], test: list[str]) -> None:
    n = max(len(train), len(test))
    with open(root / "train_test_splits.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["train_split", "test_split"])
        for i in range(n):
            w.writerow([train[i] if i < len(train) else "", test[i] if i < len(test) else ""])
