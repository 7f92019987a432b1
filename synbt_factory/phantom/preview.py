"""A PNG montage of written cases, read back from the NIfTI files (what a user would see).

One row per case: axial pre-contrast, axial first post-contrast, axial subtraction (post − pre),
the subtraction with the expert mask outline, and a sagittal subtraction with the outline: the axial
slice with the largest tumor area, the sagittal one through the tumor's centre (the volume's middle
slice and a third of its width for healthy cases). Volumes are reoriented to RAS and drawn in the
display convention of :mod:`synbt_factory.figures` (axial: anterior up, the patient's right on the
right; sagittal: superior up, anterior on the right), with their voxel aspect.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from synbt_factory.figures import (
    AXIAL,
    SAGITTAL,
    TUMOR,
    axial,
    draw_outline,
    hide_ticks,
    new_figure,
    save_figure,
    section,
    section_aspect,
)

__all__ = ["write_preview"]

log = logging.getLogger(__name__)


def _load_ras(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(img.dataobj, dtype=np.float32)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return data, zooms  # type: ignore[return-value]


def write_preview(
    dataset_dir: Path,
    png_path: Path,
    *,
    case_ids: Sequence[str] | None = None,
    max_cases: int = 4,
) -> Path:
    """Save a PNG preview of a few cases of a MAMA-MIA-layout folder.

    Args:
        dataset_dir: dataset root (holds ``images/``).
        png_path: where to write the PNG (parent folders are created).
        case_ids: cases to show (case-insensitive); default the first ``max_cases`` cases.
        max_cases: at most this many rows.

    Returns:
        ``png_path``.
    """
    from synbt_factory.data.mamamia import index_dataset

    if max_cases < 1:
        raise ValueError(f"max_cases must be >= 1, got {max_cases}")
    index = index_dataset(Path(dataset_dir))
    if case_ids is None:
        records = [c for c in index.cases if len(c.phases) >= 2][:max_cases]
    else:
        records = [index.get(cid) for cid in case_ids][:max_cases]
    if not records:
        raise ValueError(f"{dataset_dir}: no case with a pre- and a post-contrast phase to preview")

    cols = ("pre-contrast", "post-contrast 1", "subtraction", "subtraction + mask", "sagittal subtraction")
    fig, axes = new_figure(len(records), len(cols), figsize=(3.2 * len(cols), 3.4 * len(records)), facecolor="black")
    for row, case in enumerate(records):
        pre, zooms = _load_ras(case.phases[0])
        post, _ = _load_ras(case.phases[1])
        sub = post - pre
        mask = _load_ras(case.expert_mask)[0] > 0.5 if case.expert_mask is not None else np.zeros(pre.shape, bool)
        if mask.any():
            # The axial slice with the largest tumor area; sagittal through the tumor's centre.
            k = int(np.argmax(mask.sum(axis=(0, 1))))
            i = int(round(float(np.argwhere(mask)[:, 0].mean())))
        else:
            k, i = pre.shape[2] // 2, pre.shape[0] // 3
        body = pre > np.percentile(pre, 60)
        vmax = float(np.percentile(post[body], 99.5)) if body.any() else float(post.max())
        smax = float(np.percentile(sub[body], 99.8)) if body.any() else float(sub.max())
        smax = max(smax, 1.0)
        ax_aspect = section_aspect(zooms, AXIAL)
        sag_aspect = section_aspect(zooms, SAGITTAL)
        panels = (
            (axial(pre, k), vmax, None, ax_aspect),
            (axial(post, k), vmax, None, ax_aspect),
            (axial(sub, k), smax, None, ax_aspect),
            (axial(sub, k), smax, axial(mask, k), ax_aspect),
            (section(sub, SAGITTAL, i), smax, section(mask, SAGITTAL, i), sag_aspect),
        )
        info = case.info() or {}
        imaging = info.get("imaging_data", {}) if isinstance(info, dict) else {}
        label = (
            f"{case.case_id}  {imaging.get('site_profile', '')} "
            f"{'FS' if imaging.get('fat_suppressed') else 'non-FS'} "
            f"{imaging.get('orientation', '')}  {len(case.phases) - 1} post"
        )
        for col, (img, vm, outline, aspect) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=vm, aspect=aspect, interpolation="nearest")
            draw_outline(ax, outline, TUMOR)
            hide_ticks(ax)
            if row == 0:
                ax.set_title(cols[col], color="white", fontsize=9)
            if col == 0:
                ax.set_ylabel(label, color="white", fontsize=8)
    fig.suptitle("synbt procedural PHANTOM (synthetic, not patient data)", color="white", fontsize=11)
    fig.tight_layout()
    png_path = save_figure(fig, png_path, dpi=110, facecolor="black")
    log.info("wrote preview of %d cases to %s", len(records), png_path)
    return png_path
