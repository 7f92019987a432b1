"""Small NIfTI helpers (nibabel): header geometry, full verified reads and geometry sanity checks."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = ["Geometry", "read_geometry", "read_full", "NiftiReadError", "same_geometry", "geometry_problems"]


class NiftiReadError(OSError):
    """A NIfTI file that cannot be read completely (truncated, corrupt, not NIfTI, not a file).

    Attributes:
        path: the file.
        reason: why it cannot be read, without the path (e.g. ``not a NIfTI file (wrong magic)``).
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class Geometry:
    """Shape (spatial), voxel spacing in mm and the 4×4 voxel→RAS+ mm affine of a NIfTI file.

    ``full_shape`` is the data shape as stored (a 4D series has a 4th entry); ``header_pixdim``
    holds the spatial ``pixdim`` values exactly as written in the file, before nibabel replaces
    zero or negative ones.
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: np.ndarray
    full_shape: tuple[int, ...] = ()
    header_pixdim: tuple[float, ...] = field(default=())


def _reason(exc: BaseException, path: Path) -> str:
    """``strerror`` for OS errors, else ``Type: message``; the full path is shortened to the file name."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = (str(exc).strip() or repr(exc)).replace(str(path), path.name)
    return f"{type(exc).__name__}: {text}"


def _raw_pixdim(img: Any, path: Path) -> tuple[float, ...]:
    """The spatial pixdim as stored: nibabel's loader silently turns 0 into 1 and -x into x."""
    header = img.header
    if "pixdim" not in header:
        return ()
    try:
        with nib.openers.ImageOpener(str(path)) as fh:
            raw = type(header).from_fileobj(fh, check=False)
        pixdim = raw["pixdim"]
    except Exception:  # the loaded header is the best we have
        pixdim = header["pixdim"]
    n = min(3, len(img.shape))
    return tuple(float(v) for v in np.asarray(pixdim, dtype=np.float64)[1 : 1 + n])


def _load(path: Path) -> tuple[Any, Geometry]:
    path = Path(path)
    if path.is_dir():
        raise NiftiReadError(path, "is a folder, not a NIfTI file")
    try:  # nibabel reports every OS error as "no such file or no access": name the real cause first
        with open(path, "rb"):
            pass
    except OSError as exc:
        broken = " (a broken link)" if path.is_symlink() and exc.errno == errno.ENOENT else ""
        raise NiftiReadError(path, f"cannot open: {exc.strerror or exc}{broken}") from exc
    try:
        img = nib.load(str(path))
        full_shape = tuple(int(s) for s in img.shape)
        geometry = Geometry(
            shape=full_shape[:3],
            spacing=tuple(float(z) for z in img.header.get_zooms()[:3]),
            affine=np.asarray(img.affine, dtype=np.float64),
            full_shape=full_shape,
            header_pixdim=_raw_pixdim(img, path),
        )
    except NiftiReadError:
        raise
    except Exception as exc:
        raise NiftiReadError(path, f"not a readable NIfTI header ({_reason(exc, path)})") from exc
    return img, geometry


def read_geometry(path: Path) -> Geometry:
    """Header only: fast, but says nothing about whether the data block is intact."""
    return _load(path)[1]


def read_full(path: Path) -> tuple[np.ndarray, Geometry]:
    """Read the whole data block (with ``scl_slope``/``scl_inter`` applied) as float32.

    A truncated ``.nii.gz`` has a valid header and fails only when its data is read, so this
    forces the full read and turns any failure into :class:`NiftiReadError` naming the file.
    """
    img, geometry = _load(path)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise NiftiReadError(path, f"data cannot be read completely ({_reason(exc, Path(path))})") from exc
    return data, geometry


def geometry_problems(geometry: Geometry) -> list[str]:
    """What makes a header unusable as one 3D volume: not 3D, a series, zero/negative/NaN spacing, bad affine."""
    problems = []
    full = geometry.full_shape or geometry.shape
    if len(full) < 3:
        problems.append(f"{len(full)}D image (shape {full}); a 3D volume is needed")
    elif any(s > 1 for s in full[3:]):
        problems.append(
            f"{len(full)}D image (shape {full}): {int(np.prod(full[3:]))} volumes where one 3D volume is expected"
        )
    if any(s < 1 for s in full):
        problems.append(f"empty dimension in shape {full}")
    pixdim = geometry.header_pixdim
    if pixdim and not all(np.isfinite(v) and v > 0 for v in pixdim):
        problems.append(f"voxel size pixdim {tuple(round(v, 4) for v in pixdim)} is not positive and finite")
    affine = np.asarray(geometry.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        problems.append("affine is not a finite 4×4 matrix")
    else:
        columns = np.linalg.norm(affine[:3, :3], axis=0)
        if abs(float(np.linalg.det(affine[:3, :3]))) < 1e-9 * max(1.0, float(np.prod(columns))) or not np.all(
            columns > 1e-6
        ):
            problems.append(f"affine is singular (voxel axes {np.round(affine[:3, :3], 4).tolist()})")
        elif (
            pixdim
            and len(pixdim) == 3
            and all(np.isfinite(v) and v > 0 for v in pixdim)
            and not np.allclose(columns, pixdim, rtol=1e-3, atol=1e-4)
        ):
            problems.append(
                f"pixdim {tuple(round(v, 4) for v in pixdim)} disagrees with the affine's voxel size "
                f"{tuple(round(float(c), 4) for c in columns)}"
            )
    return problems


def same_geometry(a: Geometry, b: Geometry, *, atol_mm: float = 1e-3) -> bool:
    return a.shape == b.shape and bool(np.allclose(a.affine, b.affine, atol=atol_mm))
