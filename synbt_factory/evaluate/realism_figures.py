"""Per-case realism figures of a tumor: enhancement, contrast, footprint on its background, shape and place.

All functions take numpy arrays of one case (``image`` (2, X, Y, Z): pre, post; masks (X, Y, Z), nonzero =
tumor) and the voxel spacing in mm; distances are Euclidean, in mm
(:func:`scipy.ndimage.distance_transform_edt`). :mod:`synbt_factory.evaluate.realism` aggregates them over
stores.

- **Enhancement**: :func:`post_over_pre`, the mean post-contrast over the mean pre-contrast intensity inside
  the mask.
- **Contrast** (:func:`tumor_contrast`): the tumor against a shell around it (``shell_mm``), split into
  fibroglandular tissue (FGT) and fat (breast voxels that are neither FGT, vessel nor tumor); on post as a
  ratio, on the subtraction (post − pre) as a difference (subtraction of fat is ≈ 0, so a ratio would be
  unstable).
- **Footprint** (:func:`footprint`): what a synthesis changed against the background it was drawn on. A
  voxel is changed when any channel differs at all (stores are float16, and voxels beyond the sampler's
  margin are copied, so unchanged voxels compare exactly equal).
- **Shape and place** (:func:`shape_figures`): volume, elongation (ratio of the longest to the shortest
  principal axis), sphericity, the fraction inside the breast and inside FGT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "CHANGE_THRESHOLD",
    "FAR_MM",
    "Footprint",
    "SHELLS_MM",
    "SIZE_BINS",
    "by_size",
    "footprint",
    "post_over_pre",
    "shape_figures",
    "summary",
    "tumor_contrast",
]

#: Distance shells (mm) of the footprint's mean |Δ|: (lo, hi] mm from the mask; the last one is open.
SHELLS_MM: tuple[tuple[float, float], ...] = ((0, 1), (1, 2), (2, 3), (3, 5), (5, 10), (10, math.inf))
#: |Δ| above which a voxel counts in the "far changed" figure (intensity units of the prepared store).
CHANGE_THRESHOLD = 0.02
#: "Far" from the mask: more than this many mm.
FAR_MM = 3.0
#: Mask-size bins (voxels) for size-matched comparisons: small tumors enhance less after the autoencoder's blur.
SIZE_BINS = (0, 60, 150, 400)


def _bbox(mask: np.ndarray, pad: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    return tuple(slice(max(int(a) - p, 0), min(int(b) + p, s)) for a, b, p, s in zip(lo, hi, pad, shape, strict=True))


def _distance_near(mask: np.ndarray, spacing: Sequence[float], reach_mm: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """Distance (mm) to ``mask`` on its bounding box grown by more than ``reach_mm``; every voxel outside that
    box is farther than ``reach_mm`` from the mask."""
    pad = [int(math.floor(reach_mm / s)) + 1 for s in spacing]
    box = _bbox(mask, pad, mask.shape)
    return box, ndimage.distance_transform_edt(~mask[box], sampling=tuple(spacing))


def post_over_pre(image: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean post- over mean pre-contrast intensity inside ``mask``; None for an empty mask or pre ≈ 0."""
    inside = np.asarray(mask) > 0
    if not inside.any():
        return None
    pre = float(np.asarray(image[0], dtype=np.float64)[inside].mean())
    post = float(np.asarray(image[1], dtype=np.float64)[inside].mean())
    if pre <= 1e-6:
        return None
    return post / pre


def tumor_contrast(
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    *,
    fgt: np.ndarray | None = None,
    breast: np.ndarray | None = None,
    other_tumor: np.ndarray | None = None,
    vessel: np.ndarray | None = None,
    shell_mm: tuple[float, float] = (1.0, 5.0),
) -> dict[str, float | None]:
    """Tumor against the FGT and the fat of the shell ``shell_mm`` (lo, hi] around it.

    Args:
        image: (2, X, Y, Z) pre, post.
        mask: the tumor.
        spacing: voxel spacing (mm).
        fgt: FGT mask; without it the shell is split no further (``*_surround`` only).
        breast: breast mask; fat = breast ∖ (FGT ∪ vessel ∪ tumors). Without it the shell is not restricted.
        other_tumor: other tumors of the case (left out of the shell).
        vessel: vessels (left out of the fat).
        shell_mm: inner and outer distance of the shell.

    Returns:
        ``post_vs_{fgt,fat,surround}`` (tumor mean post ÷ shell mean post) and
        ``sub_vs_{fgt,fat,surround}`` (tumor mean subtraction − shell mean subtraction); None where the
        shell part is empty.
    """
    inside = np.asarray(mask) > 0
    keys = [f"{k}_vs_{part}" for k in ("post", "sub") for part in ("fgt", "fat", "surround")]
    out: dict[str, float | None] = dict.fromkeys(keys)
    if not inside.any():
        return out
    box, dist = _distance_near(inside, spacing, shell_mm[1])
    shell = (dist > shell_mm[0]) & (dist <= shell_mm[1])
    if other_tumor is not None:
        shell &= ~(np.asarray(other_tumor)[box] > 0)
    if breast is not None:
        shell &= np.asarray(breast)[box] > 0
    post = np.asarray(image[1], dtype=np.float64)[box]
    sub = post - np.asarray(image[0], dtype=np.float64)[box]
    t_post, t_sub = float(post[inside[box]].mean()), float(sub[inside[box]].mean())
    parts = {"surround": shell}
    if fgt is not None:
        f = np.asarray(fgt)[box] > 0
        parts["fgt"] = shell & f
        fat = shell & ~f
        if vessel is not None:
            fat &= ~(np.asarray(vessel)[box] > 0)
        parts["fat"] = fat if breast is not None else np.zeros_like(fat)
    for part, region in parts.items():
        if region.any():
            ref_post = float(post[region].mean())
            out[f"post_vs_{part}"] = t_post / ref_post if ref_post > 1e-6 else None
            out[f"sub_vs_{part}"] = t_sub - float(sub[region].mean())
    return out


@dataclass(frozen=True)
class Footprint:
    """What a synthesis changed against its background (see :func:`footprint`).

    Attributes:
        mask_voxels: voxels of the synthetic mask.
        changed_inside: mask voxels that differ from the background in any channel.
        changed_outside: voxels outside the mask that differ in any channel.
        changed_outside_over_mask: ``changed_outside / mask_voxels``.
        outside_over_inside: sum |Δ| outside the mask ÷ sum |Δ| inside (both channels); ``inf`` when nothing
            changed inside but something outside, 0 when nothing changed at all.
        far_changed: voxels farther than ``far_mm`` from the mask with |Δ| > ``threshold`` in some channel.
        far_changed_over_mask: ``far_changed / mask_voxels``.
        mean_abs_delta_inside: mean |Δ| over the mask (both channels).
        mean_abs_delta_by_shell: mean |Δ| per distance shell ``"lo-hi"`` mm (:data:`SHELLS_MM`); None for an
            empty shell.
    """

    mask_voxels: int
    changed_inside: int
    changed_outside: int
    changed_outside_over_mask: float
    outside_over_inside: float
    far_changed: int
    far_changed_over_mask: float
    mean_abs_delta_inside: float
    mean_abs_delta_by_shell: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shell_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}" if math.isfinite(hi) else f">{lo:g}"


def footprint(
    image: np.ndarray,
    background: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    *,
    threshold: float = CHANGE_THRESHOLD,
    far_mm: float = FAR_MM,
) -> Footprint:
    """Voxels and intensity a synthesis changed, against the background it was drawn on.

    Args:
        image: (C, X, Y, Z) the synthetic case.
        background: (C, X, Y, Z) its source background, as stored.
        mask: (X, Y, Z) the synthetic tumor mask.
        spacing: voxel spacing (mm).
        threshold: |Δ| above which a far voxel counts.
        far_mm: distance beyond which a voxel is far.

    Raises:
        ValueError: if the shapes differ or the mask is empty.
    """
    if image.shape != background.shape or image.shape[1:] != mask.shape:
        raise ValueError(f"image {image.shape}, background {background.shape} and mask {mask.shape} do not match")
    inside = np.asarray(mask) > 0
    n_mask = int(inside.sum())
    if n_mask == 0:
        raise ValueError("the synthetic mask is empty")
    delta = np.abs(np.asarray(image, dtype=np.float32) - np.asarray(background, dtype=np.float32))
    per_voxel = delta.sum(0)  # sum over channels
    changed = (delta > 0).any(0)
    reach = max(far_mm, max(lo for lo, _ in SHELLS_MM))  # every finite shell lies within ``reach``
    box, dist_box = _distance_near(inside, spacing, reach)  # outside the box: farther than ``reach``
    in_box = np.zeros(inside.shape, bool)
    in_box[box] = True
    outside = ~inside
    sum_in, sum_out = float(per_voxel[inside].sum()), float(per_voxel[outside].sum())
    big = (delta > threshold).any(0)
    far_total = int((big[box] & (dist_box > far_mm)).sum()) + int(big[~in_box].sum())
    mean_voxel = per_voxel / delta.shape[0]
    near_values = mean_voxel[box]
    shells: dict[str, float | None] = {}
    for lo, hi in SHELLS_MM:
        sel = (dist_box > lo) & (dist_box <= hi)
        total, count = float(near_values[sel].sum()), int(sel.sum())
        if not math.isfinite(hi):
            total += float(mean_voxel[~in_box].sum())
            count += int((~in_box).sum())
        shells[_shell_name(lo, hi)] = total / count if count else None
    if sum_in > 0:
        ratio = sum_out / sum_in
    else:
        ratio = math.inf if sum_out > 0 else 0.0
    n_out = int(changed[outside].sum())
    return Footprint(
        mask_voxels=n_mask,
        changed_inside=int(changed[inside].sum()),
        changed_outside=n_out,
        changed_outside_over_mask=n_out / n_mask,
        outside_over_inside=ratio,
        far_changed=far_total,
        far_changed_over_mask=far_total / n_mask,
        mean_abs_delta_inside=float(mean_voxel[inside].mean()),
        mean_abs_delta_by_shell=shells,
    )


def shape_figures(
    mask: np.ndarray, spacing: Sequence[float], *, breast: np.ndarray | None = None, fgt: np.ndarray | None = None
) -> dict[str, float | None]:
    """Volume (mm³ and voxels), elongation, sphericity and the fraction inside the breast and FGT.

    Elongation is √(λ₁/λ₃) of the covariance of the voxel positions in mm (1 for a ball). Sphericity is
    π^⅓ (6V)^⅔ / A with the surface area A estimated from the exposed voxel faces times 2/3 (the mean
    ratio of a surface's true area to its staircase area over orientations, by the Cauchy–Crofton formula);
    ≈ 1 for a large ball, lower for irregular or elongated shapes.
    """
    inside = np.asarray(mask) > 0
    n = int(inside.sum())
    out: dict[str, float | None] = {
        "voxels": float(n),
        "volume_mm3": None,
        "elongation": None,
        "sphericity": None,
        "inside_breast": None,
        "inside_fgt": None,
    }
    if n == 0:
        return out
    sp = np.asarray(spacing, dtype=np.float64)
    volume = n * float(np.prod(sp))
    out["volume_mm3"] = volume
    pts = np.argwhere(inside) * sp
    if n >= 4:
        eig = np.sort(np.linalg.eigvalsh(np.cov(pts, rowvar=False)))
        out["elongation"] = float(math.sqrt(eig[-1] / eig[0])) if eig[0] > 1e-12 else None
    box = _bbox(inside, (1, 1, 1), inside.shape)
    m = np.pad(inside[box], 1)
    face_area = 0.0
    for axis in range(3):
        faces = int(np.count_nonzero(np.diff(m.astype(np.int8), axis=axis)))
        face_area += faces * float(np.prod(np.delete(sp, axis)))
    area = face_area * 2.0 / 3.0
    out["sphericity"] = float(math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area) if area > 0 else None
    if breast is not None:
        out["inside_breast"] = float((np.asarray(breast)[inside] > 0).mean())
    if fgt is not None:
        out["inside_fgt"] = float((np.asarray(fgt)[inside] > 0).mean())
    return out


def summary(values: Sequence[float | None]) -> dict[str, float] | None:
    """n, mean, std, median, p10 and p90 of the finite values; None when there is none."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return None
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "median": float(np.median(arr)),
        "p10": float(np.percentile(arr, 10)),
        "p90": float(np.percentile(arr, 90)),
    }


def by_size(values: Sequence[float | None], sizes: Sequence[int]) -> dict[str, dict[str, float]]:
    """:func:`summary` per mask-size bin (:data:`SIZE_BINS`), keyed ``"lo-hi"`` voxels (the last ``"lo+"``)."""
    out = {}
    edges = (*SIZE_BINS, None)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        chosen = [v for v, n in zip(values, sizes, strict=True) if n >= lo and (hi is None or n < hi)]
        s = summary(chosen)
        if s is not None:
            out[f"{lo}-{hi}" if hi is not None else f"{lo}+"] = s
    return out
