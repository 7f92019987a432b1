"""Where a synthetic tumor goes (paper Sec. 2.3, Fig. 3).

A template is drawn from the :class:`~synbt_factory.synthesis.bank.TumorBank`, scaled to the
background's breast size, and centred on a fibroglandular-tissue voxel. A placement is
accepted only if at least ``min_in_breast`` of its voxels lie in the breast, none lies
outside the body or in the chest wall, none is closer than ``overlap_margin_mm`` to a tumor
already in the case, and it fits in the volume. Bounded retries, then :class:`PlacementError`
naming how the tries failed.

The random and deterministic halves are separate: :func:`sample_placement` returns a
:class:`PlacementRecord` holding every drawn number, and :func:`apply_placement` rebuilds
the identical mask from the record and the bank alone.

Anatomical masks (RAS+ index order: axis 1 grows anterior):

* body: smoothed max(pre, post) above a threshold, holes filled in every axial slice (one 3-D pass with
  in-slice connectivity), large components kept (:func:`body_mask`);
* chest wall: body voxels that are not breast and lie posterior to the breast's posterior
  surface in their (x, z) column (columns without breast use the slice's most posterior
  breast surface; slices without breast are all chest wall) (:func:`chest_wall_mask`);
* breast (fallback when no breast mask is given): body voxels anterior to the sternum's
  anterior surface in each axial slice (:func:`intensity_breast_mask`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from synbt_factory.config import config_from_dict, config_to_dict
from synbt_factory.synthesis.bank import BREAST_SOURCES, TemplateRecord, TumorBank, breast_size_mm

__all__ = [
    "PlacementConfig",
    "PlacementContext",
    "PlacementRecord",
    "PlacementError",
    "body_mask",
    "chest_wall_mask",
    "intensity_breast_mask",
    "sample_placement",
    "place_tumor",
    "apply_placement",
    "paste",
    "PlacementAnatomy",
    "ANATOMY_FIELDS",
    "placement_figure",
    "dilate_mm",
]

log = logging.getLogger(__name__)


#: voxels a given breast mask may reach posterior to the intensity-derived breast region
ANATOMICAL_MARGIN_VOXELS = 6


class PlacementError(RuntimeError):
    """No acceptable placement was found within the allowed tries (the message says why)."""


@dataclass(frozen=True, kw_only=True)
class PlacementConfig:
    """Placement rules.

    Args:
        min_in_breast: minimum fraction of tumor voxels inside the breast mask (paper: tumor
            inside breast tissue; 0.8).
        overlap_margin_mm: minimum distance to a tumor already in the case.
        max_templates: templates drawn before giving up.
        min_template_voxels: only bank templates of at least this many voxels (mm³ at the prepared 1 mm
            spacing) are drawn, and a drawn template that zoom and the size rule shrink below it is drawn
            again. The bank keeps every component of a mask, and satellites (median 22 voxels on the phantom)
            placed alone become specks smaller than any real tumor mask (the smallest of the phantom's has
            69); 1 draws them all.
        centres_per_template: centres tried per drawn template.
        size_relative: scale by (background breast size / source breast size) when both are known and
            were measured on the same kind of breast mask (both the tissue model's, or both labels).
        scale_range: clip of that relative scale.
        size_spread: (low, high) extra scale factor, drawn log-uniformly per template after the relative
            scale and before the diameter cap: synthetic tumors smaller and larger than the bank's (the bank
            holds a few dozen real tumors; a test site's may be larger). ``(1, 1)`` (default) draws nothing,
            so placements are exactly those of earlier releases.
        max_diameter_fraction: cap of the tumor's equivalent diameter as a fraction of the
            background's breast size (cube root of one breast's volume). Real phantom tumors reach 0.58
            of the tissue model's breast size (p75 0.44), so a lower cap shrinks the largest templates.
        body_threshold: normalised intensity separating body from air (pre ≈ 0..1).
        centre_erosion_mm: the fibroglandular centre region is eroded by this much first
            (kept un-eroded if erosion would empty it).
        edge_margin_mm: centres lie at least this far inside the breast mask (off the skin and
            the chest wall); relaxed to half, then zero, if no FGT voxel is that deep.
        anterior_axis / anterior_sign: index axis and direction pointing anterior (RAS: 1, +1).
    """

    min_in_breast: float = 0.8
    overlap_margin_mm: float = 5.0
    max_templates: int = 12
    min_template_voxels: int = 50
    centres_per_template: int = 12
    size_relative: bool = True
    scale_range: tuple[float, float] = (0.75, 1.33)
    size_spread: tuple[float, float] = (1.0, 1.0)
    max_diameter_fraction: float = 0.6
    body_threshold: float = 0.08
    centre_erosion_mm: float = 1.0
    edge_margin_mm: float = 4.0
    anterior_axis: int = 1
    anterior_sign: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.min_in_breast <= 1.0:
            raise ValueError(f"min_in_breast must be in (0, 1], got {self.min_in_breast}")
        if self.overlap_margin_mm < 0:
            raise ValueError(f"overlap_margin_mm must be >= 0, got {self.overlap_margin_mm}")
        if self.min_template_voxels < 1:
            raise ValueError(f"min_template_voxels must be >= 1, got {self.min_template_voxels}")
        if self.max_templates < 1:
            raise ValueError(f"max_templates must be >= 1, got {self.max_templates}")
        if self.centres_per_template < 1:
            raise ValueError(f"centres_per_template must be >= 1, got {self.centres_per_template}")
        lo, hi = self.scale_range
        if not 0.1 <= lo <= 1.0 <= hi <= 10.0:
            raise ValueError(f"scale_range must satisfy 0.1 <= low <= 1 <= high <= 10, got {self.scale_range}")
        slo, shi = self.size_spread
        if not 0.25 <= slo <= shi <= 4.0:
            raise ValueError(f"size_spread must satisfy 0.25 <= low <= high <= 4, got {self.size_spread}")
        if not 0.05 <= self.max_diameter_fraction <= 2.0:
            raise ValueError(f"max_diameter_fraction must be in [0.05, 2], got {self.max_diameter_fraction}")
        if not 0.0 < self.body_threshold < 1.0:
            raise ValueError(f"body_threshold must be in (0, 1), got {self.body_threshold}")
        if self.centre_erosion_mm < 0:
            raise ValueError(f"centre_erosion_mm must be >= 0, got {self.centre_erosion_mm}")
        if self.edge_margin_mm < 0:
            raise ValueError(f"edge_margin_mm must be >= 0, got {self.edge_margin_mm}")
        if self.anterior_axis not in (0, 1, 2):
            raise ValueError(f"anterior_axis must be 0, 1 or 2, got {self.anterior_axis}")
        if self.anterior_sign not in (-1, 1):
            raise ValueError(f"anterior_sign must be -1 or 1, got {self.anterior_sign}")


@dataclass(frozen=True, kw_only=True)
class PlacementRecord:
    """Every drawn number of one placement; :func:`apply_placement` replays it.

    Attributes:
        template: the drawn template, augmentation and scale.
        offset: voxel where the rendered template's (0, 0, 0) lands in the volume.
        centre: the centre voxel drawn.
        volume_shape: (X, Y, Z) of the background.
        tries: centres tried until acceptance.
        centre_region: ``"fgt"`` or ``"breast"`` (fallback when the case has no usable FGT).
        in_breast_fraction / in_fgt_fraction: measured at acceptance.
        voxels: tumor voxels.
        size_capped: whether the template was shrunk to ``max_diameter_fraction`` of the background's breast
            size (when most are, the breast masks are likely too small: see the generate placement summary).
        breast_size_mm: the background's breast size the scale and the cap used (None: unknown).
    """

    template: TemplateRecord
    offset: tuple[int, int, int]
    centre: tuple[int, int, int]
    volume_shape: tuple[int, int, int]
    tries: int = 1
    centre_region: str = "fgt"
    in_breast_fraction: float = 1.0
    in_fgt_fraction: float = 0.0
    voxels: int = 0
    size_capped: bool = False
    breast_size_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlacementRecord:
        return config_from_dict(cls, data)


# ----------------------------------------------------------------------------- anatomy
#: 4-connectivity within an axial slice and none across slices: filling holes with it fills each axial slice's
#: holes as a 2-D fill of that slice would, in one 3-D pass
_AXIAL_CROSS = np.zeros((3, 3, 3), dtype=bool)
_AXIAL_CROSS[:, :, 1] = ndimage.generate_binary_structure(2, 1)


def body_mask(image: np.ndarray, *, threshold: float = 0.08, sigma: float = 1.5) -> np.ndarray:
    """Body mask (X, Y, Z) bool from a (2, X, Y, Z) normalised pre/post image.

    Voxels where both max(pre, post) and its Gaussian-smoothed version (``sigma`` voxels, against
    noise) exceed ``threshold``; holes filled in every axial slice (z = last axis) and in 3D;
    components under 5 % of the largest dropped.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (C, X, Y, Z), got {image.shape}")
    signal = np.max(np.asarray(image, dtype=np.float32), axis=0)
    body = (ndimage.gaussian_filter(signal, sigma) > threshold) & (signal > threshold)  # smoothing never grows it
    body = ndimage.binary_fill_holes(body, structure=_AXIAL_CROSS)  # every axial slice at once
    body = ndimage.binary_fill_holes(body)
    labels, n = ndimage.label(body)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        body = sizes[labels] >= 0.05 * sizes.max()
    return body


def _to_ras_y(arr: np.ndarray, axis: int, sign: int) -> np.ndarray:
    """View with the anterior axis moved to position 1 and pointing to +index."""
    out = np.moveaxis(arr, axis, 1)
    return out[:, ::-1] if sign < 0 else out


def _from_ras_y(arr: np.ndarray, axis: int, sign: int) -> np.ndarray:
    out = arr[:, ::-1] if sign < 0 else arr
    return np.moveaxis(out, 1, axis)


def chest_wall_mask(
    body: np.ndarray, breast: np.ndarray, *, anterior_axis: int = 1, anterior_sign: int = 1
) -> np.ndarray:
    """Body voxels posterior to the breast's posterior surface (X, Y, Z) bool; see module doc."""
    b = _to_ras_y(np.asarray(breast, dtype=bool), anterior_axis, anterior_sign)
    body_r = _to_ras_y(np.asarray(body, dtype=bool), anterior_axis, anterior_sign)
    ny = b.shape[1]
    has = b.any(axis=1)  # (X, Z)
    first = np.where(has, np.argmax(b, axis=1), ny)  # posterior-most breast voxel per column
    slice_min = np.where(has.any(axis=0), np.where(has, first, ny).min(axis=0), ny)  # (Z,)
    surface = np.where(has, first, slice_min[None, :])  # (X, Z)
    ys = np.arange(ny)[None, :, None]
    wall = body_r & ~b & (ys < surface[:, None, :])
    return np.ascontiguousarray(_from_ras_y(wall, anterior_axis, anterior_sign))


def intensity_breast_mask(body: np.ndarray, *, anterior_axis: int = 1, anterior_sign: int = 1) -> np.ndarray:
    """Fallback breast mask from a body mask: body anterior to the sternum line of each slice.

    Per axial slice, the body's anterior surface is found per x column; the sternum line is
    its most posterior point over the central third of the body's left–right extent (the
    cleavage between the breasts). Everything anterior to it is breast.
    """
    body_r = _to_ras_y(np.asarray(body, dtype=bool), anterior_axis, anterior_sign)
    nx, ny, _ = body_r.shape
    has = body_r.any(axis=1)  # (X, Z): x columns holding body, per slice
    lo = np.argmax(has, axis=0)  # (Z,) first and last such column
    hi = nx - 1 - np.argmax(has[::-1], axis=0)
    third = np.maximum(1, (hi - lo) // 3)
    xs = np.arange(nx)[:, None]
    mid = has & (xs >= lo + third) & (xs <= hi - third)  # (X, Z): the central third's columns holding body
    front = ny - 1 - np.argmax(body_r[:, ::-1, :], axis=1)  # (X, Z): anterior-most body voxel per column
    cut = np.where(mid, front, ny).min(axis=0)  # (Z,) the sternum line of each slice
    valid = (has.sum(axis=0) >= 3) & mid.any(axis=0)
    out = body_r & (np.arange(ny)[None, :, None] > cut[None, None, :]) & valid[None, None, :]
    return np.ascontiguousarray(_from_ras_y(out, anterior_axis, anterior_sign))


def dilate_mm(mask: np.ndarray, margin: float) -> np.ndarray:
    """``mask`` dilated by a Euclidean ``margin`` (voxels = mm at 1 mm), computed on its bbox only."""
    if not mask.any() or margin <= 0:
        return mask.copy()
    pad = int(np.ceil(margin)) + 1
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    box = tuple(
        slice(max(0, int(i[0]) - pad), min(d, int(i[-1]) + 1 + pad)) for i, d in zip(idx, mask.shape, strict=True)
    )
    dist = ndimage.distance_transform_edt(~mask[box])
    out = np.zeros_like(mask)
    out[box] = dist <= margin
    return out


def _depth_inside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (voxels) of each mask voxel to the nearest outside voxel; 0 outside."""
    out = np.zeros(mask.shape, dtype=np.float32)
    if not mask.any():
        return out
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    box = tuple(slice(max(0, int(i[0]) - 1), min(d, int(i[-1]) + 2)) for i, d in zip(idx, mask.shape, strict=True))
    out[box] = ndimage.distance_transform_edt(mask[box])
    return out


#: PlacementConfig fields the anatomy of a context depends on (the rest only choose centres and sizes)
ANATOMY_FIELDS = ("body_threshold", "anterior_axis", "anterior_sign", "overlap_margin_mm")


@dataclass
class PlacementAnatomy:
    """The background-only, costly half of a placement context: hole fills and distance transforms.

    It depends on the background's image, tumor mask and breast mask and on :data:`ANATOMY_FIELDS` of the
    config alone, so it can be computed once per background and stored
    (:mod:`synbt_factory.synthesis.background_context`).

    Attributes:
        breast: (X, Y, Z) bool breast mask inside the body (a given mask trimmed to the anatomical prior).
        forbidden: (X, Y, Z) bool, outside the body ∪ chest wall.
        avoid: (X, Y, Z) bool, existing tumors dilated by ``overlap_margin_mm``.
        depth: (X, Y, Z) float32 Euclidean distance (voxels) of each breast voxel to the breast's outside.
        breast_size_mm: cube root of one breast's volume on the breast mask as given (None if empty).
        breast_given: whether a breast mask was given (else it was derived from intensity).
    """

    breast: np.ndarray
    forbidden: np.ndarray
    avoid: np.ndarray
    depth: np.ndarray
    breast_size_mm: float | None
    breast_given: bool

    @classmethod
    def build(
        cls,
        image: np.ndarray,
        *,
        mask: np.ndarray | None = None,
        breast: np.ndarray | None = None,
        body: np.ndarray | None = None,
        config: PlacementConfig | None = None,
    ) -> PlacementAnatomy:
        """Body, breast, chest wall, the existing tumors' margin and the depth map of one background.

        Args:
            image: (2, X, Y, Z) normalised pre/post image.
            mask: (X, Y, Z) existing tumor mask (None or empty for a healthy background).
            breast: (X, Y, Z) breast mask; None → :func:`intensity_breast_mask`.
            body: (X, Y, Z) body mask; None → :func:`body_mask` of ``image``.
            config: placement rules (only :data:`ANATOMY_FIELDS` matter).

        Raises:
            PlacementError: if the case has no breast voxel to place a tumor in.
        """
        config = config or PlacementConfig()
        shape = tuple(int(s) for s in image.shape[1:])
        if body is None:
            body = body_mask(image, threshold=config.body_threshold)
        body = np.asarray(body, dtype=bool)
        given = breast is not None and bool(np.any(breast))
        if not given:
            breast = intensity_breast_mask(body, anterior_axis=config.anterior_axis, anterior_sign=config.anterior_sign)
        # Sized on the mask as given, as the bank sizes its templates' source breasts; the anatomical trim
        # below makes it ~5 % smaller per axis, which shrank every placed tumor by ~15 % in volume.
        size_mm = breast_size_mm(breast)
        if given:
            # Anatomical prior: a given (e.g. predicted) breast mask may only extend a little posterior to
            # the sternum line, so a poor tissue model can never send tumors into the heart or lungs.
            anatomical = intensity_breast_mask(
                body, anterior_axis=config.anterior_axis, anterior_sign=config.anterior_sign
            )
            if anatomical.any():
                breast = np.asarray(breast, dtype=bool) & ndimage.binary_dilation(
                    anatomical, iterations=ANATOMICAL_MARGIN_VOXELS
                )
        breast = np.asarray(breast, dtype=bool) & body
        if not breast.any():
            raise PlacementError("the background has no breast voxel inside the body; check its breast mask / image")
        wall = chest_wall_mask(body, breast, anterior_axis=config.anterior_axis, anterior_sign=config.anterior_sign)
        existing = np.zeros(shape, bool) if mask is None else np.asarray(mask) > 0
        return cls(
            breast=breast,
            forbidden=~body | wall,
            avoid=dilate_mm(existing, config.overlap_margin_mm),
            depth=_depth_inside(breast),
            breast_size_mm=size_mm,
            breast_given=given,
        )


@dataclass
class PlacementContext:
    """Per-background masks, computed once and reused for many placements.

    Attributes:
        shape: (X, Y, Z).
        breast / fgt / forbidden / avoid: bool masks; ``forbidden`` = outside body ∪ chest
            wall; ``avoid`` = existing tumors dilated by the overlap margin.
        centres: flat indices of candidate centre voxels.
        centre_region: ``"fgt"`` or ``"breast"``.
        breast_size_mm: cube root of one breast's volume, measured on the breast mask as given (before the
            anatomical trim), as the bank measures its templates' source breasts (None if empty).
    """

    shape: tuple[int, int, int]
    breast: np.ndarray
    fgt: np.ndarray
    forbidden: np.ndarray
    avoid: np.ndarray
    centres: np.ndarray
    centre_region: str
    breast_size_mm: float | None
    notes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        image: np.ndarray,
        *,
        mask: np.ndarray | None = None,
        fgt: np.ndarray | None = None,
        breast: np.ndarray | None = None,
        body: np.ndarray | None = None,
        config: PlacementConfig | None = None,
    ) -> PlacementContext:
        """Derive the placement masks of one background (:meth:`PlacementAnatomy.build`, then
        :meth:`from_anatomy`).

        Args:
            image: (2, X, Y, Z) normalised pre/post image.
            mask: (X, Y, Z) existing tumor mask (None or empty for a healthy background).
            fgt: (X, Y, Z) fibroglandular tissue mask (e.g. the tissue model's ``tissue_pred``).
            breast: (X, Y, Z) breast mask; None → :func:`intensity_breast_mask`.
            body: (X, Y, Z) body mask; None → :func:`body_mask` of ``image``.
            config: placement rules.

        Raises:
            PlacementError: if the case has no breast voxel to place a tumor in.
        """
        config = config or PlacementConfig()
        anatomy = PlacementAnatomy.build(image, mask=mask, breast=breast, body=body, config=config)
        return cls.from_anatomy(anatomy, fgt=fgt, config=config)

    @classmethod
    def from_anatomy(
        cls, anatomy: PlacementAnatomy, *, fgt: np.ndarray | None = None, config: PlacementConfig | None = None
    ) -> PlacementContext:
        """The candidate centres: FGT voxels deep enough inside the breast, else breast voxels.

        Args:
            anatomy: the background's anatomy (built now or read from the prepared store).
            fgt: (X, Y, Z) fibroglandular tissue mask, or None.
            config: placement rules.

        Raises:
            PlacementError: when every breast voxel is forbidden or next to the existing tumor.
        """
        config = config or PlacementConfig()
        breast, depth = anatomy.breast, anatomy.depth
        shape = tuple(int(s) for s in breast.shape)
        fgt_b = np.zeros(shape, bool) if fgt is None else (np.asarray(fgt) > 0)
        fgt_b &= breast
        allowed = ~anatomy.forbidden & ~anatomy.avoid
        region, name = np.zeros(shape, bool), "fgt"
        fgt_allowed = fgt_b & allowed
        if config.centre_erosion_mm > 0 and fgt_allowed.any():
            eroded = ndimage.binary_erosion(fgt_allowed, iterations=int(round(config.centre_erosion_mm)))
            if eroded.any():
                fgt_allowed = eroded
        for margin in (config.edge_margin_mm, config.edge_margin_mm / 2, 0.0):
            region = fgt_allowed & (depth > margin)
            if region.any():
                break
        if not region.any():
            name = "breast"
            for margin in (max(config.edge_margin_mm, 3.0), 0.0):
                region = breast & allowed & (depth > margin)
                if region.any():
                    break
            log.debug("no usable fibroglandular voxel: centres drawn in the breast")
        if not region.any():
            raise PlacementError("no candidate centre: every breast voxel is forbidden or next to the existing tumor")
        return cls(
            shape=shape,  # type: ignore[arg-type]
            breast=breast,
            fgt=fgt_b,
            forbidden=anatomy.forbidden,
            avoid=anatomy.avoid,
            centres=np.flatnonzero(region),
            centre_region=name,
            breast_size_mm=anatomy.breast_size_mm,
            notes={"breast_source": "given" if anatomy.breast_given else "intensity"},
        )


# ----------------------------------------------------------------------------- sampling
def _draw_spread(rng: np.random.Generator, spread: tuple[float, float]) -> float:
    """Log-uniform factor in ``spread``; no draw (the stream stays as without it) when the range is one value."""
    lo, hi = float(spread[0]), float(spread[1])
    if hi <= lo:
        return lo
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _scale_for(
    bank: TumorBank, record: TemplateRecord, ctx: PlacementContext, config: PlacementConfig, *, spread: float = 1.0
) -> tuple[float, bool]:
    """(template scale, whether the cap bound): background/source breast size (clipped to ``scale_range``) ×
    ``spread``, then capped so the equivalent diameter stays under ``max_diameter_fraction`` of the background's
    breast size."""
    meta = bank.meta(record.template_id)
    scale = 1.0
    background_source = ctx.notes.get("breast_source")
    comparable = (
        meta.breast_source is None
        or background_source not in BREAST_SOURCES
        or (meta.breast_source == background_source)
    )
    if not comparable:
        log.debug(
            "template %s: breast size from %s, background's from %s: not compared",
            record.template_id,
            meta.breast_source,
            background_source,
        )
    if config.size_relative and comparable and meta.breast_size_mm and ctx.breast_size_mm:
        scale = float(np.clip(ctx.breast_size_mm / meta.breast_size_mm, *config.scale_range))
    scale *= spread
    if ctx.breast_size_mm:
        zoom = float(np.prod(record.augment.zoom) ** (1.0 / 3.0))
        diameter = meta.equivalent_diameter_mm * zoom * scale
        cap = config.max_diameter_fraction * ctx.breast_size_mm
        if diameter > cap:
            return scale * cap / diameter, True
    return scale, False


def _check(
    tumor: np.ndarray, offset: np.ndarray, ctx: PlacementContext, config: PlacementConfig
) -> tuple[str | None, float, float]:
    """Rejection reason (None = accepted), in-breast fraction, in-FGT fraction."""
    end = offset + np.asarray(tumor.shape)
    if (offset < 0).any() or (end > np.asarray(ctx.shape)).any():
        return "leaves the volume", 0.0, 0.0
    box = tuple(slice(int(a), int(b)) for a, b in zip(offset, end, strict=True))
    if (ctx.forbidden[box] & tumor).any():
        return "outside the body or in the chest wall", 0.0, 0.0
    if (ctx.avoid[box] & tumor).any():
        return "too close to the existing tumor", 0.0, 0.0
    n = int(tumor.sum())
    in_breast = int((ctx.breast[box] & tumor).sum()) / n
    if in_breast < config.min_in_breast:
        return f"less than {config.min_in_breast:.0%} inside the breast", in_breast, 0.0
    in_fgt = int((ctx.fgt[box] & tumor).sum()) / n
    return None, in_breast, in_fgt


def place_tumor(
    rng: np.random.Generator,
    bank: TumorBank,
    ctx: PlacementContext,
    config: PlacementConfig | None = None,
) -> tuple[np.ndarray, PlacementRecord]:
    """Draw placements until one is accepted.

    Returns:
        (mask (X, Y, Z) uint8 of the new tumor, record); ``apply_placement(record, bank, shape)``
        gives the same mask.

    Raises:
        PlacementError: after ``max_templates × centres_per_template`` rejected tries, with
        the count of each rejection reason.
    """
    config = config or PlacementConfig()
    reasons: Counter[str] = Counter()
    tries = 0
    for _ in range(config.max_templates):
        record = bank.draw(rng, min_voxels=config.min_template_voxels)
        spread = _draw_spread(rng, config.size_spread)
        scale, capped = _scale_for(bank, record, ctx, config, spread=spread)
        record = TemplateRecord(template_id=record.template_id, augment=record.augment, scale=scale)
        tumor = bank.render(record).astype(bool)
        if tumor.sum() < config.min_template_voxels:
            reasons[f"under {config.min_template_voxels} voxels once zoomed and scaled"] += 1
            continue
        half = np.asarray(tumor.shape) // 2
        for _ in range(config.centres_per_template):
            tries += 1
            flat = int(ctx.centres[int(rng.integers(0, ctx.centres.size))])
            centre = np.asarray(np.unravel_index(flat, ctx.shape))
            offset = centre - half
            reason, in_breast, in_fgt = _check(tumor, offset, ctx, config)
            if reason is None:
                placed = PlacementRecord(
                    template=record,
                    offset=tuple(int(o) for o in offset),  # type: ignore[arg-type]
                    centre=tuple(int(c) for c in centre),  # type: ignore[arg-type]
                    volume_shape=ctx.shape,
                    tries=tries,
                    centre_region=ctx.centre_region,
                    in_breast_fraction=float(in_breast),
                    in_fgt_fraction=float(in_fgt),
                    voxels=int(tumor.sum()),
                    size_capped=capped,
                    breast_size_mm=ctx.breast_size_mm,
                )
                return paste(tumor, placed.offset, ctx.shape), placed
            reasons[reason] += 1
    detail = ", ".join(f"{n}× {r}" for r, n in reasons.most_common())
    raise PlacementError(
        f"no acceptable placement in {tries} tries ({detail}); the breast may be too small or "
        "the FGT region too close to the skin/chest wall: check the case's breast and FGT masks "
        "(synbt store preview), or lower PlacementConfig.min_in_breast"
    )


def sample_placement(
    rng: np.random.Generator,
    bank: TumorBank,
    ctx: PlacementContext,
    config: PlacementConfig | None = None,
) -> PlacementRecord:
    """The record of an accepted placement (see :func:`place_tumor`)."""
    return place_tumor(rng, bank, ctx, config)[1]


def paste(tumor: np.ndarray, offset: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    """A (X, Y, Z) uint8 volume with ``tumor`` written at ``offset`` (must fit)."""
    out = np.zeros(shape, dtype=np.uint8)
    end = [o + s for o, s in zip(offset, tumor.shape, strict=True)]
    if any(o < 0 for o in offset) or any(e > d for e, d in zip(end, shape, strict=True)):
        raise ValueError(f"tumor of shape {tumor.shape} at {offset} does not fit in {shape}")
    out[tuple(slice(o, e) for o, e in zip(offset, end, strict=True))] = tumor > 0
    return out


def apply_placement(record: PlacementRecord, bank: TumorBank, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Replay ``record``: the identical (X, Y, Z) uint8 tumor mask, from the bank alone."""
    shape = tuple(shape) if shape is not None else record.volume_shape  # type: ignore[assignment]
    return paste(bank.render(record.template), record.offset, shape)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- figure
def placement_figure(rows: list[dict[str, Any]], path: Any, *, title: str | None = None) -> Any:
    """PNG of placements: one row per case, axial, coronal and sagittal slices through the new tumor's centre.

    Each row dict holds ``title``, ``image`` (2, X, Y, Z), ``breast``, ``fgt``, ``mask`` (real
    tumor, may be empty) and ``new`` (placed tumor). Post-contrast in grey, FGT in green,
    breast outline yellow, real tumor red, placed tumor cyan; slices in the display convention of
    :mod:`synbt_factory.figures`, cropped to the image's non-zero extent.

    Returns:
        The path written.
    """
    from matplotlib.colors import ListedColormap

    from synbt_factory.figures import (
        AXIAL,
        BREAST,
        CORONAL,
        FGT_RGBA,
        SAGITTAL,
        SYNTHETIC,
        TUMOR,
        body_box,
        draw_outline,
        hide_ticks,
        new_figure,
        save_figure,
        section,
    )

    if not rows:
        raise ValueError("no placements to draw")
    fig, axes = new_figure(len(rows), 3, figsize=(10, 3.3 * len(rows)))
    green = ListedColormap([(0, 0, 0, 0), FGT_RGBA])
    for ax_row, row in zip(axes, rows, strict=True):
        new = np.asarray(row["new"]) > 0
        c = np.argwhere(new).mean(axis=0).round().astype(int) if new.any() else np.asarray(new.shape) // 2
        post = np.asarray(row["image"][1], dtype=np.float32)
        box = body_box(row["image"])
        vmax = float(np.percentile(post, 99.8)) or 1.0
        views = [("axial", AXIAL), ("coronal", CORONAL), ("sagittal", SAGITTAL)]
        for ax, (name, axis) in zip(ax_row, views, strict=True):

            def cut(v: Any, axis: int = axis, index: int = int(c[axis]), box: Any = box) -> np.ndarray:
                return section(np.asarray(v), axis, index, box)

            ax.imshow(cut(post), cmap="gray", vmin=0, vmax=vmax)
            ax.imshow(
                cut(np.asarray(row["fgt"]) > 0).astype(np.uint8), cmap=green, vmin=0, vmax=1, interpolation="nearest"
            )
            for m, colour in ((row["breast"], BREAST), (row.get("mask"), TUMOR), (new, SYNTHETIC)):
                if m is not None:
                    draw_outline(ax, cut(np.asarray(m) > 0), colour)
            hide_ticks(ax)
            ax.set_title(f"{row['title']} — {name}" if name == "axial" else name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
