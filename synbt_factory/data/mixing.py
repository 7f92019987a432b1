"""Training samples from real cases mixed with stored (and on-the-fly) synthetic cases (paper Sec. 2.3).

A training sample is a random crop of one case: a real case from a prepared store, or — for a
fraction ``mix`` of the samples — a case of a generated store (``store_kind: "synthetic"``, same
case schema). A fraction ``onthefly_fraction`` of the real samples can first pass through an
on-the-fly synthesis hook (``(image, mask, rng) -> (image, mask)``, e.g. SynTumor insertion,
:class:`SynTumorHook`). Training uses the pre-contrast plus a random post-contrast phase
(``phases`` when present); validation and test use ``image`` as stored (phase 1), Sec. 3.1.

Everything random about sample ``index`` of epoch ``epoch`` derives from
``synbt_factory.rng.case_generator(seed, …)``, so a sample is identical whatever the batch size,
worker count or order in which samples are drawn:

* source: sample ``i`` is synthetic iff ``floor((i+1)·mix + u) > floor(i·mix + u)`` with a
  per-epoch offset ``u ∈ [0, 1)``; every batch of ``B`` consecutive samples then holds
  ``floor(B·mix)`` or ``ceil(B·mix)`` synthetic ones, and an epoch of ``N`` holds ``N·mix ± 1``;
* case: real (and synthetic) cases are visited in a per-epoch permutation, so each real case
  appears once per epoch when ``samples_per_epoch`` equals the number of real cases;
* phase, on-the-fly choice, crop centre and MONAI augmentations (flips, rotation, intensity scale
  and shift; the pipeline is re-seeded per sample with ``set_random_state``) use the sample's
  own stream.

Crops of ``crop`` voxels (X, Y, Z) (default 192×192×128 = the paper's 128×192×192 mm at 1 mm)
are centred on a tumor voxel with probability ``tumor_prob`` and otherwise on a non-tumor voxel
inside the imaged body (``image > 0``) — MONAI ``RandCropByPosNegLabeld``; smaller volumes are
zero-padded to the crop first (``SpatialPadd``).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from synbt_factory.rng import case_generator
from synbt_factory.store import CaseStore

__all__ = [
    "PAPER_CROP",
    "crop_for_store",
    "OnTheFly",
    "MixConfig",
    "MixedDataset",
    "CaseSplits",
    "case_splits",
    "load_case",
    "synthetic_case_ids",
    "SynTumorHook",
    "DEFAULT_VAL_FRACTION",
]

log = logging.getLogger(__name__)

#: ``(image (2, X, Y, Z) float32, mask (X, Y, Z) uint8, rng) -> (image, mask)``: a synthesis applied to a
#: real case before cropping; the returned mask must include the inserted tumor.
OnTheFly = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]

#: The paper splits the 306 non-training cases into 100 validation and 206 test cases.
DEFAULT_VAL_FRACTION = 100.0 / 306.0


@dataclass(frozen=True, kw_only=True)
class MixConfig:
    """How training samples are drawn and augmented.

    Args:
        crop: training crop (X, Y, Z) in voxels (1 mm); volumes smaller than it are zero-padded.
        mix: fraction of samples drawn from the synthetic store, in [0, 1].
        onthefly_fraction: fraction of real samples passed through the on-the-fly hook, in [0, 1].
        tumor_prob: probability a crop is centred on a tumor voxel (else on a non-tumor body voxel).
        random_phase: draw the post-contrast channel from ``phases`` (when present) in training.
        augment: apply the random flips / rotation / intensity scale and shift below.
        flip_prob: probability of a flip, per axis.
        rotate_prob: probability of a small rotation about each axis.
        rotate_degrees: maximum rotation angle (degrees) per axis.
        scale_prob: probability of an intensity scaling ``x·(1+f)``, ``f ~ U(-scale_factor, scale_factor)``.
        scale_factor: see ``scale_prob``.
        shift_prob: probability of an intensity shift ``x + o``, ``o ~ U(-shift_offset, shift_offset)``.
        shift_offset: see ``shift_prob``.
        samples_per_epoch: samples per epoch; ``None`` = the number of real training cases.
    """

    crop: tuple[int, int, int] = (192, 192, 128)
    mix: float = 0.0
    onthefly_fraction: float = 0.0
    tumor_prob: float = 0.5
    random_phase: bool = True
    augment: bool = True
    flip_prob: float = 0.5
    rotate_prob: float = 0.2
    rotate_degrees: float = 15.0
    scale_prob: float = 0.5
    scale_factor: float = 0.1
    shift_prob: float = 0.5
    shift_offset: float = 0.1
    samples_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if len(self.crop) != 3 or any(int(c) < 1 for c in self.crop):
            raise ValueError(f"crop must be three positive voxel counts, got {self.crop}")
        for name in ("mix", "onthefly_fraction", "tumor_prob", "flip_prob", "rotate_prob", "scale_prob", "shift_prob"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("rotate_degrees", "scale_factor", "shift_offset"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {self.samples_per_epoch}")


#: The paper's training crop (X Y Z voxels, its 128×192×192 field of view).
PAPER_CROP: tuple[int, int, int] = (192, 192, 128)


def crop_for_store(store: CaseStore, *, divisor: int = 16, paper: tuple[int, int, int] = PAPER_CROP) -> tuple[int, ...]:
    """The training crop that fits ``store``'s volumes: the paper's crop, cut per axis to the prepared field of view.

    A prepared store's volumes are ``prepare_config.fov_mm / spacing_mm`` voxels; a crop larger than that trains
    on padding (a 64×64×48 phantom in a 192×192×128 crop is 96 % padding and 20× the work). Each cut axis is
    rounded down to a multiple of ``divisor`` (the networks' strides). A store without a prepare config gets
    ``paper``.
    """
    prepare = store.attrs.get("prepare_config") or {}
    fov, spacing = prepare.get("fov_mm"), prepare.get("spacing_mm")
    if not fov or not spacing:
        return paper
    spacings = spacing if isinstance(spacing, (list, tuple)) else [spacing] * 3
    shape = [int(round(f / s)) for f, s in zip(fov, spacings, strict=True)]
    return tuple(p if p <= n else max(divisor, n // divisor * divisor) for p, n in zip(paper, shape, strict=True))


@dataclass(frozen=True)
class CaseSplits:
    """Case ids of the training, validation and test splits of a prepared store."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def get(self, split: str) -> tuple[str, ...]:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        return getattr(self, split)


def case_splits(store: CaseStore, *, val_fraction: float = DEFAULT_VAL_FRACTION, split_seed: int = 0) -> CaseSplits:
    """Training / validation / test case ids from the cases' ``split`` attributes.

    ``"train"`` and unset (``None``) cases train. ``"val"``/``"validation"`` cases validate. When no
    case is marked for validation, a seeded ``val_fraction`` of the ``"test"`` cases (at least one
    when there are two or more) validates and the rest tests — the paper's 100 / 206 split of the
    306 official test cases. The choice depends on ``split_seed`` and the sorted ids only.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, val, test = [], [], []
    for case_id in store.case_ids():
        split = store.case_attrs(case_id).get("split")
        if split in ("val", "validation"):
            val.append(case_id)
        elif split == "test":
            test.append(case_id)
        else:
            train.append(case_id)
    if not val and test and val_fraction > 0:
        n_val = int(round(val_fraction * len(test)))
        n_val = min(max(n_val, 1 if len(test) >= 2 else 0), len(test) - 1)
        order = case_generator(split_seed, 0, "val-split").permutation(len(test))
        chosen = set(int(i) for i in order[:n_val])
        val = [c for i, c in enumerate(test) if i in chosen]
        test = [c for i, c in enumerate(test) if i not in chosen]
    return CaseSplits(train=tuple(train), val=tuple(val), test=tuple(test))


def synthetic_case_ids(store: CaseStore) -> tuple[str, ...]:
    """Complete cases of a generated store (warns if the store is not marked synthetic)."""
    if store.kind != "synthetic":
        log.warning(
            "%s has store_kind %r, not 'synthetic'; using its cases as synthetic anyway", store.location, store.kind
        )
    return tuple(store.case_ids())


def load_case(
    store: CaseStore, case_id: str, *, phase: int | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One case as float32 image (2, X, Y, Z), uint8 mask (X, Y, Z) and its attributes.

    Args:
        phase: post-contrast phase for channel 1, 0-based into ``phases`` (0 = first post-contrast).
            ``None`` keeps ``image[1]`` as stored (phase 1, for validation and test).
    """
    image = store.read_array(case_id, "image").astype(np.float32)
    mask = (store.read_array(case_id, "mask") > 0).astype(np.uint8)
    if phase is not None and phase > 0:
        image[1] = np.asarray(store.open_array(case_id, "phases")[phase], dtype=np.float32)
    return image, mask, store.case_attrs(case_id)


class MixedDataset(Dataset):
    """Training crops from real and synthetic cases (see the module docstring).

    Items are dicts: ``image`` (2, *crop) float32 tensor, ``label`` (1, *crop) int64 tensor,
    ``source`` (``"real"``, ``"synthetic"`` or ``"onthefly"``), ``case_id``, ``phase`` (0-based
    post-contrast phase used, -1 for ``image[1]``).

    Args:
        real: prepared store location.
        real_ids: its training case ids.
        config: sampling and augmentation.
        seed: run seed.
        synthetic: generated store location (required when ``config.mix > 0``).
        synthetic_ids: its case ids (default: all complete cases).
        onthefly: synthesis hook (required when ``config.onthefly_fraction > 0``).
    """

    def __init__(
        self,
        real: str | Path,
        real_ids: Sequence[str],
        *,
        config: MixConfig,
        seed: int,
        synthetic: str | Path | None = None,
        synthetic_ids: Sequence[str] | None = None,
        onthefly: OnTheFly | None = None,
    ) -> None:
        if not real_ids:
            raise ValueError(f"no real training cases in {real}; check the store's 'split' attributes")
        if config.mix > 0 and synthetic is None:
            raise ValueError(f"mix={config.mix} needs a synthetic store (--synthetic)")
        if config.onthefly_fraction > 0 and onthefly is None:
            raise ValueError(f"onthefly_fraction={config.onthefly_fraction} needs an on-the-fly hook (--onthefly)")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.real_location = str(real)
        self.real_ids = tuple(real_ids)
        self.synthetic_location = str(synthetic) if synthetic is not None else None
        if self.synthetic_location is not None and synthetic_ids is None:
            synthetic_ids = synthetic_case_ids(CaseStore.open(self.synthetic_location))
        self.synthetic_ids = tuple(synthetic_ids or ())
        if config.mix > 0 and not self.synthetic_ids:
            raise ValueError(f"synthetic store {self.synthetic_location} has no complete cases")
        self.config = config
        self.seed = int(seed)
        self.onthefly = onthefly
        self.epoch = 0
        self._stores: dict[tuple[int, str], CaseStore] = {}
        self._transforms: Any = None

    # ----------------------------------------------------------------- bookkeeping
    def __len__(self) -> int:
        return self.config.samples_per_epoch or len(self.real_ids)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples ``__getitem__`` returns."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def _offset(self, epoch: int) -> float:
        return float(case_generator(self.seed, epoch, "mix-offset").random())

    def _n_synthetic_before(self, epoch: int, index: int) -> int:
        u = self._offset(epoch)
        return math.floor(index * self.config.mix + u) - math.floor(u)

    def is_synthetic(self, epoch: int, index: int) -> bool:
        """Whether sample ``index`` of ``epoch`` comes from the synthetic store."""
        mix = self.config.mix
        if mix <= 0:
            return False
        u = self._offset(epoch)
        return math.floor((index + 1) * mix + u) > math.floor(index * mix + u)

    def _pick(self, ids: tuple[str, ...], epoch: int, slot: int, stream: str) -> str:
        cycle, pos = divmod(slot, len(ids))
        order = case_generator(self.seed, epoch, f"{stream}-order-{cycle}").permutation(len(ids))
        return ids[int(order[pos])]

    def case_of(self, epoch: int, index: int) -> tuple[str, str]:
        """``(source, case_id)`` of sample ``index`` of ``epoch`` (source ``"real"`` or ``"synthetic"``)."""
        n_syn = self._n_synthetic_before(epoch, index)
        if self.is_synthetic(epoch, index):
            return "synthetic", self._pick(self.synthetic_ids, epoch, n_syn, "synthetic")
        return "real", self._pick(self.real_ids, epoch, index - n_syn, "real")

    def _store(self, location: str) -> CaseStore:
        key = (os.getpid(), location)  # zarr handles are opened once per worker process
        if key not in self._stores:
            self._stores[key] = CaseStore.open(location)
        return self._stores[key]

    def _pipeline(self) -> Any:
        if self._transforms is None:
            self._transforms = build_train_transforms(self.config)
        return self._transforms

    # ----------------------------------------------------------------- samples
    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} outside epoch of {len(self)}")
        epoch = self.epoch
        source, case_id = self.case_of(epoch, index)
        rng = case_generator(self.seed, index, f"mix-sample-e{epoch}")
        location = self.synthetic_location if source == "synthetic" else self.real_location
        store = self._store(location)  # type: ignore[arg-type]
        phase = -1
        if self.config.random_phase and "phases" in store.array_names(case_id):
            n_phases = int(store.open_array(case_id, "phases").shape[0])
            phase = int(rng.integers(n_phases))
        image, mask, _ = load_case(store, case_id, phase=phase if phase >= 0 else None)
        use_hook = (
            source == "real" and self.config.onthefly_fraction > 0 and rng.random() < self.config.onthefly_fraction
        )
        if use_hook:
            assert self.onthefly is not None
            image, mask = self.onthefly(image, mask, rng)
            image = np.asarray(image, dtype=np.float32)
            mask = (np.asarray(mask) > 0).astype(np.uint8)
            source = "onthefly"
        pipeline = self._pipeline()
        pipeline.set_random_state(seed=int(rng.integers(0, 2**31 - 1)))
        with warnings.catch_warnings():  # a case without tumor cannot give a tumor-centred crop: MONAI warns
            warnings.filterwarnings("ignore", message=".*unable to generate class balanced samples.*")
            out = pipeline({"image": image, "label": mask[None].astype(np.float32)})
        if isinstance(out, list):  # RandCropByPosNegLabeld returns one dict per sample
            out = out[0]
        img = torch.as_tensor(np.asarray(out["image"]), dtype=torch.float32).contiguous()
        lab = torch.as_tensor(np.asarray(out["label"]) > 0.5).to(torch.int64).contiguous()
        return {"image": img, "label": lab, "source": source, "case_id": case_id, "phase": phase}


def build_train_transforms(config: MixConfig) -> Any:
    """The MONAI dictionary pipeline: pad → tumor/background-centred crop → flips, rotation, intensity."""
    from monai.transforms import (
        Compose,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandRotated,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    crop = tuple(int(c) for c in config.crop)
    keys = ("image", "label")
    transforms: list[Any] = [
        SpatialPadd(keys=keys, spatial_size=crop, mode="constant"),
        RandCropByPosNegLabeld(
            keys=keys,
            label_key="label",
            spatial_size=crop,
            pos=config.tumor_prob,
            neg=1.0 - config.tumor_prob,
            num_samples=1,
            image_key="image",
            image_threshold=0.0,
        ),
    ]
    if config.augment:
        angle = math.radians(config.rotate_degrees)
        transforms += [
            RandFlipd(keys=keys, prob=config.flip_prob, spatial_axis=0),
            RandFlipd(keys=keys, prob=config.flip_prob, spatial_axis=1),
            RandFlipd(keys=keys, prob=config.flip_prob, spatial_axis=2),
        ]
        if config.rotate_prob > 0 and angle > 0:
            transforms.append(
                RandRotated(
                    keys=keys,
                    range_x=angle,
                    range_y=angle,
                    range_z=angle,
                    prob=config.rotate_prob,
                    keep_size=True,
                    mode=("bilinear", "nearest"),
                    padding_mode=("border", "zeros"),
                )
            )
        transforms += [
            RandScaleIntensityd(keys="image", factors=config.scale_factor, prob=config.scale_prob),
            RandShiftIntensityd(keys="image", offsets=config.shift_offset, prob=config.shift_prob),
        ]
    return Compose(transforms)


class SynTumorHook:
    """On-the-fly SynTumor insertion (``synbt_factory.synthesis.syntumor``) as an :data:`OnTheFly` hook.

    Each call draws a size class, lets SynTumor place its own deformed ellipsoid inside the body
    away from the real tumor (``avoid`` = the real mask dilated by ``avoid_margin`` voxels), and
    returns the image with the union of the real and synthetic masks. Enhancement statistics are
    measured on the store's training cases only (split ``train`` or unset), so validation and test
    tumors never calibrate the training data. The synthesis module is imported when the hook is
    built (a plain import, deferred for its import cost); a missing module raises ``RuntimeError``.

    Args:
        prepared: prepared store location.
        size_classes: SynTumor size classes drawn uniformly (default: all of ``SIZE_CLASSES``).
        avoid_margin: voxels kept between a synthetic and the real tumor.
        max_stat_cases: measure enhancement on at most this many training cases (``None`` = all).
    """

    def __init__(
        self,
        prepared: str | Path,
        *,
        size_classes: Sequence[str] | None = None,
        avoid_margin: int = 3,
        max_stat_cases: int | None = None,
    ) -> None:
        module = _import_syntumor()
        store = CaseStore.open(str(prepared))
        self._insert = module.syntumor_insert
        self.stats = module.EnhancementStats.from_store(store, splits=("train", None), max_cases=max_stat_cases)
        if size_classes is None:
            size_classes = tuple(module.SIZE_CLASSES)
        if not size_classes:
            raise ValueError("size_classes must not be empty")
        if avoid_margin < 0:
            raise ValueError(f"avoid_margin must be >= 0, got {avoid_margin}")
        self.size_classes = tuple(size_classes)
        self.avoid_margin = int(avoid_margin)

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from scipy import ndimage

        size_class = self.size_classes[int(rng.integers(len(self.size_classes)))]
        real = np.asarray(mask) > 0
        avoid = (
            ndimage.binary_dilation(real, iterations=self.avoid_margin) if self.avoid_margin and real.any() else real
        )
        new_image, tumor_mask, _record = self._insert(image, None, rng, self.stats, size_class, avoid=avoid)
        union = (real | (np.asarray(tumor_mask) > 0)).astype(np.uint8)
        return np.asarray(new_image, dtype=np.float32), union


def _import_syntumor() -> ModuleType:
    """``synbt_factory.synthesis.syntumor``, imported on first use (it pulls in scipy's interpolation, which a
    mix without on-the-fly SynTumor does not need).

    Raises:
        RuntimeError: the module cannot be imported, with what to do instead.
    """
    try:
        from synbt_factory.synthesis import syntumor
    except ImportError as exc:
        raise RuntimeError(
            "on-the-fly SynTumor needs synbt_factory.synthesis.syntumor, which is not available "
            f"({exc}); generate a SynTumor store with `synbt generate` and pass it with --synthetic instead"
        ) from exc
    return syntumor
