"""Replayable shape augmentation of binary tumor templates (paper Sec. 2.3).

TorchIO's split, applied to masks: :func:`draw_augment` draws every random number of one
augmentation from an explicit generator into a frozen :class:`AugmentRecord`;
:func:`apply_augment` is a deterministic function of (template, record), so storing the
record is enough to rebuild the identical mask later.

One augmentation = flips → 90° rotation (both exact index operations) → one resampling
with a small-angle 3D rotation, a zoom and a mild elastic displacement (cubic cardinal
spline through a coarse grid of Gaussian control displacements), thresholded at 0.5 →
hole filling → largest connected component (26-connectivity). The result is a single
closed component, cropped to its bounding box plus a one-voxel border.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

from synbt_factory.config import config_from_dict, config_to_dict
from synbt_factory.synthesis.cubic_spline import natural_cubic_weights

__all__ = [
    "AugmentConfig",
    "AugmentRecord",
    "draw_augment",
    "apply_augment",
    "augment_coordinates",
    "largest_component",
    "close_mask",
    "crop_to_bbox",
    "STRUCTURE_26",
    "spline_weights",
    "spline_field",
]

log = logging.getLogger(__name__)

#: 26-connectivity structuring element (3×3×3 ones).
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Ranges of the template augmentation.

    Args:
        flip_prob: probability of flipping each axis.
        rot90: draw a random multiple of 90° in a random axis plane.
        max_angle_deg: small-angle rotation about each axis drawn from ±this (degrees).
        zoom_range: isotropic zoom factor range (paper: zoom; 0.7–1.3).
        anisotropy: per-axis zoom jitter, each axis multiplied by U(1 - a, 1 + a).
        elastic_range: elastic control displacement standard deviation, as a fraction of the
            template's largest extent after zoom (mild: ≤ 0.1).
        elastic_points: control points per axis of the elastic grid (≥ 2).
    """

    flip_prob: float = 0.5
    rot90: bool = True
    max_angle_deg: float = 15.0
    zoom_range: tuple[float, float] = (0.7, 1.3)
    anisotropy: float = 0.1
    elastic_range: tuple[float, float] = (0.0, 0.06)
    elastic_points: int = 4

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if not 0.0 <= self.max_angle_deg <= 45.0:
            raise ValueError(f"max_angle_deg must be in [0, 45], got {self.max_angle_deg}")
        lo, hi = self.zoom_range
        if not 0.1 <= lo <= hi <= 5.0:
            raise ValueError(f"zoom_range must satisfy 0.1 <= low <= high <= 5, got {self.zoom_range}")
        if not 0.0 <= self.anisotropy < 0.5:
            raise ValueError(f"anisotropy must be in [0, 0.5), got {self.anisotropy}")
        elo, ehi = self.elastic_range
        if not 0.0 <= elo <= ehi <= 0.2:
            raise ValueError(f"elastic_range must satisfy 0 <= low <= high <= 0.2, got {self.elastic_range}")
        if not 2 <= self.elastic_points <= 16:
            raise ValueError(f"elastic_points must be in [2, 16], got {self.elastic_points}")


@dataclass(frozen=True, kw_only=True)
class AugmentRecord:
    """Every number drawn for one augmentation; :func:`apply_augment` replays it exactly.

    Attributes:
        flips: flip axis 0, 1, 2.
        rot90_k: number of 90° turns (0–3) in the plane ``rot90_axes``.
        angles_deg: small rotation about axes 0, 1, 2 (degrees).
        zoom: zoom per axis (isotropic draw × anisotropy jitter).
        elastic_strength: control displacement std as a fraction of the largest zoomed extent.
        elastic_points: control points per axis.
        elastic_seed: seed of the control displacements (drawn from the caller's generator).
    """

    flips: tuple[bool, bool, bool] = (False, False, False)
    rot90_k: int = 0
    rot90_axes: tuple[int, int] = (0, 1)
    angles_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    zoom: tuple[float, float, float] = (1.0, 1.0, 1.0)
    elastic_strength: float = 0.0
    elastic_points: int = 4
    elastic_seed: int = 0

    def __post_init__(self) -> None:
        if self.rot90_k not in (0, 1, 2, 3):
            raise ValueError(f"rot90_k must be 0..3, got {self.rot90_k}")
        if len(set(self.rot90_axes)) != 2 or not set(self.rot90_axes) <= {0, 1, 2}:
            raise ValueError(f"rot90_axes must be two distinct axes of 0, 1, 2, got {self.rot90_axes}")
        if any(z <= 0 for z in self.zoom):
            raise ValueError(f"zoom must be positive, got {self.zoom}")
        if self.elastic_strength < 0:
            raise ValueError(f"elastic_strength must be >= 0, got {self.elastic_strength}")
        if self.elastic_points < 2:
            raise ValueError(f"elastic_points must be >= 2, got {self.elastic_points}")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentRecord:
        return config_from_dict(cls, data)


_PLANES = ((0, 1), (0, 2), (1, 2))


def draw_augment(rng: np.random.Generator, config: AugmentConfig | None = None) -> AugmentRecord:
    """Draw one :class:`AugmentRecord` from ``rng`` (the only source of randomness)."""
    config = config or AugmentConfig()
    flips = tuple(bool(f) for f in rng.random(3) < config.flip_prob)
    if config.rot90:
        k = int(rng.integers(0, 4))
        axes = _PLANES[int(rng.integers(0, 3))]
    else:
        k, axes = 0, (0, 1)
    angles = tuple(float(a) for a in rng.uniform(-config.max_angle_deg, config.max_angle_deg, size=3))
    base = float(rng.uniform(*config.zoom_range))
    jitter = rng.uniform(1.0 - config.anisotropy, 1.0 + config.anisotropy, size=3)
    zoom = tuple(float(base * j) for j in jitter)
    strength = float(rng.uniform(*config.elastic_range))
    seed = int(rng.integers(0, 2**31 - 1))
    return AugmentRecord(
        flips=flips,  # type: ignore[arg-type]
        rot90_k=k,
        rot90_axes=axes,
        angles_deg=angles,  # type: ignore[arg-type]
        zoom=zoom,  # type: ignore[arg-type]
        elastic_strength=strength,
        elastic_points=config.elastic_points,
        elastic_seed=seed,
    )


def _rotation_matrix(angles_deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@lru_cache(maxsize=256)
def spline_weights(n: int, points: int) -> np.ndarray:
    """(n, points) cubic cardinal-spline weights spreading ``points`` knots over ``n`` voxels (read-only)."""
    knots = np.linspace(0.0, max(n - 1, 1), points)
    w = natural_cubic_weights(knots, np.arange(n, dtype=np.float64))
    w.setflags(write=False)
    return w


def spline_field(
    shape: tuple[int, int, int], points: int | tuple[int, int, int], rng: np.random.Generator, *, channels: int = 1
) -> np.ndarray:
    """(channels, X, Y, Z) float32 smooth random field: standard-normal control values on a
    ``points`` grid, interpolated by cubic cardinal splines (values ~ N(0, 1) at the knots)."""
    pts = (points,) * 3 if isinstance(points, int) else tuple(points)
    grid = rng.standard_normal((channels, *pts))
    wx, wy, wz = (spline_weights(n, p) for n, p in zip(shape, pts, strict=True))
    return np.einsum("ia,jb,kc,dabc->dijk", wx, wy, wz, grid, optimize=True).astype(np.float32)


def _elastic_field(shape: tuple[int, int, int], record: AugmentRecord, sigma_vox: float) -> np.ndarray:
    """(3, X, Y, Z) smooth displacement in voxels (float32); zero when the strength is zero."""
    if sigma_vox <= 0:
        return np.zeros((3, *shape), dtype=np.float32)
    p = record.elastic_points
    grid = np.random.default_rng(record.elastic_seed).standard_normal((3, p, p, p)) * sigma_vox
    wx, wy, wz = (spline_weights(n, p) for n in shape)
    field = np.einsum("ia,jb,kc,dabc->dijk", wx, wy, wz, grid, optimize=True)
    return field.astype(np.float32)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of ``mask`` (bool, same shape); empty stays empty."""
    labels, n = ndimage.label(mask, structure=STRUCTURE_26)
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def close_mask(mask: np.ndarray) -> np.ndarray:
    """Fill interior holes and keep the largest component: a single closed 3D shape."""
    return largest_component(ndimage.binary_fill_holes(mask))


def crop_to_bbox(mask: np.ndarray, margin: int = 1) -> np.ndarray:
    """Crop ``mask`` to its bounding box padded by ``margin`` zero voxels on every side."""
    if not mask.any():
        raise ValueError("cannot crop an empty mask")
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    sl = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)
    return np.pad(mask[sl], margin)


def augment_coordinates(
    shape: tuple[int, ...], record: AugmentRecord, scale: float
) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray]:
    """The resampling of :func:`apply_augment` after its flips and turns, for an input of ``shape``.

    Rotation × (zoom · scale) about the centre, plus the elastic field, in an output box that holds the whole
    transformed input with room for the displacement.

    Returns:
        coords: (3, X', Y', Z') float32 input coordinates of every output voxel (for ``map_coordinates``);
        out_shape: (X', Y', Z'); out_centre: (3,) output centre in voxels.
    """
    zoom = np.asarray(record.zoom, dtype=np.float64) * scale
    forward = _rotation_matrix(record.angles_deg) @ np.diag(zoom)  # input offsets → output offsets
    inverse = np.linalg.inv(forward)
    in_shape = np.asarray(shape, dtype=np.float64)
    in_centre = (in_shape - 1.0) / 2.0
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)]) * (in_shape - 1.0) - in_centre
    extent = np.abs(corners @ forward.T).max(axis=0)
    sigma_vox = record.elastic_strength * float(2.0 * extent.max())
    pad = 2.0 + 3.0 * sigma_vox
    out_shape = tuple(int(np.ceil(2.0 * (e + pad))) + 1 for e in extent)
    out_centre = (np.asarray(out_shape, dtype=np.float64) - 1.0) / 2.0

    disp = _elastic_field(out_shape, record, sigma_vox)  # type: ignore[arg-type]
    offs = [np.arange(n, dtype=np.float32) - np.float32(c) for n, c in zip(out_shape, out_centre, strict=True)]
    grids = np.meshgrid(*offs, indexing="ij", sparse=True)
    pos = [grids[d] + disp[d] for d in range(3)]
    coords = np.empty((3, *out_shape), dtype=np.float32)
    for i in range(3):
        coords[i] = (inverse[i, 0] * pos[0] + inverse[i, 1] * pos[1] + inverse[i, 2] * pos[2]) + in_centre[i]
    return coords, out_shape, out_centre  # type: ignore[return-value]


def apply_augment(template: np.ndarray, record: AugmentRecord, *, scale: float = 1.0) -> np.ndarray:
    """Apply ``record`` (and an extra isotropic ``scale``) to a binary template.

    Args:
        template: (X, Y, Z) binary mask (any integer or bool dtype), non-empty.
        record: the drawn augmentation.
        scale: extra zoom multiplied into ``record.zoom`` (placement's size rule).

    Returns:
        (X', Y', Z') uint8 mask: one closed 26-connected component, cropped to its bounding
        box plus a one-voxel zero border. Deterministic in (template, record, scale).
    """
    if template.ndim != 3:
        raise ValueError(f"template must be 3D (X, Y, Z), got shape {template.shape}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    m = np.asarray(template) > 0
    if not m.any():
        raise ValueError("template mask is empty")
    m = crop_to_bbox(m, margin=1)
    for axis, flip in enumerate(record.flips):
        if flip:
            m = np.flip(m, axis=axis)
    if record.rot90_k:
        m = np.rot90(m, k=record.rot90_k, axes=record.rot90_axes)
    m = np.ascontiguousarray(m, dtype=np.float32)
    coords, out_shape, out_centre = augment_coordinates(m.shape, record, scale)
    warped = ndimage.map_coordinates(m, coords, order=1, mode="constant", cval=0.0, prefilter=False) >= 0.5
    out = close_mask(warped)
    if not out.any():
        # a one-voxel template can fall between samples: keep the voxel nearest the centre
        out = np.zeros(out_shape, dtype=bool)
        out[tuple(int(round(c)) for c in out_centre)] = True
    return crop_to_bbox(out, margin=1).astype(np.uint8)
