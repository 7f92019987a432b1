"""PNG montages of cases (matplotlib, Agg): pre, post, subtraction, mask outline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["CaseView", "case_montage", "content_box", "most_tumor_slice"]


class CaseView:
    """One row of a montage.

    Args:
        title: row label (case id, method ...).
        image: (2, X, Y, Z) pre/post (RAS order).
        mask: (X, Y, Z) tumor mask to outline (red).
        second_mask: optional (X, Y, Z) outlined in cyan (e.g. synthetic vs real tumor).
    """

    def __init__(self, title: str, image: np.ndarray, mask: np.ndarray | None = None,
                 second_mask: np.ndarray | None = None) -> None:
        self.title, self.image, self.mask, self.second_mask = title, image, mask, second_mask

    def slice_index(self) -> int:
        """The axial slice holding most of the (second, else first) mask, else the middle.

        Not the centroid's: a mask of two components (a satellite) can have its centroid on a slice between them.
        """
        for m in (self.second_mask, self.mask):
            if m is not None and m.any():
                return most_tumor_slice(np.argwhere(m > 0), self.image.shape[-1])
        return self.image.shape[-1] // 2


def most_tumor_slice(tumor_voxels: np.ndarray, depth: int) -> int:
    """The axial slice (last axis) holding most of the tumor, from its (N, 3) voxel coordinates; the middle of
    ``depth`` slices when there is no tumor."""
    if len(tumor_voxels) == 0:
        return depth // 2
    return int(np.argmax(np.bincount(np.asarray(tumor_voxels)[:, 2].astype(np.int64), minlength=depth)))


def _axial(vol: np.ndarray, z: int, box: tuple[slice, slice] | None = None) -> np.ndarray:
    # RAS (X toward the right, Y anterior): anterior up, patient's right on the right of the picture
    plane = vol[:, :, z]
    return np.rot90(plane[box] if box is not None else plane)


def content_box(image: np.ndarray, margin: int = 3) -> tuple[slice, slice]:
    """The (X, Y) bounding box of non-zero voxels of a (C, X, Y, Z) image, plus ``margin``: zero padding around a
    small volume in a large field of view is cut away (the whole plane when nothing is zero)."""
    filled = np.any(image != 0, axis=(0, 3))
    if not filled.any():
        return (slice(None), slice(None))
    box = []
    for axis in range(2):
        idx = np.flatnonzero(filled.any(axis=1 - axis))
        box.append(slice(max(0, int(idx[0]) - margin), min(filled.shape[axis], int(idx[-1]) + 1 + margin)))
    return box[0], box[1]


def case_montage(views: Sequence[CaseView], path: Path, *, title: str | None = None,
                 window: tuple[float, float] | None = None) -> Path:
    """Write a montage: one row per view, columns pre | post | post − pre | post + outline; each row cropped to
    its image's non-zero (X, Y) extent, so a small volume padded into a large field of view fills its panels.

    Args:
        views: the rows.
        path: PNG to write.
        title: figure title.
        window: upper grey limits (image, subtraction) shared by every row, so rows compare by eye;
            ``None`` = each row's own 99.8th percentiles.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not views:
        raise ValueError("no cases to preview")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(views), 4, figsize=(12, 3 * len(views)), squeeze=False)
    for row, view in zip(axes, views, strict=True):
        z = view.slice_index()
        box = content_box(view.image)
        pre = _axial(view.image[0].astype(np.float32), z, box)
        post = _axial(view.image[1].astype(np.float32), z, box)
        vmax = window[0] if window else float(np.percentile(view.image[1], 99.8)) or 1.0
        row[0].imshow(pre, cmap="gray", vmin=0, vmax=vmax)
        row[1].imshow(post, cmap="gray", vmin=0, vmax=vmax)
        sub = post - pre
        sub_max = window[1] if window else max(float(np.percentile(sub, 99.8)), 1e-3)
        row[2].imshow(sub, cmap="gray", vmin=0, vmax=sub_max)
        row[3].imshow(post, cmap="gray", vmin=0, vmax=vmax)
        for m, colour in ((view.mask, "red"), (view.second_mask, "cyan")):
            if m is not None and m.any():
                row[3].contour(_axial(m.astype(np.float32), z, box), levels=[0.5], colors=colour, linewidths=0.8)
        for ax, label in zip(row, ("pre", "post", "post − pre", "mask outline"), strict=True):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{view.title} — {label} (z={z})" if label == "pre" else label, fontsize=8)
    if title:
        fig.suptitle(title)
    # leave the title its own band above the first row's panel titles
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()) if title else None)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
