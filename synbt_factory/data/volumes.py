"""Reading VQ-VAE training inputs from a prepared store: random patches and whole volumes.

Each sample is Concat(X_pre, X_post) (paper Sec. 2.1) with X_post a random post-contrast
phase during training (``phases`` when the case has it, else ``image[1]``) and the first
post-contrast phase for evaluation. Only the requested region is read from Zarr, so memory
stays flat however many cases the store holds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from synbt_factory.store import CaseStore

__all__ = ["select_cases", "PreparedVolumes", "sample_patch_batch", "sample_volume_batch", "pad_to_multiple"]

log = logging.getLogger(__name__)


def select_cases(store: CaseStore, *, splits: Sequence[str | None], case_ids: Sequence[str] | None = None) -> list[str]:
    """Complete cases of ``store`` whose ``split`` attribute is in ``splits`` (or exactly ``case_ids``).

    Raises:
        ValueError: naming the store and the split when nothing matches, or an unknown case id.
    """
    available = store.case_ids()
    if case_ids:
        missing = [c for c in case_ids if c not in available]
        if missing:
            raise ValueError(f"case(s) {', '.join(missing)} are not complete cases of {store.location}")
        return list(case_ids)
    chosen = [c for c in available if store.case_attrs(c).get("split") in splits]
    if not chosen:
        raise ValueError(
            f"no case of {store.location} has split in {list(splits)} ({len(available)} complete cases); "
            "prepare data with a split or pass case ids"
        )
    return chosen


class PreparedVolumes:
    """Region reads of prepared cases: (2, ...) float32 = (pre, chosen post-contrast phase).

    Args:
        store: a prepared :class:`CaseStore`.
        case_ids: the cases to read from.
    """

    def __init__(self, store: CaseStore, case_ids: Sequence[str]) -> None:
        if not case_ids:
            raise ValueError("case_ids must not be empty")
        self.store = store
        self.case_ids = list(case_ids)
        self._arrays: dict[tuple[str, str], Any] = {}
        self._shapes: dict[str, tuple[int, int, int]] = {}
        self._num_phases: dict[str, int] = {}
        self._tumor_voxels: dict[str, np.ndarray] = {}

    def _array(self, case_id: str, name: str) -> Any:
        key = (case_id, name)
        if key not in self._arrays:
            self._arrays[key] = self.store.open_array(case_id, name)
        return self._arrays[key]

    def shape(self, case_id: str) -> tuple[int, int, int]:
        """Spatial shape (X, Y, Z) of a case."""
        if case_id not in self._shapes:
            self._shapes[case_id] = tuple(int(s) for s in self._array(case_id, "image").shape[1:])  # type: ignore[assignment]
        return self._shapes[case_id]

    def num_phases(self, case_id: str) -> int:
        """Post-contrast phases available (``phases`` length, or 1 = ``image[1]`` only)."""
        if case_id not in self._num_phases:
            names = self.store.array_names(case_id)
            self._num_phases[case_id] = int(self._array(case_id, "phases").shape[0]) if "phases" in names else 1
        return self._num_phases[case_id]

    def tumor_voxels(self, case_id: str) -> np.ndarray:
        """(N, 3) int coordinates of the case's tumor voxels (``mask`` > 0; empty without a tumor). Cached."""
        if case_id not in self._tumor_voxels:
            has_mask = "mask" in self.store.array_names(case_id)
            mask = np.asarray(self._array(case_id, "mask")[...]) if has_mask else np.zeros((0, 0, 0), np.uint8)
            self._tumor_voxels[case_id] = np.argwhere(mask > 0).astype(np.int32)
        return self._tumor_voxels[case_id]

    def _region(
        self, case_id: str, start: Sequence[int] | None, size: Sequence[int] | None
    ) -> tuple[tuple[slice, ...], tuple[int, ...]]:
        """(spatial slices clipped to the volume, requested size) of a region read."""
        shape = self.shape(case_id)
        start = tuple(start) if start is not None else (0, 0, 0)
        size = tuple(size) if size is not None else shape
        return tuple(slice(s, min(s + n, d)) for s, n, d in zip(start, size, shape, strict=True)), size

    @staticmethod
    def _pad_back(region: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        """Zero-pad the last three axes of a clipped region back to ``size``."""
        if region.shape[-3:] == size:
            return region
        pad = [(0, 0)] * (region.ndim - 3) + [(0, n - r) for n, r in zip(size, region.shape[-3:], strict=True)]
        return np.pad(region, pad)

    def read_mask(self, case_id: str, *, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """``size`` uint8 region of the tumor mask (zeros without one), clipped and zero-padded like :meth:`read`."""
        sl, size = self._region(case_id, start, size)
        if "mask" not in self.store.array_names(case_id):
            return np.zeros(size, np.uint8)
        return self._pad_back((np.asarray(self._array(case_id, "mask")[sl]) > 0).astype(np.uint8), size)

    def tumor_cases(self) -> list[str]:
        """The cases with at least one tumor voxel (reads every mask once)."""
        return [c for c in self.case_ids if len(self.tumor_voxels(c))]

    def read(
        self, case_id: str, *, phase: int = 0, start: Sequence[int] | None = None, size: Sequence[int] | None = None
    ) -> np.ndarray:
        """(2, *size) float32 region: channel 0 pre-contrast, channel 1 post-contrast phase ``phase``.

        The region is clipped to the volume and zero-padded back to ``size`` (for volumes smaller than a patch).
        """
        sl, size = self._region(case_id, start, size)
        pre = self._array(case_id, "image")[(0, *sl)]
        if phase == 0 or self.num_phases(case_id) == 1:
            if phase != 0:
                raise ValueError(f"case {case_id} has one post-contrast phase, asked for phase {phase}")
            post = self._array(case_id, "image")[(1, *sl)]
        else:
            post = self._array(case_id, "phases")[(phase, *sl)]
        return self._pad_back(np.stack([np.asarray(pre), np.asarray(post)]).astype(np.float32), size)


def sample_patch_batch(
    volumes: PreparedVolumes,
    rng: np.random.Generator,
    *,
    batch_size: int,
    size: Sequence[int],
    tumor_fraction: float = 0.0,
    masks_out: list[np.ndarray] | None = None,
) -> np.ndarray:
    """A batch of random crops (B, 2, *size), each from a random case with a random post-contrast phase.

    Draws, per sample and in this order: case, phase, start per axis (uniform over valid starts).
    With ``tumor_fraction`` > 0 each sample first draws u ~ U[0, 1); when u < ``tumor_fraction`` the
    crop comes from a tumor-bearing case and contains one of its tumor voxels, drawn uniformly
    (case, phase, voxel, then a start per axis uniform over the starts that keep the voxel inside).
    Tumors fill well under 1 % of a breast MRI, so a small dataset sampled uniformly may leave the
    codebook without codes for enhancing tissue.

    ``masks_out``, when given, receives the (*size) uint8 tumor mask of each crop, in batch order (reading
    masks draws nothing, so the images are the same with or without it).
    """
    if not 0.0 <= tumor_fraction <= 1.0:
        raise ValueError(f"tumor_fraction must be in [0, 1], got {tumor_fraction}")
    tumor_cases = volumes.tumor_cases() if tumor_fraction > 0 else []
    out = np.empty((batch_size, 2, *size), dtype=np.float32)
    for b in range(batch_size):
        if tumor_cases and rng.random() < tumor_fraction:
            case = tumor_cases[int(rng.integers(len(tumor_cases)))]
            phase = int(rng.integers(volumes.num_phases(case)))
            voxels = volumes.tumor_voxels(case)
            centre = voxels[int(rng.integers(len(voxels)))]
            shape = volumes.shape(case)
            start = []
            for c, d, n in zip(centre, shape, size, strict=True):
                low, high = max(int(c) - n + 1, 0), min(int(c), max(d - n, 0))
                start.append(int(rng.integers(low, max(high, low) + 1)))
        else:
            case = volumes.case_ids[int(rng.integers(len(volumes.case_ids)))]
            phase = int(rng.integers(volumes.num_phases(case)))
            shape = volumes.shape(case)
            start = [int(rng.integers(max(d - n, 0) + 1)) for d, n in zip(shape, size, strict=True)]
        out[b] = volumes.read(case, phase=phase, start=start, size=size)
        if masks_out is not None:
            masks_out.append(volumes.read_mask(case, start=start, size=size))
    return out


def pad_to_multiple(array: np.ndarray, multiple: int) -> np.ndarray:
    """Zero-pad the last three axes of ``array`` at their far end up to a multiple of ``multiple``.

    The one padding helper of ``data/`` (VQ-VAE volumes, diffusion latents, evaluation). MONAI's
    ``DivisiblePad(k, method="end")`` gives the same values, but only for channel-first arrays and as a
    torch ``MetaTensor``; this keeps NumPy arrays of any leading shape and returns ``array`` itself when
    nothing needs padding.

    Args:
        array: (..., X, Y, Z) array (mask (X, Y, Z), image (C, X, Y, Z) or batch (B, C, X, Y, Z)).
        multiple: every spatial size is rounded up to a multiple of this.

    Returns:
        (..., X', Y', Z') array of the same dtype, zeros in the added voxels.
    """
    pad = [(0, 0)] * (array.ndim - 3) + [(0, -s % multiple) for s in array.shape[-3:]]
    return np.pad(array, pad) if any(p[1] for p in pad) else array


def sample_volume_batch(
    volumes: PreparedVolumes,
    rng: np.random.Generator,
    *,
    batch_size: int,
    crop: Sequence[int] | None,
    multiple: int,
    masks_out: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Whole volumes (``crop`` None, batch 1) or random crops of size ``crop``, padded to a multiple of ``multiple``.

    ``masks_out``, when given, receives each sample's tumor mask, padded the same way.

    Returns:
        (B, 2, X', Y', Z') float32.
    """
    if crop is None:
        if batch_size != 1:
            raise ValueError("whole-volume batches need batch_size 1 (volumes differ in size); set a crop instead")
        case = volumes.case_ids[int(rng.integers(len(volumes.case_ids)))]
        phase = int(rng.integers(volumes.num_phases(case)))
        if masks_out is not None:
            mask = volumes.read_mask(case, start=(0, 0, 0), size=volumes.shape(case))
            masks_out.append(pad_to_multiple(mask, multiple))
        return pad_to_multiple(volumes.read(case, phase=phase), multiple)[None]
    masks: list[np.ndarray] | None = [] if masks_out is not None else None  # read masks only when asked
    batch = sample_patch_batch(volumes, rng, batch_size=batch_size, size=crop, masks_out=masks)
    if masks_out is not None and masks is not None:
        masks_out.extend(pad_to_multiple(m, multiple) for m in masks)
    return pad_to_multiple(batch, multiple)
