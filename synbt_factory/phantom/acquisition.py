"""From the RAS anatomy grid to stored scanner volumes.

Geometry: a site profile gives anisotropic voxel spacing; the stored orientation is ``RAS``
(nibabel's usual axial), ``LPS`` (first two axes flipped) or ``SAG`` (sagittal-like: slices
along left–right, axes permuted) at site A, and ``LPS``, ``LAS`` (first axis flipped) or ``COR``
(coronal-like: slices along posterior–anterior, axes permuted, stored ``L``, ``S``, ``A``) at
site B. The thick (slice) axis is the last stored axis. The acquisition covers the anatomy grid's box.

Signal chain per phase: slice-profile / partial-volume blur (Gaussian of the voxel's box width)
→ linear sampling at the acquisition voxel centres (with a sub-millimetre patient shift per
post-contrast phase) → Rician noise → scaling to non-negative int16 (optionally stored with
``scl_slope``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from synbt_factory.phantom.presets import PhantomConfig, SiteProfile
from synbt_factory.phantom.sites import ORIENTATIONS, SITE_STYLES, VIEWS

__all__ = [
    "Geometry",
    "ORIENTATIONS",
    "VIEWS",
    "orientation_for",
    "sample_geometry",
    "resample",
    "to_stored",
    "rician",
    "psf_sigma_mm",
]


def orientation_for(case_index: int, site: str = "A") -> str:
    """Deterministic by index (see :attr:`SiteStyle.orientations`).

    Site A: most cases RAS, every 8th from the 2nd and 6th LPS, every 8th from the 7th SAG.
    Site B: LPS, LAS and COR in turn (never RAS).
    """
    return SITE_STYLES[site].orientation_for(case_index)


@dataclass(frozen=True, kw_only=True)
class Geometry:
    """Acquisition grid of one case.

    Attributes:
        orientation: a name in :data:`ORIENTATIONS`.
        spacing_world: voxel spacing along world X, Y, Z (mm).
        shape_world: acquisition voxels along world X, Y, Z.
        start_mm: box coordinate (mm) of the first acquisition voxel centre per world axis.
        world_origin_mm: RAS mm of the box's corner (box coordinate 0).
        world_spacing_mm: spacing of the anatomy grid.
    """

    orientation: str
    spacing_world: tuple[float, float, float]
    shape_world: tuple[int, int, int]
    start_mm: tuple[float, float, float]
    world_origin_mm: tuple[float, float, float]
    world_spacing_mm: float

    @property
    def perm(self) -> tuple[int, int, int]:
        return ORIENTATIONS[self.orientation][0]

    @property
    def flips(self) -> tuple[bool, bool, bool]:
        return ORIENTATIONS[self.orientation][1]

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        return tuple(self.shape_world[p] for p in self.perm)  # type: ignore[return-value]

    @property
    def stored_spacing(self) -> tuple[float, float, float]:
        return tuple(self.spacing_world[p] for p in self.perm)  # type: ignore[return-value]

    @property
    def ras_affine(self) -> np.ndarray:
        """Voxel → RAS mm affine of the array sampled in world axis order (before :func:`to_stored`)."""
        aff = np.eye(4)
        aff[:3, :3] = np.diag(self.spacing_world)
        aff[:3, 3] = np.asarray(self.world_origin_mm) + np.asarray(self.start_mm)
        return aff

    @property
    def affine(self) -> np.ndarray:
        """Voxel → RAS mm affine of the stored array (the NIfTI affine), float64 4×4."""
        ras = self.ras_affine
        aff = np.eye(4)
        aff[:3, 3] = ras[:3, 3]
        for a, p in enumerate(self.perm):
            aff[:3, a] = ras[:3, p]
        shape = self.stored_shape
        for a, flip in enumerate(self.flips):
            if flip:
                aff[:3, 3] += aff[:3, a] * (shape[a] - 1)
                aff[:3, a] *= -1.0
        return aff


def sample_geometry(
    rng: np.random.Generator, config: PhantomConfig, profile: SiteProfile, orientation: str
) -> Geometry:
    """Draw spacing and scanner origin for one case (``orientation`` from :func:`orientation_for`)."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {sorted(ORIENTATIONS)}, got {orientation!r}")
    inplane = round(float(rng.uniform(*profile.inplane_mm)), 4)
    thick = round(float(rng.uniform(*profile.slice_mm)), 4)
    slice_axis = ORIENTATIONS[orientation][0][2]  # the world axis stored last
    spacing = [inplane, inplane, inplane]
    spacing[slice_axis] = thick
    fov = np.asarray(config.fov_mm, dtype=np.float64)
    shape = [int(np.floor(f / s)) for f, s in zip(fov, spacing, strict=True)]
    start = [0.5 * (f - n * s) + 0.5 * s for f, n, s in zip(fov, shape, spacing, strict=True)]
    origin = (
        float(-0.5 * fov[0] + rng.uniform(-15.0, 15.0)),
        float(-rng.uniform(0.55, 0.75) * fov[1]),
        float(-rng.uniform(20.0, 90.0)),
    )
    return Geometry(
        orientation=orientation,
        spacing_world=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        shape_world=tuple(shape),  # type: ignore[arg-type]
        start_mm=tuple(float(s) for s in start),  # type: ignore[arg-type]
        world_origin_mm=origin,
        world_spacing_mm=float(config.world_spacing_mm),
    )


def psf_sigma_mm(geometry: Geometry, *, base_mm: float = 0.25) -> np.ndarray:
    """Per world axis, the Gaussian sigma (mm) that turns an anatomy-grid voxel into an acquisition voxel.

    A box of width ``s`` has variance ``s²/12``; the anatomy grid already holds ``ws²/12``.
    """
    s = np.asarray(geometry.spacing_world)
    ws = geometry.world_spacing_mm
    return np.sqrt(np.maximum(s**2 - ws**2, 0.0) / 12.0 + base_mm**2)


def resample(
    world: np.ndarray,
    geometry: Geometry,
    *,
    order: int,
    sigma_mm: np.ndarray | None = None,
    shift_mm: np.ndarray | None = None,
) -> np.ndarray:
    """Sample an anatomy-grid array at the acquisition voxel centres (world axis order).

    Args:
        world: (X, Y, Z) array on the anatomy grid.
        geometry: the acquisition grid.
        order: 0 nearest (labels) or 1 linear (signals, fractions).
        sigma_mm: optional Gaussian blur per world axis applied first (partial volume).
        shift_mm: optional patient displacement (content moves by this vector).

    Returns:
        array of ``geometry.shape_world`` (float32 for order 1, input dtype for order 0).
    """
    ws = geometry.world_spacing_mm
    src = world
    if sigma_mm is not None and np.any(np.asarray(sigma_mm) > 0):
        src = ndi.gaussian_filter(
            world.astype(np.float32, copy=False), sigma=np.asarray(sigma_mm) / ws, truncate=3.0, mode="nearest"
        )
    s = np.asarray(geometry.spacing_world, dtype=np.float64)
    offset = (np.asarray(geometry.start_mm) - 0.5 * ws) / ws
    if shift_mm is not None:
        offset = offset - np.asarray(shift_mm, dtype=np.float64) / ws
    out_dtype = np.float32 if order > 0 else src.dtype
    return ndi.affine_transform(
        src,
        s / ws,
        offset=offset,
        output_shape=geometry.shape_world,
        order=order,
        mode="nearest",
        prefilter=False,
        output=out_dtype,
    )


def to_stored(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Reorder an array in world axis order to the stored orientation (C-contiguous copy)."""
    out = np.transpose(array, geometry.perm)
    for a, flip in enumerate(geometry.flips):
        if flip:
            out = np.flip(out, axis=a)
    return np.ascontiguousarray(out)


def rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of ``signal`` plus complex Gaussian noise of standard deviation ``sigma`` (float32)."""
    real = signal + rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    return np.hypot(real, imag).astype(np.float32, copy=False)
