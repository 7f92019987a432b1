"""SynthSeg-style label → image synthesis for the tissue model (paper Sec. 3.1, Fig. 4 b).

From a tissue label map (0 background, 1 vessel, 2 dense fibroglandular tissue) and a breast
mask, every call draws a new pre/post image of random contrast (Billot et al., SynthSeg):

1. Generation labels: breast fat, vessel, FGT, and the rest of the volume (outside the
   breast) split by k-means into a random number of clusters (2–8; paper Sec. 3.1). The
   k-means features are the real image's intensities when one is given (label structure only:
   the intensities used later are random), else position plus two smooth random fields.
2. Gaussian mixture: each generation label gets a random pre-contrast mean and spread; its
   post-contrast mean is the pre mean times a random enhancement (strong for vessels,
   mild for tissue), so fat-suppressed and non-fat-suppressed looks are both covered.
3. Corruptions: partial-volume blur, thick-slice blur along one axis (resolution), a
   smooth multiplicative bias field, Gaussian noise, a gamma contrast change, then the
   prepared-store normalisation (divide both channels by the pre 99.5th percentile).

The target is the tissue model's classes (:data:`synbt_factory.models.tissue.TISSUE_CLASSES`):
0 outside the breast, 1 breast fat, 2 vessel, 3 FGT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.cluster.vq import kmeans2

from synbt_factory.synthesis.augment import spline_field

__all__ = ["TissueSynthConfig", "tissue_target", "generation_labels", "synthesize_tissue_image"]


@dataclass(frozen=True, kw_only=True)
class TissueSynthConfig:
    """Ranges of the label → image generator.

    Args:
        clusters: number of k-means clusters outside the breast (paper: 2–8).
        kmeans_samples: voxels sampled to fit k-means (all voxels are then assigned).
        cluster_features: ``"image"`` (real intensities when given, else position) or ``"position"``.
        mean_range: pre-contrast mean per label.
        std_range: within-label spread (fraction of the label mean, plus a floor).
        enhancement_tissue / enhancement_vessel / enhancement_other: post/pre mean ratio ranges.
        min_tissue_contrast: FGT and breast fat means differ by at least this (absolute, in the
            pre or the post channel); FGT is redrawn otherwise. Real DCE always shows FGT against
            fat (brighter when fat-suppressed, darker otherwise); 0 disables the prior.
        blur_range: partial-volume Gaussian σ (voxels).
        thick_slice_prob / thick_slice_range: probability and σ of a one-axis blur.
        bias_range: std of the log bias field.
        noise_range: Gaussian noise std (fraction of the pre 99.5th percentile).
        gamma_std: std of log γ.
        percentile: normalisation percentile of the pre channel (prepared stores: 99.5).
    """

    clusters: tuple[int, int] = (2, 8)
    kmeans_samples: int = 4000
    cluster_features: str = "image"
    mean_range: tuple[float, float] = (0.02, 1.0)
    std_range: tuple[float, float] = (0.0, 0.12)
    enhancement_tissue: tuple[float, float] = (0.8, 1.8)
    enhancement_vessel: tuple[float, float] = (1.2, 4.0)
    enhancement_other: tuple[float, float] = (0.7, 1.5)
    min_tissue_contrast: float = 0.15
    blur_range: tuple[float, float] = (0.3, 1.0)
    thick_slice_prob: float = 0.5
    thick_slice_range: tuple[float, float] = (0.5, 1.5)
    bias_range: tuple[float, float] = (0.0, 0.3)
    noise_range: tuple[float, float] = (0.0, 0.05)
    gamma_std: float = 0.25
    percentile: float = 99.5

    def __post_init__(self) -> None:
        lo, hi = self.clusters
        if not 1 <= lo <= hi <= 32:
            raise ValueError(f"clusters must satisfy 1 <= low <= high <= 32, got {self.clusters}")
        if self.kmeans_samples < 100:
            raise ValueError(f"kmeans_samples must be >= 100, got {self.kmeans_samples}")
        if self.cluster_features not in ("image", "position"):
            raise ValueError(f"cluster_features must be 'image' or 'position', got {self.cluster_features!r}")
        for name in (
            "mean_range",
            "std_range",
            "enhancement_tissue",
            "enhancement_vessel",
            "enhancement_other",
            "blur_range",
            "thick_slice_range",
            "bias_range",
            "noise_range",
        ):
            a, b = getattr(self, name)
            if not 0 <= a <= b:
                raise ValueError(f"{name} must satisfy 0 <= low <= high, got {(a, b)}")
        if not 0 <= self.thick_slice_prob <= 1:
            raise ValueError(f"thick_slice_prob must be in [0, 1], got {self.thick_slice_prob}")
        if not 0 <= self.min_tissue_contrast < 0.5:
            raise ValueError(f"min_tissue_contrast must be in [0, 0.5), got {self.min_tissue_contrast}")
        if self.gamma_std < 0:
            raise ValueError(f"gamma_std must be >= 0, got {self.gamma_std}")
        if not 50 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")


def tissue_target(tissue: np.ndarray, breast: np.ndarray) -> np.ndarray:
    """Tissue-model classes (X, Y, Z) int64: 0 outside breast, 1 fat, 2 vessel, 3 FGT.

    Args:
        tissue: (X, Y, Z) labels 0 background, 1 vessel, 2 dense fibroglandular tissue.
        breast: (X, Y, Z) breast mask.
    """
    b = np.asarray(breast) > 0
    t = np.asarray(tissue)
    target = np.zeros(t.shape, dtype=np.int64)
    target[b] = 1
    target[b & (t == 1)] = 2
    target[b & (t == 2)] = 3
    return target


def generation_labels(
    tissue: np.ndarray,
    breast: np.ndarray,
    rng: np.random.Generator,
    config: TissueSynthConfig,
    *,
    image: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Generation labels (X, Y, Z) int32 and their count.

    1 breast fat, 2 vessel (anywhere), 3 FGT, 4 … 3 + k the k-means clusters of everything
    else (0 unused).
    """
    target = tissue_target(tissue, breast)
    gen = target.astype(np.int32)
    gen[(np.asarray(tissue) == 1) & (target == 0)] = 2
    rest = gen == 0
    k = int(rng.integers(config.clusters[0], config.clusters[1] + 1))
    n_rest = int(rest.sum())
    if n_rest == 0:
        return gen, 4
    k = min(k, n_rest)
    shape = gen.shape
    if config.cluster_features == "image" and image is not None:
        img = np.asarray(image, dtype=np.float32)
        smooth = np.stack([ndimage.gaussian_filter(c, 1.0) for c in img])
        feats = smooth[:, rest].T  # (N, 2)
        coords = np.argwhere(rest).astype(np.float32) / max(shape)
        feats = np.concatenate([feats / max(float(feats.std()), 1e-6), 0.3 * coords], axis=1)
    else:
        fields = spline_field(shape, 4, rng, channels=2)
        coords = np.argwhere(rest).astype(np.float32) / max(shape)
        feats = np.concatenate([coords, 0.35 * fields[:, rest].T], axis=1)
    take = rng.choice(n_rest, size=min(n_rest, config.kmeans_samples), replace=False)
    centroids, _ = kmeans2(feats[take].astype(np.float64), k, iter=10, minit="++", rng=rng)
    f32 = feats.astype(np.float32)
    c32 = centroids.astype(np.float32)
    dist = (c32 * c32).sum(axis=1)[None, :] - 2.0 * (f32 @ c32.T)  # |x|² is common to every centroid
    gen[rest] = 4 + np.argmin(dist, axis=1).astype(np.int32)
    return gen, 4 + k


def synthesize_tissue_image(
    tissue: np.ndarray,
    breast: np.ndarray,
    rng: np.random.Generator,
    config: TissueSynthConfig | None = None,
    *,
    image: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One random-contrast pre/post image from a label map.

    Args:
        tissue: (X, Y, Z) 0 background / 1 vessel / 2 FGT.
        breast: (X, Y, Z) breast mask.
        rng: the only source of randomness.
        config: generator ranges.
        image: optional (2, X, Y, Z) real image, used only to shape the k-means clusters.

    Returns:
        image (2, X, Y, Z) float32 (pre ≈ 0..1 after normalisation), target (X, Y, Z) int64
        tissue-model classes, and the drawn parameters (for inspection).
    """
    config = config or TissueSynthConfig()
    gen, n_labels = generation_labels(tissue, breast, rng, config, image=image)
    shape = gen.shape
    means_pre = rng.uniform(*config.mean_range, size=n_labels)
    enh = rng.uniform(*config.enhancement_other, size=n_labels)
    enh[1] = rng.uniform(*config.enhancement_other)
    enh[2] = rng.uniform(*config.enhancement_vessel)
    enh[3] = rng.uniform(*config.enhancement_tissue)
    for _ in range(20):  # FGT (3) must stand out from breast fat (1) in at least one channel
        d_pre = abs(means_pre[3] - means_pre[1])
        d_post = abs(means_pre[3] * enh[3] - means_pre[1] * enh[1])
        if max(d_pre, d_post) >= config.min_tissue_contrast:
            break
        means_pre[3] = rng.uniform(*config.mean_range)
    means_post = means_pre * enh
    spread = rng.uniform(*config.std_range, size=(2, n_labels))
    stds = spread * np.stack([means_pre, means_post]) + 0.01
    out = np.empty((2, *shape), dtype=np.float32)
    for c, means in enumerate((means_pre, means_post)):
        out[c] = means[gen] + stds[c][gen] * rng.standard_normal(shape, dtype=np.float32)
    blur = rng.uniform(*config.blur_range)
    sigmas = [blur] * 3
    thick_axis = -1
    if rng.random() < config.thick_slice_prob:
        thick_axis = int(rng.integers(0, 3))
        sigmas[thick_axis] = float(rng.uniform(*config.thick_slice_range)) * 2.0
    for c in range(2):
        out[c] = ndimage.gaussian_filter(out[c], sigmas)
    bias_std = rng.uniform(*config.bias_range)
    bias = np.exp(bias_std * spline_field(shape, 3, rng)[0])
    out *= bias[None]
    np.maximum(out, 0.0, out=out)
    noise = rng.uniform(*config.noise_range)
    out += noise * rng.standard_normal(out.shape, dtype=np.float32)
    np.abs(out, out=out)  # magnitude images: Rician-like floor
    gamma = float(np.exp(rng.normal(0.0, config.gamma_std)))
    top = max(float(out.max()), 1e-6)
    out = top * (out / top) ** gamma
    scale = float(np.percentile(out[0], config.percentile))
    out /= max(scale, 1e-6)
    params = {
        "clusters": n_labels - 4,
        "blur": float(blur),
        "thick_axis": thick_axis,
        "bias_std": float(bias_std),
        "noise": float(noise),
        "gamma": gamma,
    }
    return out.astype(np.float32, copy=False), tissue_target(tissue, breast), params
