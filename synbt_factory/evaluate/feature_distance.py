"""Learned-feature distance between sets of tumors: the Fréchet distance of pooled encoder features.

The features of a tumor are the VQ-VAE encoder's continuous latent of a tumor-centred crop (both channels),
pooled over space into the mean and the standard deviation of every latent channel. The encoder was
trained on the real cases, and no downloaded weights are involved. The Fréchet distance between two sets
is that of Gaussians fitted to their features (the FID formula):

    ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

with a small ridge added to both covariances, since sets of tens of tumors give rank-deficient ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["encoder_features", "frechet_distance", "tumor_crop"]


def frechet_distance(a: np.ndarray, b: np.ndarray, *, ridge: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets.

    Args:
        a, b: (N, D) and (M, D) features, N, M ≥ 2.
        ridge: added to both covariance diagonals, relative to their mean variance.

    Raises:
        ValueError: if a set has fewer than two rows or the feature sizes differ.
    """
    from scipy.linalg import sqrtm

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D), got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"need at least two feature rows per set, got {a.shape[0]} and {b.shape[0]}")
    d = a.shape[1]
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    scale = max((np.trace(cov_a) + np.trace(cov_b)) / (2 * d), 1e-12)
    eye = np.eye(d) * ridge * scale
    cov_a, cov_b = cov_a + eye, cov_b + eye
    covmean = sqrtm(cov_a @ cov_b)
    covmean = np.real(covmean)
    diff = a.mean(0) - b.mean(0)
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def tumor_crop(image: np.ndarray, mask: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(C, *size) float32 crop of ``image`` centred on the centroid of ``mask`` (zero-padded at the borders).

    Raises:
        ValueError: for an empty mask.
    """
    inside = np.argwhere(np.asarray(mask) > 0)
    if inside.size == 0:
        raise ValueError("cannot centre a crop on an empty mask")
    centre = np.round(inside.mean(0)).astype(int)
    out = np.zeros((image.shape[0], *size), dtype=np.float32)
    src, dst = [], []
    for c, n, dim in zip(centre, size, image.shape[1:], strict=True):
        lo = int(c) - n // 2
        a, b = max(lo, 0), min(lo + n, dim)
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[(slice(None), *dst)] = np.asarray(image[(slice(None), *src)], dtype=np.float32)
    return out


def encoder_features(
    autoencoder: Any, crops: Sequence[np.ndarray], *, device: str = "cpu", batch: int = 8
) -> np.ndarray:
    """(N, 2·D) pooled features: per latent channel the spatial mean and standard deviation of ``encode``.

    Args:
        autoencoder: a :class:`~synbt_factory.models.autoencoder.LatentAutoencoder` in eval mode on ``device``.
        crops: (C, X, Y, Z) crops, sizes multiples of the autoencoder's downsample factor.
        device: where the autoencoder runs.
        batch: crops per encoder call.
    """
    import torch

    feats = []
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            x = torch.from_numpy(np.stack(crops[i : i + batch])).to(device)
            z = autoencoder.encode(x).float().flatten(2)
            feats.append(torch.cat([z.mean(-1), z.std(-1)], dim=1).cpu().numpy())
    return np.concatenate(feats).astype(np.float64)
