"""Smooth random fields: Gaussian-filtered white noise, made cheap by working on a coarse grid.

A field with correlation length ``L`` mm needs no detail finer than about ``L / 3``; it is drawn
and filtered on such a coarse grid, then interpolated (linear) to the requested shape. Every
function takes an explicit :class:`numpy.random.Generator`.

:func:`smooth_field` (a correlation length in mm) is not :func:`synbt_factory.synthesis.augment.spline_field`
(cubic-spline interpolation of N(0, 1) knots, several channels, used by SynTumor and the tissue synthesizer): the
two draw different numbers from the generator and give different fields, and each is part of what makes its
outputs byte-reproducible (phantom datasets here; SynTumor stores and tissue training data there), so
neither can stand in for the other.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["smooth_field", "bias_field", "upsample_to"]


def upsample_to(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear interpolation of ``coarse`` onto ``shape``, both grids spanning the same box.

    Voxel centres are aligned the way a box is split into equal cells (cell-centred grids).
    Returns float32 of ``shape``.
    """
    coarse = np.asarray(coarse, dtype=np.float32)
    scale = np.array(coarse.shape, dtype=np.float64) / np.array(shape, dtype=np.float64)
    offset = 0.5 * scale - 0.5
    return ndi.affine_transform(
        coarse, scale, offset=offset, output_shape=tuple(shape), order=1, mode="nearest", prefilter=False
    ).astype(np.float32, copy=False)


def smooth_field(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    *,
    spacing_mm: float,
    correlation_mm: float | tuple[float, float, float],
) -> np.ndarray:
    """A zero-mean, unit-variance smooth Gaussian random field.

    Args:
        rng: the random generator to draw from.
        shape: output voxels (X, Y, Z).
        spacing_mm: voxel spacing of the output grid in mm.
        correlation_mm: Gaussian filter sigma in mm, one value or one per axis (anisotropic
            fields, e.g. longer along the ducts of the breast).

    Returns:
        float32 array of ``shape``, standardised to mean 0 and standard deviation 1.
    """
    corr = np.broadcast_to(np.asarray(correlation_mm, dtype=np.float64), (3,))
    if np.any(corr <= 0):
        raise ValueError(f"correlation_mm must be positive, got {correlation_mm}")
    # Coarse cell size: a third of the correlation length, never finer than the output grid.
    cell = np.maximum(corr / 3.0, spacing_mm)
    extent = np.array(shape, dtype=np.float64) * spacing_mm
    coarse_shape = tuple(int(max(4, np.ceil(e / c))) for e, c in zip(extent, cell, strict=True))
    actual_cell = extent / np.array(coarse_shape)
    noise = rng.standard_normal(coarse_shape, dtype=np.float32)
    field = ndi.gaussian_filter(noise, sigma=tuple(corr / actual_cell), mode="wrap", truncate=3.0)
    field -= field.mean()
    std = float(field.std())
    if std > 0:
        field /= std
    return upsample_to(field, shape) if coarse_shape != tuple(shape) else field


def bias_field(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    *,
    spacing_mm: float,
    strength: float,
) -> np.ndarray:
    """A multiplicative coil-sensitivity (bias) field, mean about 1.

    The log-field is a random linear gradient (strongest along anterior–posterior, as with a
    breast coil in the prone position) plus a smooth random field of ~60 mm correlation.

    Args:
        rng: the random generator to draw from.
        shape: voxels (X, Y, Z) of a RAS grid.
        spacing_mm: voxel spacing in mm.
        strength: amplitude of the log-field (0.2 gives roughly ±20 %).

    Returns:
        float32 array of ``shape``, positive.
    """
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    coarse = tuple(max(4, int(np.ceil(s * spacing_mm / 12.0))) for s in shape)
    axes = np.meshgrid(*[np.linspace(-0.5, 0.5, n, dtype=np.float32) for n in coarse], indexing="ij")
    gradient = rng.uniform(-0.4, 0.4) * axes[0] + rng.uniform(0.6, 1.2) * axes[1] + rng.uniform(-0.4, 0.4) * axes[2]
    wobble = smooth_field(rng, coarse, spacing_mm=12.0, correlation_mm=60.0)
    log_field = strength * (gradient + 0.5 * wobble)
    return np.exp(upsample_to(log_field, shape)).astype(np.float32)
