"""Copy-paste tumors: a real tumor from the bank pasted, with its own voxels, into another background.

The cheap baseline of tumor synthesis. The placed mask is the bank template moved by the placement's
augmentation and scale (:meth:`~synbt_factory.synthesis.bank.TumorBank.render`); the tumor's (pre, post) crop is
moved identically (:meth:`~synbt_factory.synthesis.bank.TumorBank.render_image`). :func:`paste_tumor` then

* inside the placed mask, writes the moved source voxels as they are (times one per-channel scale when
  :attr:`CopyPasteConfig.intensity` is ``"tissue"``; 1 by default);
* within ``blend_voxels`` of the mask (Euclidean distance in voxels), mixes source and background with a
  raised-cosine weight, 1 at the mask falling to 0 at ``blend_voxels + 1``;
* leaves every voxel farther than ``blend_voxels`` from the mask untouched, bit for bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["INTENSITY_MODES", "CopyPasteConfig", "paste_tumor"]

log = logging.getLogger(__name__)

#: ``"none"``: the source voxels as they are; ``"tissue"``: each channel scaled by (background tissue level ÷
#: source tissue level), the levels being the medians of the blend margin in the background and in the source
INTENSITY_MODES = ("none", "tissue")


@dataclass(frozen=True, kw_only=True)
class CopyPasteConfig:
    """How a pasted tumor meets its new background.

    Args:
        blend_voxels: width of the blend margin around the mask (voxels); 0 = a hard border.
        intensity: one of :data:`INTENSITY_MODES`. ``"tissue"`` maps the source case's normal-tissue level
            next to the tumor onto the background's, per channel, with one scale recorded in the record;
            ``"none"`` (default) keeps the pasted tumor's voxels exactly.
    """

    blend_voxels: int = 3
    intensity: str = "none"

    def __post_init__(self) -> None:
        if not 0 <= self.blend_voxels <= 16:
            raise ValueError(f"blend_voxels must be in [0, 16], got {self.blend_voxels}")
        if self.intensity not in INTENSITY_MODES:
            raise ValueError(f"intensity must be one of {', '.join(INTENSITY_MODES)}, got {self.intensity!r}")


def _blend_weight(distance: np.ndarray, width: int) -> np.ndarray:
    """Raised cosine of the distance to the mask: 1 at 0, 0 from ``width + 1`` on."""
    return np.where(distance > width, 0.0, 0.5 * (1.0 + np.cos(np.pi * distance / (width + 1)))).astype(np.float32)


def paste_tumor(
    background: np.ndarray,
    synthetic_mask: np.ndarray,
    tumor_image: np.ndarray,
    tumor_mask: np.ndarray,
    offset: tuple[int, int, int] | list[int],
    config: CopyPasteConfig | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Paste a moved real tumor into a background.

    Args:
        background: (2, X, Y, Z) float32 pre/post background.
        synthetic_mask: (X, Y, Z) placed tumor mask; must be ``tumor_mask`` written at ``offset``.
        tumor_image: (2, x + 2p, y + 2p, z + 2p) source voxels on ``tumor_mask``'s grid widened by ``p`` voxels
            on every side (``TumorBank.render_image(record, pad=p)``); a ``p`` under ``blend_voxels`` is
            widened by repeating its edge.
        tumor_mask: (x, y, z) the moved template mask (``TumorBank.render(record)``).
        offset: voxel of the volume where ``tumor_mask[0, 0, 0]`` lies (the placement record's offset).
        config: blend width and intensity matching.

    Returns:
        (image (2, X, Y, Z) float32, JSON-ready record of the paste: blend width, intensity mode, per-channel
        scale, tumor and blend-margin voxel counts).

    Raises:
        ValueError: shapes that do not fit together, or a ``synthetic_mask`` that is not ``tumor_mask`` at ``offset``.
    """
    config = config or CopyPasteConfig()
    background = np.asarray(background, dtype=np.float32)
    if background.ndim != 4 or background.shape[0] != 2:
        raise ValueError(f"background must be (2, X, Y, Z), got {background.shape}")
    shape = background.shape[1:]
    if tuple(synthetic_mask.shape) != shape:
        raise ValueError(f"synthetic_mask has shape {synthetic_mask.shape}, the background {shape}")
    tumor = np.asarray(tumor_mask) > 0
    if tumor.ndim != 3 or not tumor.any():
        raise ValueError(f"tumor_mask must be a non-empty (x, y, z) mask, got shape {tumor.shape}")
    pads = [(t - m) for t, m in zip(tumor_image.shape[1:], tumor.shape, strict=True)]
    if tumor_image.ndim != 4 or tumor_image.shape[0] != 2 or len(set(pads)) != 1 or pads[0] < 0 or pads[0] % 2:
        raise ValueError(
            f"tumor_image must be (2, *tumor_mask.shape + 2 pad), got {tumor_image.shape} for a mask of {tumor.shape}"
        )
    pad = pads[0] // 2
    offset = [int(o) for o in offset]
    end = [o + n for o, n in zip(offset, tumor.shape, strict=True)]
    if any(o < 0 for o in offset) or any(e > n for e, n in zip(end, shape, strict=True)):
        raise ValueError(f"a tumor of shape {tumor.shape} at {offset} does not fit in {shape}")
    placed = np.zeros(shape, dtype=bool)
    placed[tuple(slice(o, e) for o, e in zip(offset, end, strict=True))] = tumor
    if not np.array_equal(placed, np.asarray(synthetic_mask) > 0):
        raise ValueError("synthetic_mask is not tumor_mask at offset: the placement and the rendered template differ")
    width = config.blend_voxels
    if pad < width:
        edge = width - pad
        tumor_image = np.pad(tumor_image, [(0, 0)] + [(edge, edge)] * 3, mode="edge")
        pad = width

    # the window: the tumor's box widened by the blend margin, clipped to the volume
    start = [max(o - width, 0) for o in offset]
    stop = [min(e + width, n) for e, n in zip(end, shape, strict=True)]
    window = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    source_box = tuple(slice(a - o + pad, b - o + pad) for a, b, o in zip(start, stop, offset, strict=True))
    inside = placed[window]
    source = np.asarray(tumor_image, dtype=np.float32)[(slice(None), *source_box)]
    region = background[(slice(None), *window)]
    distance = ndimage.distance_transform_edt(~inside) if width else np.where(inside, 0.0, np.inf)
    margin = ~inside & (distance <= width)

    scale = np.ones(2, dtype=np.float32)
    if config.intensity == "tissue":
        ring = margin if margin.any() else ~inside
        for c in range(2):
            src_level = float(np.median(source[c][ring])) if ring.any() else 0.0
            bg_level = float(np.median(region[c][ring])) if ring.any() else 0.0
            scale[c] = bg_level / src_level if src_level > 1e-6 and bg_level > 0 else 1.0
        source = source * scale[:, None, None, None] if not np.all(scale == 1.0) else source

    out = background.copy()
    target = out[(slice(None), *window)]  # a view: writes land in out
    weight = _blend_weight(distance[margin], width)
    for c in range(2):
        target[c][inside] = source[c][inside]
        target[c][margin] = weight * source[c][margin] + (1.0 - weight) * region[c][margin]
    record = {
        "blend_voxels": width,
        "intensity": config.intensity,
        "channel_scale": [float(s) for s in scale],
        "tumor_voxels": int(inside.sum()),
        "blended_voxels": int(margin.sum()),
    }
    log.debug(
        "pasted %d tumor voxels, %d blended, channel scale %s",
        record["tumor_voxels"],
        record["blended_voxels"],
        record["channel_scale"],
    )
    return out, record
