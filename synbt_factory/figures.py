"""Figures: PNG montages of cases, and the drawing helpers every figure of synbt shares.

**One display convention.** Volumes are (X, Y, Z) in RAS order (prepared stores are; NIfTI files are
reoriented to RAS before drawing). :func:`section` cuts a plane and turns it so that

- axial (through Z): anterior is up and the patient's right on the right of the picture;
- coronal (through Y): superior is up and the patient's right on the right;
- sagittal (through X): superior is up and anterior on the right.

That is ``np.rot90`` of the plane as indexed, drawn with ``imshow``'s default ``origin="upper"``;
:func:`section_aspect` gives the pixel aspect of anisotropic voxels.

**One set of colours** for outlines: real (expert) tumor :data:`TUMOR` (red), synthetic or placed tumor
:data:`SYNTHETIC` (cyan), breast :data:`BREAST` (yellow); fibroglandular tissue is a translucent green fill
(:data:`FGT_RGBA`).

**No global state.** Figures are :class:`matplotlib.figure.Figure` objects (:func:`new_figure`), never pyplot's,
and :func:`save_figure` writes them atomically: no backend is selected (``matplotlib.use`` is never called),
so a caller's matplotlib (a notebook, a GUI) is left alone.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synbt_factory.io import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "AXIAL",
    "BREAST",
    "CORONAL",
    "FGT_RGBA",
    "SAGITTAL",
    "SYNTHETIC",
    "TUMOR",
    "CaseView",
    "axial",
    "body_box",
    "case_montage",
    "content_box",
    "draw_outline",
    "hide_ticks",
    "most_tumor_slice",
    "new_figure",
    "save_figure",
    "section",
    "section_aspect",
]

#: The axis a plane is cut through (RAS order): sagittal planes are X = const, coronal Y = const, axial Z = const.
SAGITTAL, CORONAL, AXIAL = 0, 1, 2
#: Outline colour of a real (expert) tumor.
TUMOR = "red"
#: Outline colour of a synthetic or placed tumor.
SYNTHETIC = "cyan"
#: Outline colour of the breast.
BREAST = "yellow"
#: Fill colour (RGBA) of fibroglandular tissue over the image.
FGT_RGBA = (0.1, 0.9, 0.2, 0.35)


class CaseView:
    """One row of a montage.

    Args:
        title: row label (case id, method ...).
        image: (2, X, Y, Z) pre/post (RAS order).
        mask: (X, Y, Z) tumor mask to outline (red).
        second_mask: optional (X, Y, Z) outlined in cyan (e.g. synthetic vs real tumor).
    """

    def __init__(
        self, title: str, image: np.ndarray, mask: np.ndarray | None = None, second_mask: np.ndarray | None = None
    ) -> None:
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


# ----------------------------------------------------------------------------- slices


def section(vol: np.ndarray, axis: int, index: int, box: Sequence[slice] | None = None) -> np.ndarray:
    """The plane ``index`` across ``axis`` of an (X, Y, Z) RAS volume, turned for display (module docstring).

    Args:
        vol: (X, Y, Z) volume in RAS order.
        axis: :data:`SAGITTAL` (0), :data:`CORONAL` (1) or :data:`AXIAL` (2).
        index: the slice along ``axis``.
        box: crop before turning: the slices of the plane's two axes (in volume order), or of all three
            axes (e.g. :func:`body_box`; the one of ``axis`` is ignored).

    Returns:
        The 2-D picture: rows top to bottom, columns left to right.
    """
    plane = np.take(vol, int(index), axis=axis)
    if box is not None:
        box = tuple(box)
        if len(box) == 3:
            box = tuple(s for a, s in enumerate(box) if a != axis)
        plane = plane[box]
    return np.rot90(plane)


def axial(vol: np.ndarray, z: int, box: Sequence[slice] | None = None) -> np.ndarray:
    """Axial slice ``z`` of an (X, Y, Z) RAS volume: anterior up, the patient's right on the right
    (:func:`section` across :data:`AXIAL`); ``box`` crops (X, Y) first (e.g. :func:`content_box`)."""
    return section(vol, AXIAL, z, box)


def section_aspect(spacing: Sequence[float], axis: int) -> float:
    """``imshow``'s ``aspect`` (pixel height over width) of a :func:`section` across ``axis`` for voxels of
    ``spacing`` (X, Y, Z) mm."""
    first, second = (float(s) for a, s in enumerate(spacing[:3]) if a != axis)
    return second / first  # rows run along the plane's second axis, columns along its first


def body_box(image: np.ndarray, margin: int = 3) -> tuple[slice, slice, slice]:
    """The (X, Y, Z) bounding box of the non-zero voxels of a (C, X, Y, Z) image (or an (X, Y, Z) volume), plus
    ``margin``: the zero padding a small volume gets in a large field of view is cut away (the whole volume when
    no voxel, or every voxel, is zero)."""
    image = np.asarray(image)
    filled = np.any(image != 0, axis=0) if image.ndim == 4 else image != 0
    if not filled.any():
        return slice(None), slice(None), slice(None)
    box = []
    for axis in range(3):
        idx = np.flatnonzero(filled.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(0, int(idx[0]) - margin), min(filled.shape[axis], int(idx[-1]) + 1 + margin)))
    return box[0], box[1], box[2]


def content_box(image: np.ndarray, margin: int = 3) -> tuple[slice, slice]:
    """The (X, Y) part of :func:`body_box`: the in-plane crop of an axial slice of a (C, X, Y, Z) image."""
    bx, by, _ = body_box(image, margin)
    return bx, by


# ----------------------------------------------------------------------------- drawing


def new_figure(
    nrows: int, ncols: int, *, figsize: tuple[float, float], sharex: bool = False, sharey: bool = False, **kwargs: Any
) -> tuple[Figure, np.ndarray]:
    """A :class:`matplotlib.figure.Figure` (no pyplot, no backend) and its (``nrows``, ``ncols``) array of axes.

    Args:
        nrows, ncols: the grid of axes (always a 2-D array, even for one row or column).
        figsize: (width, height) in inches.
        sharex, sharey: share the x / y axis between the axes.
        kwargs: passed to ``Figure`` (e.g. ``facecolor``).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, **kwargs)
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False)
    return fig, axes


def hide_ticks(ax: Axes) -> None:
    """No ticks or tick labels (image panels)."""
    ax.set_xticks([])
    ax.set_yticks([])


def draw_outline(ax: Axes, mask: np.ndarray | None, colour: str, *, linewidth: float = 0.8) -> bool:
    """Outline the 2-D ``mask`` (nonzero = inside; a :func:`section` of a mask) on ``ax``.

    Returns:
        Whether anything was drawn (nothing for ``None`` or an empty mask).
    """
    if mask is None:
        return False
    inside = np.asarray(mask) > 0
    if not inside.any():
        return False
    ax.contour(inside.astype(np.float32), levels=[0.5], colors=colour, linewidths=linewidth)
    return True


def save_figure(fig: Figure, path: str | Path, *, dpi: float = 100, **kwargs: Any) -> Path:
    """Write ``fig`` atomically (:func:`synbt_factory.io.atomic_write_bytes`; the folder is created).

    The format follows the file's suffix, as ``Figure.savefig`` does; a name without one gets ``.png``
    appended. ``kwargs`` go to ``savefig`` (e.g. ``facecolor``).

    Returns:
        The path written.
    """
    path = Path(path)
    fmt = path.suffix[1:].lower()
    if not fmt:
        fmt = "png"
        path = path.with_name(path.name.rstrip(".") + ".png")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi, **kwargs)
    return atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------- montage


def case_montage(
    views: Sequence[CaseView], path: Path, *, title: str | None = None, window: tuple[float, float] | None = None
) -> Path:
    """Write a montage: one row per view, columns pre | post | post − pre | post + outline; each row cropped to
    its image's non-zero (X, Y) extent, so a small volume padded into a large field of view fills its panels.

    Args:
        views: the rows.
        path: PNG to write.
        title: figure title.
        window: upper grey limits (image, subtraction) shared by every row, so rows compare by eye;
            ``None`` = each row's own 99.8th percentiles.

    Returns:
        The path written.
    """
    if not views:
        raise ValueError("no cases to preview")
    fig, axes = new_figure(len(views), 4, figsize=(12, 3 * len(views)))
    for row, view in zip(axes, views, strict=True):
        z = view.slice_index()
        box = content_box(view.image)
        pre = axial(view.image[0].astype(np.float32), z, box)
        post = axial(view.image[1].astype(np.float32), z, box)
        vmax = window[0] if window else float(np.percentile(view.image[1], 99.8)) or 1.0
        row[0].imshow(pre, cmap="gray", vmin=0, vmax=vmax)
        row[1].imshow(post, cmap="gray", vmin=0, vmax=vmax)
        sub = post - pre
        sub_max = window[1] if window else max(float(np.percentile(sub, 99.8)), 1e-3)
        row[2].imshow(sub, cmap="gray", vmin=0, vmax=sub_max)
        row[3].imshow(post, cmap="gray", vmin=0, vmax=vmax)
        for m, colour in ((view.mask, TUMOR), (view.second_mask, SYNTHETIC)):
            if m is not None:
                draw_outline(row[3], axial(m, z, box), colour)
        for ax, label in zip(row, ("pre", "post", "post − pre", "mask outline"), strict=True):
            hide_ticks(ax)
            ax.set_title(f"{view.title} — {label} (z={z})" if label == "pre" else label, fontsize=8)
    if title:
        fig.suptitle(title)
    # leave the title its own band above the first row's panel titles
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()) if title else None)
    return save_figure(fig, path, dpi=90)
