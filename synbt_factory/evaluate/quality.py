"""Image-quality measures for reconstructions: PSNR, SSIM (MONAI) and a patch-grid artifact score.

The grid-artifact score quantifies the seams a patch-wise autoencoder can leave (paper Fig. 4a,
middle column): the mean absolute intensity step across the patch boundaries divided by the
mean absolute step between all other neighbouring voxels. A reconstruction without seams scores
≈ 1; visible seams push it above 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric

__all__ = ["psnr", "ssim", "channel_quality", "grid_artifact_score"]


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()


def _data_range(target: torch.Tensor) -> float:
    rng = float(target.max() - target.min())
    return rng if rng > 0 else 1.0


def psnr(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, *, data_range: float | None = None
) -> float:
    """PSNR in dB of one (X, Y, Z) volume (MONAI ``PSNRMetric``).

    Args:
        data_range: peak value range; default ``target.max() - target.min()``.
    """
    p, t = _as_tensor(pred), _as_tensor(target)
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} differ in shape")
    rng = data_range if data_range is not None else _data_range(t)
    return float(PSNRMetric(max_val=rng)(p[None, None], t[None, None]).mean())


def ssim(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    *,
    data_range: float | None = None,
    win_size: int = 7,
) -> float:
    """Mean 3-D SSIM of one (X, Y, Z) volume (MONAI ``SSIMMetric``, Gaussian window).

    Args:
        data_range: value range; default ``target.max() - target.min()``.
        win_size: window edge in voxels (must not exceed the volume).
    """
    p, t = _as_tensor(pred), _as_tensor(target)
    if p.shape != t.shape or p.ndim != 3:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} must be equal (X, Y, Z) shapes")
    if min(p.shape) < win_size:
        raise ValueError(f"volume {tuple(p.shape)} is smaller than the SSIM window {win_size}")
    rng = data_range if data_range is not None else _data_range(t)
    metric = SSIMMetric(spatial_dims=3, data_range=rng, win_size=win_size)
    return float(metric(p[None, None], t[None, None]).mean())


def masked_psnr(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    mask: np.ndarray,
    *,
    data_range: float | None = None,
) -> float:
    """PSNR in dB over the voxels of ``mask`` only: 10 · log10(range² / mean((pred − target)²) inside the mask).

    On a small volume in a large field of view the zero padding dominates a whole-volume PSNR (an all-black
    reconstruction of a 96 %-padding volume scores 24 dB); inside the body it does not.

    Args:
        pred, target: (X, Y, Z). mask: (X, Y, Z) bool (e.g. the body). data_range: default ``target`` range.
    """
    p, t = _as_tensor(pred), _as_tensor(target)
    m = torch.as_tensor(np.asarray(mask, dtype=bool))
    if p.shape != t.shape or tuple(m.shape) != tuple(t.shape):
        raise ValueError(f"pred {tuple(p.shape)}, target {tuple(t.shape)} and mask {tuple(m.shape)} must match")
    if not m.any():
        return float("nan")
    rng = data_range if data_range is not None else _data_range(t)
    mse = float(((p - t)[m].double() ** 2).mean())
    return float("inf") if mse == 0 else float(10.0 * np.log10(rng**2 / mse))


def channel_quality(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    *,
    ssim_win: int = 7,
    mask: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """PSNR and SSIM per channel of (C, X, Y, Z) volumes, each with that channel's target range.

    Args:
        mask: optional (X, Y, Z) bool region (the body): adds ``psnr_masked`` (:func:`masked_psnr`).

    Returns:
        ``{"psnr": [C floats], "ssim": [C floats]}`` (+ ``"psnr_masked"``).
    """
    p, t = _as_tensor(pred), _as_tensor(target)
    if p.shape != t.shape or p.ndim != 4:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} must be equal (C, X, Y, Z) shapes")
    out = {
        "psnr": [psnr(p[c], t[c]) for c in range(p.shape[0])],
        "ssim": [ssim(p[c], t[c], win_size=ssim_win) for c in range(p.shape[0])],
    }
    if mask is not None:
        out["psnr_masked"] = [masked_psnr(p[c], t[c], mask) for c in range(p.shape[0])]
    return out


def grid_artifact_score(
    volume: np.ndarray | torch.Tensor,
    *,
    patch: int = 64,
    offset: Sequence[int] = (0, 0, 0),
    band: int | None = 4,
    cell: int = 1,
) -> float:
    """Mean |step| across patch boundaries ÷ mean |step| away from them (1.0 = no grid).

    A "step" is the absolute difference of two face-neighbouring voxels; it is a boundary step
    when the two voxels lie in different patches of the grid with edge ``patch`` starting at
    ``offset``. The reference steps are the non-boundary steps within ``band`` cells of a
    boundary (parallel to it, on either side), so smooth intensity trends across the volume do
    not bias the ratio; ``band=None`` uses every non-boundary step. All three axes and all
    channels are pooled.

    ``cell`` is the decoder's compression factor (4 in the paper). A decoder that upsamples by
    ``cell`` leaves a faint ``cell``-periodic pattern everywhere (transposed-convolution
    checkerboard, one latent vector per cell), and patch boundaries always fall on cell
    boundaries; with ``cell > 1`` the reference steps are only those at the same position within
    a cell (cell boundaries that are not patch boundaries), so the score measures the patch seams
    alone and not that pattern.

    Args:
        volume: (X, Y, Z) or (C, X, Y, Z).
        patch: patch edge of the encoder grid.
        offset: grid origin per axis (0 for :meth:`PatchVolumeVQVAE.encode`).
        band: reference steps at most ``band × cell`` positions from a boundary step (>= 1), or ``None``.
        cell: compression factor; must divide ``patch``.

    Raises:
        ValueError: the volume spans no patch boundary, or has no non-boundary variation.
    """
    v = _as_tensor(volume).double()
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4:
        raise ValueError(f"volume must be (X, Y, Z) or (C, X, Y, Z), got {tuple(v.shape)}")
    if patch < 2:
        raise ValueError(f"patch must be >= 2, got {patch}")
    if band is not None and band < 1:
        raise ValueError(f"band must be >= 1 or None, got {band}")
    if cell < 1 or patch % cell:
        raise ValueError(f"cell must be a positive divisor of patch {patch}, got {cell}")
    b_sum = b_n = o_sum = o_n = 0.0
    for axis in range(3):
        dim = 1 + axis
        n = v.shape[dim]
        if n < 2:
            continue
        steps = (v.narrow(dim, 1, n - 1) - v.narrow(dim, 0, n - 1)).abs()
        # step i joins voxels i and i+1: a boundary when i+1 - offset is a multiple of patch
        idx = torch.arange(n - 1)
        boundary = ((idx + 1 - int(offset[axis])) % patch) == 0
        if not boundary.any():
            continue
        reference = ~boundary & (((idx + 1 - int(offset[axis])) % cell) == 0)
        if band is not None:
            pos = idx[boundary]
            near = ((idx[:, None] - pos[None, :]).abs() <= band * cell).any(dim=1)
            reference &= near
        moved = steps.movedim(dim, 0)
        b_sum += float(moved[boundary].sum())
        b_n += float(moved[boundary].numel())
        o_sum += float(moved[reference].sum())
        o_n += float(moved[reference].numel())
    if b_n == 0:
        raise ValueError(f"volume {tuple(v.shape[1:])} crosses no patch boundary of a {patch}-voxel grid")
    if o_n == 0 or o_sum == 0:
        raise ValueError("volume has no variation next to the patch boundaries; the score is undefined")
    return (b_sum / b_n) / (o_sum / o_n)
