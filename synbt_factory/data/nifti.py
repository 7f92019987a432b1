"""Small NIfTI helpers (nibabel): header geometry and full, verified reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["Geometry", "read_geometry", "read_full", "NiftiReadError", "same_geometry"]


class NiftiReadError(OSError):
    """A NIfTI file that cannot be read completely (truncated, corrupt, not NIfTI)."""


@dataclass(frozen=True)
class Geometry:
    """Shape (spatial), voxel spacing in mm and the 4×4 voxel→RAS+ mm affine of a NIfTI file."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: np.ndarray


def read_geometry(path: Path) -> Geometry:
    """Header only: fast, but says nothing about whether the data block is intact."""
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise NiftiReadError(f"{path}: not a readable NIfTI header ({exc})") from exc
    shape = tuple(int(s) for s in img.shape[:3])
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    return Geometry(shape=shape, spacing=spacing, affine=np.asarray(img.affine, dtype=np.float64))


def read_full(path: Path) -> tuple[np.ndarray, Geometry]:
    """Read the whole data block (with ``scl_slope``/``scl_inter`` applied) as float32.

    A truncated ``.nii.gz`` has a valid header and fails only when its data is read, so this
    forces the full read and turns any failure into :class:`NiftiReadError` naming the file.
    """
    geometry = read_geometry(path)
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise NiftiReadError(f"{path}: data cannot be read completely ({type(exc).__name__}: {exc})") from exc
    return data, geometry


def same_geometry(a: Geometry, b: Geometry, *, atol_mm: float = 1e-3) -> bool:
    return a.shape == b.shape and bool(np.allclose(a.affine, b.affine, atol=atol_mm))
