"""Diffusion training data: precomputed latents of tumor-present prepared cases, and latent crops.

For every case the frozen autoencoder runs once (paper Fig. 2): the target z₀ is the
normalised quantised latent of the whole volume, the condition Z_cond = cat(Z_masked, down(M))
with Z_masked the latent of the volume with the dilated tumor region removed
(:func:`synbt_factory.models.diffusion.build_condition`). Latents live in memory during
training and in a small ``.npz`` cache per case in the run folder, keyed by the autoencoder's
identity, the latent normalisation, the conditioning settings and the case's array checksums,
so training steps only run the denoiser and a resumed run skips the encoding.

A case can also be encoded mirrored (:func:`flip_variants`): the mirrored image goes through the
encoder, so each version is a latent the autoencoder really produces, not a mirrored latent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synbt_factory.data.volumes import pad_to_multiple
from synbt_factory.io import atomic_write
from synbt_factory.models.autoencoder import LatentAutoencoder, LatentNorm
from synbt_factory.models.diffusion import DiffusionConfig, build_condition
from synbt_factory.progress import ProgressFn, report
from synbt_factory.store import CaseStore

__all__ = [
    "LatentCase",
    "select_tumor_cases",
    "flip_variants",
    "precompute_latents",
    "latent_statistics",
    "renormalise",
    "effective_crop",
    "sample_crop_batch",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatentCase:
    """One case in latent space (CPU float32 tensors).

    Attributes:
        case_id: the prepared case.
        z0: (C, x, y, z) normalised latent of the whole volume (the diffusion target).
        cond: (C + 1, x, y, z) = cat(Z_masked, down(M)).
        flip: image axes (X, Y, Z = 0, 1, 2) the case was mirrored along before encoding.
    """

    case_id: str
    z0: torch.Tensor
    cond: torch.Tensor
    flip: tuple[int, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.z0.shape[1:])  # type: ignore[return-value]

    def tumor_box(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Inclusive (lo, hi) latent bounding box of down(M) > 0, or None without tumor."""
        idx = torch.nonzero(self.cond[-1] > 0)
        if idx.numel() == 0:
            return None
        return idx.min(0).values.numpy(), idx.max(0).values.numpy()


def select_tumor_cases(
    store: CaseStore, *, splits: Sequence[str | None] = ("train",), case_ids: Sequence[str] | None = None
) -> list[str]:
    """Complete cases in ``splits`` (or exactly ``case_ids``) whose ``mask`` has a tumor voxel.

    Raises:
        ValueError: naming the store when no case qualifies or an id is unknown.
    """
    available = store.case_ids()
    if case_ids:
        missing = [c for c in case_ids if c not in available]
        if missing:
            raise ValueError(f"case(s) {', '.join(missing)} are not complete cases of {store.location}")
        chosen = list(case_ids)
    else:
        chosen = [c for c in available if store.case_attrs(c).get("split") in splits]
    with_tumor = [c for c in chosen if bool(np.any(store.read_array(c, "mask")))]
    if not with_tumor:
        raise ValueError(
            f"no tumor-present case in {store.location} (split in {list(splits)}, {len(chosen)} candidate(s)); "
            "the diffusion model trains on cases whose mask is not empty"
        )
    if len(with_tumor) < len(chosen):
        log.info("%d of %d cases have an empty mask and are skipped", len(chosen) - len(with_tumor), len(chosen))
    return with_tumor


def flip_variants(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes``, the empty one (the case as stored) first: (0, 2) → [(), (0,), (2,), (0, 2)]."""
    axes = sorted(set(int(a) for a in axes))
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"flip axes must be image axes 0, 1 or 2, got {axes}")
    return [tuple(a for i, a in enumerate(axes) if bits >> i & 1) for bits in range(2 ** len(axes))]


def _cache_key(
    store: CaseStore,
    case_id: str,
    autoencoder_id: str,
    norm: LatentNorm,
    config: DiffusionConfig,
    flip: tuple[int, ...] = (),
) -> str:
    sha = store.case_attrs(case_id).get("sha256", {})
    return json.dumps(
        {
            "flip": list(flip),
            "autoencoder": autoencoder_id,
            "latent_norm": [norm.shift, norm.scale],
            "mask_dilation": config.mask_dilation,
            "fill": config.fill,
            "mask_down": config.mask_down,
            "image": sha.get("image"),
            "mask": sha.get("mask"),
        },
        sort_keys=True,
    )


def _load_cached(path: Path, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            return torch.from_numpy(data["z0"].copy()), torch.from_numpy(data["cond"].copy())
    except (OSError, KeyError, ValueError) as exc:
        log.warning("ignoring unreadable latent cache %s (%s)", path, exc)
        return None


def _save_cached(path: Path, key: str, z0: torch.Tensor, cond: torch.Tensor) -> None:
    """Cache one case's latents atomically (a unique temporary file: parallel runs may fill the same cache)."""
    atomic_write(
        path, lambda fh: np.savez(fh, key=np.array(key), z0=z0.numpy(), cond=cond.numpy()), fsync=False, unique=True
    )


def precompute_latents(
    store: CaseStore,
    case_ids: Sequence[str],
    autoencoder: LatentAutoencoder,
    norm: LatentNorm,
    config: DiffusionConfig,
    *,
    autoencoder_id: str,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
    flip_axes: Sequence[int] = (),
    progress: ProgressFn | None = None,
) -> list[LatentCase]:
    """Encode every case once (or read it from ``cache_dir``), and once more per mirrored version.

    Volumes are mirrored first (when asked), then zero-padded at the far end of each axis to a multiple of
    the latent factor. The image is (pre-contrast, first post-contrast) = ``image`` of the prepared case.

    Args:
        autoencoder: frozen, in eval mode, on ``device``.
        autoencoder_id: identity of the autoencoder for the cache key (the VQ-VAE checkpoint's sha256).
        cache_dir: folder of ``<case_id>[.flip<axes>].npz`` files; None keeps latents in memory only.
        flip_axes: each case is also encoded mirrored along every non-empty subset of these image axes
            (:func:`flip_variants`); () = the cases as stored.

    Returns:
        ``len(case_ids) × len(flip_variants(flip_axes))`` cases, each case's versions together.
    """
    device = torch.device(device)
    variants = flip_variants(flip_axes)
    out: list[LatentCase] = []
    total = len(case_ids) * len(variants)
    for case_id in case_ids:
        arrays: dict[str, np.ndarray] | None = None
        for flip in variants:
            key = _cache_key(store, case_id, autoencoder_id, norm, config, flip)
            name = case_id + (".flip" + "".join(str(a) for a in flip) if flip else "")
            path = Path(cache_dir) / f"{name}.npz" if cache_dir is not None else None
            cached = _load_cached(path, key) if path is not None else None
            if cached is None:
                if arrays is None:
                    arrays, _ = store.read_case(case_id, ("image", "mask"))
                z0, cond = _encode(autoencoder, norm, config, arrays, flip, device)
                if path is not None:
                    _save_cached(path, key, z0, cond)
                log.debug("encoded %s → latent %s", name, tuple(z0.shape))
            else:
                z0, cond = cached
            out.append(LatentCase(case_id=case_id, z0=z0, cond=cond, flip=flip))
            report(progress, len(out), total, {})
    return out


def _encode(
    autoencoder: LatentAutoencoder,
    norm: LatentNorm,
    config: DiffusionConfig,
    arrays: dict[str, np.ndarray],
    flip: tuple[int, ...],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z0 (C, x, y, z), cond (C + 1, x, y, z)) of one case mirrored along ``flip``, on the CPU."""
    f = autoencoder.downsample_factor
    image = np.ascontiguousarray(np.flip(arrays["image"].astype(np.float32), [1 + a for a in flip]))
    mask = np.ascontiguousarray(np.flip(arrays["mask"].astype(np.uint8), list(flip)))
    image_t = torch.from_numpy(pad_to_multiple(image, f))[None].to(device)
    mask_t = torch.from_numpy(pad_to_multiple(mask, f))[None].to(device)
    with torch.inference_mode():
        z0, cond = build_condition(autoencoder, norm, image_t, mask_t, config)
    return z0[0].float().cpu().clone(), cond[0].float().cpu().clone()


def latent_statistics(cases: Sequence[LatentCase]) -> tuple[float, float]:
    """Mean and standard deviation of every value of every case's z0 (float64)."""
    total, total_sq, count = 0.0, 0.0, 0
    for case in cases:
        z = case.z0.double()
        total, total_sq, count = total + float(z.sum()), total_sq + float((z * z).sum()), count + z.numel()
    mean = total / count
    return mean, max(total_sq / count - mean * mean, 0.0) ** 0.5


def renormalise(cases: Sequence[LatentCase], source: LatentNorm, target: LatentNorm) -> list[LatentCase]:
    """Latents normalised by ``source`` re-expressed under ``target``: z0 and the Z_masked channels of cond.

    down(M), the last channel of cond, is unchanged.
    """
    if source == target:
        return list(cases)

    def convert(z: torch.Tensor) -> torch.Tensor:
        return target.normalise(source.denormalise(z.double())).float()

    return [
        LatentCase(
            case_id=c.case_id, z0=convert(c.z0), cond=torch.cat([convert(c.cond[:-1]), c.cond[-1:]]), flip=c.flip
        )
        for c in cases
    ]


def effective_crop(cases: Sequence[LatentCase], crop: Sequence[int], divisor: int) -> tuple[int, int, int]:
    """``crop`` clipped to the smallest case and rounded down to a multiple of ``divisor`` per axis.

    Raises:
        ValueError: when some axis would become smaller than ``divisor``.
    """
    smallest = np.min([c.shape for c in cases], axis=0)
    eff = tuple(int(min(c, s) // divisor * divisor) for c, s in zip(crop, smallest, strict=True))
    if min(eff) < divisor:
        raise ValueError(
            f"latent crop {tuple(crop)} on latents as small as {tuple(int(s) for s in smallest)} leaves {eff}; "
            f"every axis must hold at least {divisor} latent voxels (the denoiser's size multiple)"
        )
    if eff != tuple(crop):
        log.info(
            "latent crop %s → %s (smallest case %s, multiple of %d)",
            tuple(crop),
            eff,
            tuple(int(s) for s in smallest),
            divisor,
        )
    return eff  # type: ignore[return-value]


def _tumor_start(rng: np.random.Generator, case: LatentCase, crop: Sequence[int]) -> list[int] | None:
    box = case.tumor_box()
    if box is None:
        return None
    lo_box, hi_box = box
    start = []
    for lo, hi, n, d in zip(lo_box, hi_box, crop, case.shape, strict=True):
        first, last = max(0, int(hi) + 1 - n), min(int(lo), d - n)
        if first <= last:  # the whole extent fits: any start keeping it inside
            start.append(int(rng.integers(first, last + 1)))
        else:  # tumor longer than the crop along this axis: a window lying inside its extent
            start.append(int(rng.integers(int(lo), int(hi) + 1 - n + 1)))
    return start


def sample_crop_batch(
    cases: Sequence[LatentCase],
    rng: np.random.Generator,
    *,
    batch_size: int,
    crop: Sequence[int],
    tumor_fraction: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of latent crops.

    Draws per sample, in order: case, whether the crop must contain the tumor (probability
    ``tumor_fraction``), then the crop start per axis (for tumor crops uniform over starts that
    contain the tumor's whole extent where it fits, else a window over it; uniform otherwise).

    Returns:
        z0 (B, C, *crop) and cond (B, C + 1, *crop), float32 CPU.
    """
    z0s, conds = [], []
    for _ in range(batch_size):
        case = cases[int(rng.integers(len(cases)))]
        want_tumor = bool(rng.random() < tumor_fraction)
        start = _tumor_start(rng, case, crop) if want_tumor else None
        if start is None:
            start = [int(rng.integers(d - n + 1)) for d, n in zip(case.shape, crop, strict=True)]
        sl = (slice(None),) + tuple(slice(s, s + n) for s, n in zip(start, crop, strict=True))
        z0s.append(case.z0[sl])
        conds.append(case.cond[sl])
    return torch.stack(z0s), torch.stack(conds)
