"""SynTumor baseline (Hu et al., CVPR 2023, "Label-free liver tumor segmentation"), adapted to DCE-MRI.

The paper compares SynBT with this analytical generator (Tab. 1, Fig. 4 c–d). Its recipe,
re-implemented here from the description and the public code's behaviour:

* shape: an ellipsoid with radii drawn around a size class (tiny 4, small 8, medium 16,
  large 32 voxels, × U(0.75, 1.25)), elastically deformed (smooth displacement of σ voxels by
  class, on a 3-point control grid as the public code's elastic deformation), or a
  mask given by the caller (e.g. a bank placement);
* texture: uniform noise → Gaussian blur (σ_a ∈ [3, 15]) → min–max scaled to a low
  probability field (≈ 0.05–0.25) → one Bernoulli draw per voxel → Gaussian blur
  (σ_b ∈ [3, 5] w.p. 0.7 else [5, 8]) → scaled so the mean over voxels above 0.12 is
  u₀ ∈ [0.5, 0.55] → clipped to [0, 1];
* blending: the mask is blurred (σ ∈ [1, 2]) and ``image + texture · blurred_mask · A`` is
  written; voxels where the blurred mask is zero are untouched.

DCE-MRI adaptation: the tumor is hyper-enhancing in the post-contrast channel and
near-iso in the pre-contrast channel. The amplitudes are chosen so that, on average over
the tumor, pre becomes ``s · pre_bg`` and post becomes ``r · s · pre_bg``, with (r, s)
drawn from the real tumors' measured enhancement (:class:`EnhancementStats`: r = mean
post / mean pre inside the tumor, s = mean pre inside / mean pre in a 2–5 mm ring).

Speed (what differs from the public code): no texture bank is built at start-up; the
texture is generated only in the tumor's bounding box, and both texture blurs are done in
the Fourier domain (periodic boundaries: the texture is stationary noise, so the wrap is
invisible), which costs the same for every σ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from synbt_factory.config import config_from_dict, config_to_dict
from synbt_factory.progress import ProgressFn, report
from synbt_factory.synthesis.augment import largest_component, spline_field

__all__ = [
    "SIZE_CLASSES",
    "SynTumorConfig",
    "SynTumorRecord",
    "EnhancementStats",
    "ENHANCEMENT_ATTR",
    "ENHANCEMENT_VERSION",
    "enhancement_record",
    "syntumor_insert",
    "syntumor_replay",
    "texture",
    "blurred_mask",
    "ellipsoid",
]

log = logging.getLogger(__name__)

SizeClass = Literal["tiny", "small", "medium", "large"]
SIZE_CLASSES: tuple[str, ...] = ("tiny", "small", "medium", "large")


@dataclass(frozen=True, kw_only=True)
class SynTumorConfig:
    """SynTumor ranges (defaults follow the public implementation).

    Args:
        radius: base radius in voxels per size class (tiny, small, medium, large).
        radius_jitter: radii drawn in base × [low, high].
        elastic_sigma: displacement σ range in voxels per size class.
        sigma_a: blur range of the probability field.
        sigma_b_small / sigma_b_large / p_sigma_b_small: blur of the Bernoulli field.
        prob_scale / prob_base: probability field = scale · minmax(blurred noise) + base.
        u0: target mean of the texture above 0.12.
        edge_sigma: blur range of the mask at blending.
        ratio_jitter: relative jitter of the drawn enhancement ratio.
        fft_workers: threads for the Fourier blurs.
    """

    radius: tuple[float, float, float, float] = (4.0, 8.0, 16.0, 32.0)
    radius_jitter: tuple[float, float] = (0.75, 1.25)
    elastic_sigma: tuple[tuple[float, float], ...] = ((0.5, 1.0), (1.0, 2.0), (3.0, 6.0), (5.0, 10.0))
    sigma_a: tuple[float, float] = (3.0, 15.0)
    sigma_b_small: tuple[float, float] = (3.0, 5.0)
    sigma_b_large: tuple[float, float] = (5.0, 8.0)
    p_sigma_b_small: float = 0.7
    prob_scale: tuple[float, float] = (0.19, 0.21)
    prob_base: tuple[float, float] = (0.04, 0.06)
    u0: tuple[float, float] = (0.5, 0.55)
    edge_sigma: tuple[float, float] = (1.0, 2.0)
    ratio_jitter: float = 0.05
    fft_workers: int = 1

    def __post_init__(self) -> None:
        if len(self.radius) != 4 or any(r <= 0 for r in self.radius):
            raise ValueError(f"radius must be 4 positive values (tiny, small, medium, large), got {self.radius}")
        if len(self.elastic_sigma) != 4 or any(not 0 <= lo <= hi for lo, hi in self.elastic_sigma):
            raise ValueError(f"elastic_sigma must be 4 (low, high) ranges, got {self.elastic_sigma}")
        for name in (
            "radius_jitter",
            "sigma_a",
            "sigma_b_small",
            "sigma_b_large",
            "prob_scale",
            "prob_base",
            "u0",
            "edge_sigma",
        ):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must satisfy 0 < low <= high, got {(lo, hi)}")
        if not 0 <= self.p_sigma_b_small <= 1:
            raise ValueError(f"p_sigma_b_small must be in [0, 1], got {self.p_sigma_b_small}")
        if not 0 <= self.ratio_jitter < 0.5:
            raise ValueError(f"ratio_jitter must be in [0, 0.5), got {self.ratio_jitter}")
        if self.fft_workers < 1:
            raise ValueError(f"fft_workers must be >= 1, got {self.fft_workers}")


@dataclass(frozen=True, kw_only=True)
class SynTumorRecord:
    """Every drawn number of one SynTumor insertion.

    Attributes:
        size_class: the class drawn for (``"given"`` when the caller gave the mask).
        radii / centre / elastic_sigma / elastic_seed: the deformed ellipsoid's (empty / 0 for a
            given mask); :func:`ellipsoid` rebuilds its shape.
        sigma_a, sigma_b, prob_scale, prob_base, u0, texture_seed: the texture.
        edge_sigma: blur of the mask at blending.
        ratio, pre_factor: target post/pre ratio and pre tumor/ring factor.
        amp_pre, amp_post: additive amplitudes written (per channel). Either may be negative: with a drawn
            pre factor < 1 over enhancing tissue, the tumor is darker than its background in both phases,
            and the drawn ratio still holds.
        bbox_start / bbox_stop: the box the texture lives in.
        measured_ratio: mean post / mean pre inside the tumor after insertion.
    """

    size_class: str
    radii: tuple[float, ...] = ()
    centre: tuple[int, ...] = ()
    elastic_sigma: float = 0.0
    elastic_seed: int = 0
    sigma_a: float = 3.0
    sigma_b: float = 3.0
    prob_scale: float = 0.2
    prob_base: float = 0.05
    u0: float = 0.5
    texture_seed: int = 0
    edge_sigma: float = 1.0
    ratio: float = 2.0
    pre_factor: float = 1.0
    amp_pre: float = 0.0
    amp_post: float = 0.0
    bbox_start: tuple[int, int, int] = (0, 0, 0)
    bbox_stop: tuple[int, int, int] = (0, 0, 0)
    measured_ratio: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynTumorRecord:
        return config_from_dict(cls, data)


# ----------------------------------------------------------------------------- enhancement statistics
def _ring(mask: np.ndarray, inner: float, outer: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """Box around ``mask`` and the voxels at distance (inner, outer] from it inside that box."""
    pad = int(np.ceil(outer)) + 1
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    box = tuple(
        slice(max(0, int(i[0]) - pad), min(d, int(i[-1]) + 1 + pad)) for i, d in zip(idx, mask.shape, strict=True)
    )
    dist = ndimage.distance_transform_edt(~mask[box])
    return box, (dist > inner) & (dist <= outer)


#: Case attribute where ``data prepare`` records the tumor's enhancement (:func:`enhancement_record`), so that
#: :meth:`EnhancementStats.from_store` reads it instead of every case's arrays at each ``generate``.
ENHANCEMENT_ATTR = "tumor_enhancement"
#: Changes whenever :meth:`EnhancementStats.measure` does: records of another version are measured again.
ENHANCEMENT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class EnhancementStats:
    """Measured enhancement of real tumors (one entry per tumor case).

    Attributes:
        ratios: mean post / mean pre inside the tumor.
        pre_factors: mean pre inside the tumor / mean pre in a 2–5 mm ring around it (body only).
        post_factors: the same for post (reported, not drawn).
        cases: source case ids.
    """

    ratios: tuple[float, ...]
    pre_factors: tuple[float, ...]
    post_factors: tuple[float, ...] = ()
    cases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.ratios:
            raise ValueError("ratios must hold at least one measured tumor")
        if len(self.pre_factors) != len(self.ratios):
            raise ValueError(f"pre_factors ({len(self.pre_factors)}) and ratios ({len(self.ratios)}) differ in length")
        if any(not np.isfinite(r) or r <= 0 for r in self.ratios):
            raise ValueError("ratios must be finite and positive")

    @classmethod
    def default(cls) -> EnhancementStats:
        """Typical DCE values (post/pre 1.8–3.0, pre near-iso) for use without data."""
        return cls(ratios=(1.8, 2.1, 2.4, 2.7, 3.0), pre_factors=(0.85, 0.95, 1.0, 1.05, 1.1))

    @staticmethod
    def measure(
        image: np.ndarray, mask: np.ndarray, *, body_threshold: float = 0.05
    ) -> tuple[float, float, float] | None:
        """(post/pre ratio, pre factor, post factor) of one tumor, None if it cannot be measured.

        Args:
            image: (2, X, Y, Z) pre/post.
            mask: (X, Y, Z) tumor mask.
        """
        m = np.asarray(mask) > 0
        if m.sum() < 2:
            return None
        pre = np.asarray(image[0], dtype=np.float32)
        post = np.asarray(image[1], dtype=np.float32)
        pre_t, post_t = float(pre[m].mean()), float(post[m].mean())
        if pre_t <= 1e-6:
            return None
        box, ring = _ring(m, 2.0, 5.0)
        ring &= np.maximum(pre[box], post[box]) > body_threshold
        if ring.sum() < 4:
            return None
        pre_r, post_r = float(pre[box][ring].mean()), float(post[box][ring].mean())
        if pre_r <= 1e-6 or post_r <= 1e-6:
            return None
        return post_t / pre_t, pre_t / pre_r, post_t / post_r

    @classmethod
    def from_store(
        cls,
        prepared: Any,
        *,
        splits: tuple[str | None, ...] | None = None,
        max_cases: int | None = None,
        progress: ProgressFn | None = None,
        use_stored: bool = True,
    ) -> EnhancementStats:
        """Measure every tumor case of a prepared store (location or open CaseStore).

        A case whose attributes hold the record ``data prepare`` writes (:data:`ENHANCEMENT_ATTR`, same
        :data:`ENHANCEMENT_VERSION`) is taken from it; any other case is measured from its arrays. Both give the
        same numbers (the record is :meth:`measure` of the arrays as stored), the record without reading them.

        Args:
            use_stored: ``False`` measures every case from its arrays.

        Raises:
            ValueError: if no tumor could be measured.
        """
        from synbt_factory.store import CaseStore

        store = prepared if isinstance(prepared, CaseStore) else CaseStore.open(prepared)
        ids = store.case_ids()
        attrs: dict[str, dict[str, Any]] = {}  # read once per case, only for the cases used

        def case_attrs(case_id: str) -> dict[str, Any]:
            if case_id not in attrs:
                attrs[case_id] = store.case_attrs(case_id)
            return attrs[case_id]

        if splits is not None:
            ids = [c for c in ids if case_attrs(c).get("split") in splits]
        if max_cases is not None:
            ids = ids[:max_cases]
        ratios, pres, posts, cases = [], [], [], []
        from_arrays = 0
        for i, case_id in enumerate(ids, start=1):
            record = case_attrs(case_id).get(ENHANCEMENT_ATTR) if use_stored else None
            if isinstance(record, dict) and record.get("version") == ENHANCEMENT_VERSION:
                got = record.get("value")
            else:
                arrays, _ = store.read_case(case_id, ("image", "mask"))
                got = cls.measure(arrays["image"], arrays["mask"])
                from_arrays += 1
            if got is not None:
                ratios.append(float(got[0]))
                pres.append(float(got[1]))
                posts.append(float(got[2]))
                cases.append(case_id)
            report(progress, i, len(ids), {"measured": float(len(ratios))})
        if from_arrays and use_stored:
            log.info(
                "%d of %d cases of %s measured from their arrays (no enhancement record; 'synbt data prepare' "
                "writes one)",
                from_arrays,
                len(ids),
                store.location,
            )
        if not ratios:
            raise ValueError(f"no tumor could be measured in {store.location}; the store needs cases with tumors")
        return cls(ratios=tuple(ratios), pre_factors=tuple(pres), post_factors=tuple(posts), cases=tuple(cases))

    def sample(self, rng: np.random.Generator, *, jitter: float = 0.05) -> tuple[float, float]:
        """(ratio, pre factor) of one real tumor, each × U(1 ± jitter)."""
        i = int(rng.integers(0, len(self.ratios)))
        j = rng.uniform(1.0 - jitter, 1.0 + jitter, size=2)
        return float(self.ratios[i] * j[0]), float(self.pre_factors[i] * j[1])

    def summary(self) -> dict[str, float]:
        r = np.asarray(self.ratios)
        p = np.asarray(self.pre_factors)
        return {
            "n": float(r.size),
            "ratio_median": float(np.median(r)),
            "ratio_p10": float(np.quantile(r, 0.1)),
            "ratio_p90": float(np.quantile(r, 0.9)),
            "pre_factor_median": float(np.median(p)),
        }

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnhancementStats:
        return config_from_dict(cls, data)

    def save(self, path: Path) -> Path:
        import json

        path = Path(path)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, path: Path) -> EnhancementStats:
        import json

        return cls.from_dict(json.loads(Path(path).read_text()))


# ----------------------------------------------------------------------------- pieces
def _fft_blur(field_: np.ndarray, sigma: float, workers: int) -> np.ndarray:
    """Periodic Gaussian blur of a 3D float32 field (exact Gaussian transfer function)."""
    spec = sfft.rfftn(field_, workers=workers)
    shape = field_.shape
    freqs = [sfft.fftfreq(shape[0]), sfft.fftfreq(shape[1]), sfft.rfftfreq(shape[2])]
    k = -2.0 * (np.pi * sigma) ** 2
    g = [np.exp(k * f.astype(np.float64) ** 2).astype(np.float32) for f in freqs]
    spec *= g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    return sfft.irfftn(spec, s=shape, workers=workers).astype(np.float32, copy=False)


def texture(
    shape: tuple[int, int, int],
    *,
    seed: int,
    sigma_a: float,
    sigma_b: float,
    prob_scale: float = 0.2,
    prob_base: float = 0.05,
    u0: float = 0.5,
    workers: int = 1,
) -> np.ndarray:
    """SynTumor texture (X, Y, Z) float32 in [0, 1]; deterministic in its arguments.

    uniform noise → blur σ_a → min–max to [base, base + scale] (probabilities) → Bernoulli →
    blur σ_b → β-scaled so the mean over values > 0.12 equals ``u0`` → clipped to [0, 1].
    """
    rng = np.random.default_rng(seed)
    noise = rng.random(shape, dtype=np.float32)
    a = _fft_blur(noise, sigma_a, workers)
    lo, hi = float(a.min()), float(a.max())
    prob = prob_scale * (a - lo) / max(hi - lo, 1e-12) + prob_base
    b = (prob > rng.random(shape, dtype=np.float32)).astype(np.float32)
    b = _fft_blur(b, sigma_b, workers)
    sel = b > 0.12
    mean = float(b[sel].mean()) if sel.any() else float(b.mean())
    beta = u0 / max(mean, 1e-6)
    return np.clip(beta * b, 0.0, 1.0)


def blurred_mask(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Blending weight (same shape, float32): the mask Gaussian-blurred with ``truncate=4``.

    Exactly zero farther than ``int(4σ + 0.5)`` voxels (per axis) from the mask.
    """
    return ndimage.gaussian_filter(np.asarray(mask, dtype=np.float32), sigma, truncate=4.0, mode="constant")


def ellipsoid(
    radii: tuple[float, float, float],
    *,
    elastic_sigma: float = 0.0,
    elastic_seed: int = 0,
    elastic_points: int = 3,
    single: bool = True,
) -> np.ndarray:
    """A solid, elastically deformed ellipsoid (uint8), centred in its box.

    The implicit ellipsoid is evaluated at displaced coordinates ``x + d(x)``, ``d`` a smooth
    field (cubic spline through ``elastic_points``³ Gaussian control displacements of std
    ``elastic_sigma`` voxels, seeded by ``elastic_seed``); with ``single`` only the largest
    26-connected component is kept.
    Box edge per axis: 2·ceil(r + 3σ) + 3.
    """
    half = [int(np.ceil(r + 3.0 * elastic_sigma)) + 1 for r in radii]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    if elastic_sigma > 0:
        box = tuple(2 * h + 1 for h in half)
        disp = spline_field(box, elastic_points, np.random.default_rng(elastic_seed), channels=3)  # type: ignore[arg-type]
        disp *= np.float32(elastic_sigma)
        coords = [g.astype(np.float32) + disp[i] for i, g in enumerate(grids)]
    else:
        coords = [g.astype(np.float32) for g in grids]
    inside = sum((c / np.float32(r)) ** 2 for c, r in zip(coords, radii, strict=True)) <= 1.0
    if single and elastic_sigma > 0:
        inside = largest_component(inside)
    return inside.astype(np.uint8)


# ----------------------------------------------------------------------------- insertion
def _draw_texture_params(rng: np.random.Generator, config: SynTumorConfig) -> dict[str, float | int]:
    sigma_b_range = config.sigma_b_small if rng.random() < config.p_sigma_b_small else config.sigma_b_large
    return {
        "sigma_a": float(rng.uniform(*config.sigma_a)),
        "sigma_b": float(rng.uniform(*sigma_b_range)),
        "prob_scale": float(rng.uniform(*config.prob_scale)),
        "prob_base": float(rng.uniform(*config.prob_base)),
        "u0": float(rng.uniform(*config.u0)),
        "texture_seed": int(rng.integers(0, 2**31 - 1)),
        "edge_sigma": float(rng.uniform(*config.edge_sigma)),
    }


def _own_shape(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    size_class: str,
    region: np.ndarray,
    avoid: np.ndarray | None,
    config: SynTumorConfig,
) -> tuple[np.ndarray, dict[str, Any]]:
    """An elastically deformed ellipsoid centred on a ``region`` voxel, clipped to ``region``."""
    k = SIZE_CLASSES.index(size_class)
    base = config.radius[k]
    radii = tuple(float(base * rng.uniform(*config.radius_jitter)) for _ in range(3))
    sigma = float(rng.uniform(*config.elastic_sigma[k]))
    seed = int(rng.integers(0, 2**31 - 1))
    # one component is kept after clipping to the region, below
    geo = ellipsoid(radii, elastic_sigma=sigma, elastic_seed=seed, single=False).astype(bool)  # type: ignore[arg-type]
    allowed = region if avoid is None else region & ~avoid
    cand = np.flatnonzero(allowed)
    if cand.size == 0:
        raise ValueError("no voxel to centre a SynTumor tumor on: the region is empty (or all next to a tumor)")
    centre = np.asarray(np.unravel_index(int(cand[int(rng.integers(0, cand.size))]), shape))
    start = centre - np.asarray(geo.shape) // 2
    src = tuple(slice(max(0, -s), g - max(0, s + g - d)) for s, g, d in zip(start, geo.shape, shape, strict=True))
    dst = tuple(slice(max(0, s), min(d, s + g)) for s, g, d in zip(start, geo.shape, shape, strict=True))
    piece = largest_component(geo[src] & allowed[dst])  # clipped to the region, in the box only
    out = np.zeros(shape, dtype=bool)
    out[dst] = piece
    if not piece.any():
        out[tuple(centre)] = True
    return out, {"radii": radii, "centre": tuple(int(c) for c in centre), "elastic_sigma": sigma, "elastic_seed": seed}


def _apply(
    image: np.ndarray,
    tumor: np.ndarray,
    params: dict[str, Any],
    ratio: float,
    pre_factor: float,
    config: SynTumorConfig,
    in_place: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Write texture × blurred mask × amplitudes into a copy of ``image`` (into ``image`` itself with ``in_place``);
    returns it and the derived numbers."""
    shape = tumor.shape
    reach = int(4.0 * params["edge_sigma"] + 0.5) + 1
    idx = [np.flatnonzero(tumor.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    start = [max(0, int(i[0]) - reach) for i in idx]
    stop = [min(d, int(i[-1]) + 1 + reach) for i, d in zip(idx, shape, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    t_box = tumor[box]
    weight = blurred_mask(t_box, params["edge_sigma"])
    tex = texture(
        t_box.shape,
        seed=params["texture_seed"],
        sigma_a=params["sigma_a"],
        sigma_b=params["sigma_b"],
        prob_scale=params["prob_scale"],
        prob_base=params["prob_base"],
        u0=params["u0"],
        workers=config.fft_workers,
    )
    mod = tex * weight
    m = float(mod[t_box].mean())
    pre_bg = float(image[0][box][t_box].mean())
    post_bg = float(image[1][box][t_box].mean())
    target_pre = pre_factor * pre_bg
    target_post = ratio * target_pre
    amp_pre = (target_pre - pre_bg) / max(m, 1e-6)
    amp_post = (target_post - post_bg) / max(m, 1e-6)
    out = image if in_place else np.array(image, dtype=np.float32, copy=True)
    touched = mod > 0
    for c, amp in ((0, amp_pre), (1, amp_post)):
        view = out[c][box]
        view += amp * mod
        np.maximum(view, 0.0, out=view, where=touched)
    new_pre = float(out[0][box][t_box].mean())
    new_post = float(out[1][box][t_box].mean())
    derived = {
        "amp_pre": float(amp_pre),
        "amp_post": float(amp_post),
        "bbox_start": tuple(start),
        "bbox_stop": tuple(stop),
        "measured_ratio": new_post / new_pre if new_pre > 1e-6 else 0.0,
    }
    return out, derived


def syntumor_insert(
    image: np.ndarray,
    mask: np.ndarray | None,
    rng: np.random.Generator,
    stats: EnhancementStats,
    size_class: str = "small",
    *,
    region: np.ndarray | None = None,
    avoid: np.ndarray | None = None,
    config: SynTumorConfig | None = None,
    in_place: bool = False,
) -> tuple[np.ndarray, np.ndarray, SynTumorRecord]:
    """Insert one SynTumor tumor into a pre/post image.

    Args:
        image: (2, X, Y, Z) float32, channel 0 pre-contrast, 1 post-contrast (not modified unless ``in_place``).
        mask: (X, Y, Z) tumor mask to texture (e.g. from bank placement), or None to draw
            SynTumor's own deformed ellipsoid of ``size_class``.
        rng: the only source of randomness.
        stats: real tumors' enhancement, from which (ratio, pre factor) are drawn.
        size_class: ``tiny`` | ``small`` | ``medium`` | ``large`` (own shapes only).
        region: (X, Y, Z) where an own shape may lie (default: the body, from intensity).
        avoid: (X, Y, Z) voxels an own shape must not touch (e.g. a dilated real tumor).
        config: SynTumor ranges.
        in_place: write the tumor into ``image`` itself (a writable float32 array) instead of a copy; the
            returned image is then ``image``, with the values a copy would hold.

    Returns:
        new_image (2, X, Y, Z) float32, tumor_mask (X, Y, Z) uint8, record. Voxels where the
        blurred mask (:func:`blurred_mask` of tumor_mask with ``record.edge_sigma``) is zero
        are bit-identical to ``image``.
    """
    config = config or SynTumorConfig()
    image = np.asarray(image)
    if image.ndim != 4 or image.shape[0] != 2:
        raise ValueError(f"image must be (2, X, Y, Z), got {image.shape}")
    if in_place and (image.dtype != np.float32 or not image.flags.writeable):
        raise ValueError(f"in_place needs a writable float32 image, got {image.dtype}")
    shape = tuple(int(s) for s in image.shape[1:])
    if mask is not None:
        tumor = np.asarray(mask) > 0
        if tumor.shape != shape:
            raise ValueError(f"mask {tumor.shape} does not match image {shape}")
        if not tumor.any():
            raise ValueError("the given tumor mask is empty")
        shape_info: dict[str, Any] = {"radii": (), "centre": (), "elastic_sigma": 0.0, "elastic_seed": 0}
        size_label = "given"
    else:
        if size_class not in SIZE_CLASSES:
            raise ValueError(f"size_class must be one of {SIZE_CLASSES}, got {size_class!r}")
        if region is None:
            from synbt_factory.synthesis.placement import body_mask

            region = ndimage.binary_erosion(body_mask(image), iterations=3)
        tumor, shape_info = _own_shape(
            rng,
            shape,
            size_class,
            np.asarray(region, dtype=bool),
            None if avoid is None else np.asarray(avoid, dtype=bool),
            config,
        )
        size_label = size_class
    params = _draw_texture_params(rng, config)
    ratio, pre_factor = stats.sample(rng, jitter=config.ratio_jitter)
    new_image, derived = _apply(image, tumor, params, ratio, pre_factor, config, in_place)
    record = SynTumorRecord(
        size_class=size_label, ratio=ratio, pre_factor=pre_factor, **shape_info, **params, **derived
    )
    return new_image, tumor.astype(np.uint8), record


def syntumor_replay(
    image: np.ndarray, tumor_mask: np.ndarray, record: SynTumorRecord, config: SynTumorConfig | None = None
) -> np.ndarray:
    """Rebuild the image of ``record`` from the background and the tumor mask (deterministic)."""
    config = config or SynTumorConfig()
    params = {
        k: getattr(record, k)
        for k in ("sigma_a", "sigma_b", "prob_scale", "prob_base", "u0", "texture_seed", "edge_sigma")
    }
    out, _ = _apply(np.asarray(image), np.asarray(tumor_mask) > 0, params, record.ratio, record.pre_factor, config)
    return out


def enhancement_record(image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """The :data:`ENHANCEMENT_ATTR` record of one case: ``{"version", "value"}``, ``value`` being
    :meth:`EnhancementStats.measure` of ``image`` (2, X, Y, Z) and ``mask`` (X, Y, Z) as stored (``None`` when
    the tumor cannot be measured, e.g. a healthy case)."""
    got = EnhancementStats.measure(image, mask)
    return {"version": ENHANCEMENT_VERSION, "value": None if got is None else [float(v) for v in got]}
