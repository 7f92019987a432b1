"""Tumor template bank (paper Sec. 2.3, 3.1, Fig. 3).

Every 26-connected component of the training cases' expert masks becomes a template,
cropped to its bounding box (plus one zero voxel) and stored in a Zarr v3 store of kind
``"bank"`` in the synbt case schema: one group per template with ``mask`` (X, Y, Z) uint8
and ``image`` (2, X, Y, Z) float16 (the pre/post crop under the template, for inspection
and enhancement statistics). The root attribute ``templates`` holds every template's
:class:`TemplateMeta`, so opening a bank reads one JSON document.

Sampling draws a template uniformly, then an :class:`~synbt_factory.synthesis.augment.AugmentRecord`
(flips, 90° and small-angle rotations, zoom 0.7–1.3, mild elastic); :meth:`TumorBank.render`
replays a :class:`TemplateRecord` into the identical mask.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from synbt_factory import __version__
from synbt_factory.config import config_from_dict, config_to_dict
from synbt_factory.progress import ProgressFn, report
from synbt_factory.store import CaseStore, StoreError
from synbt_factory.store.lock import writer_lock
from synbt_factory.store.outputs import check_output_vs_inputs, remove_own_store
from synbt_factory.synthesis.augment import (
    STRUCTURE_26,
    AugmentConfig,
    AugmentRecord,
    apply_augment,
    augment_coordinates,
    close_mask,
    draw_augment,
)

__all__ = [
    "BREAST_SOURCES",
    "BankConfig",
    "TemplateMeta",
    "TemplateRecord",
    "TumorBank",
    "build_bank",
    "breast_size_mm",
]

log = logging.getLogger(__name__)

BANK_FORMAT = 1
#: Breast masks in order of preference, the tissue model's first, as placement reads them
#: (:func:`~synbt_factory.synthesis.placement.context_from_store`): a template's breast size and a
#: background's are then measured on the same kind of mask. On the phantom the label mask joins both
#: breasts into one component and the model's does not, so mixing them shrank every tumor to the clip.
BREAST_SOURCES = ("breast_pred", "breast")


@dataclass(frozen=True, kw_only=True)
class BankConfig:
    """What counts as a template.

    Args:
        min_voxels: components smaller than this (annotation specks) are skipped.
        margin: zero voxels kept around each component's bounding box.
    """

    min_voxels: int = 8
    margin: int = 1

    def __post_init__(self) -> None:
        if self.min_voxels < 1:
            raise ValueError(f"min_voxels must be >= 1, got {self.min_voxels}")
        if not 0 <= self.margin <= 16:
            raise ValueError(f"margin must be in [0, 16], got {self.margin}")


@dataclass(frozen=True, kw_only=True)
class TemplateMeta:
    """One stored template.

    Attributes:
        template_id: group name in the bank (``T000000`` …).
        source_case / dataset / split: where it came from.
        component: 1-based component index in the source mask (largest first).
        n_components: components of the source mask.
        bbox_start: voxel of the crop's origin in the source case.
        shape: crop shape (X, Y, Z).
        voxels: template voxel count; volume_mm3: its volume.
        extents_mm: bounding-box size of the component (without margin).
        breast_size_mm: cube root of one breast's volume in the source case (None if unknown).
        breast_source: the array it was measured on (one of :data:`BREAST_SOURCES`; None if unknown).
        pre_mean / post_mean: mean pre / post intensity inside the component.
    """

    template_id: str
    source_case: str
    dataset: str | None = None
    split: str | None = None
    component: int = 1
    n_components: int = 1
    bbox_start: tuple[int, int, int] = (0, 0, 0)
    shape: tuple[int, int, int] = (1, 1, 1)
    voxels: int = 1
    volume_mm3: float = 1.0
    extents_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    breast_size_mm: float | None = None
    breast_source: str | None = None
    pre_mean: float = 0.0
    post_mean: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemplateMeta:
        return config_from_dict(cls, data)

    @property
    def equivalent_diameter_mm(self) -> float:
        return float((6.0 * self.volume_mm3 / np.pi) ** (1.0 / 3.0))


@dataclass(frozen=True, kw_only=True)
class TemplateRecord:
    """A drawn template: which one, its augmentation and an extra isotropic scale."""

    template_id: str
    augment: AugmentRecord = field(default_factory=AugmentRecord)
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemplateRecord:
        return config_from_dict(cls, data)


def breast_size_mm(breast: np.ndarray, spacing: Iterable[float] = (1.0, 1.0, 1.0)) -> float | None:
    """Cube root of the mean volume of the breast mask's large components (one breast), mm.

    Components under 10 % of the largest are ignored; ``None`` for an empty mask.
    """
    b = np.asarray(breast) > 0
    if not b.any():
        return None
    labels, n = ndimage.label(b)
    sizes = np.bincount(labels.ravel())[1:]
    big = sizes[sizes >= 0.1 * sizes.max()]
    voxel_mm3 = float(np.prod(list(spacing)))
    return float((big.mean() * voxel_mm3) ** (1.0 / 3.0))


def _case_breast(arrays_available: list[str], store: CaseStore, case_id: str) -> tuple[str | None, np.ndarray | None]:
    for name in BREAST_SOURCES:
        if name in arrays_available:
            return name, store.read_array(case_id, name)
    return None, None


def build_bank(
    prepared_store: str | Path | CaseStore,
    out_location: str | Path,
    *,
    splits: tuple[str | None, ...] | None = ("train",),
    config: BankConfig | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> TumorBank:
    """Extract every connected tumor component of the chosen splits into a bank store.

    The bank is written under its store's writer lock (:func:`~synbt_factory.store.lock.writer_lock`).

    Args:
        prepared_store: a prepared store (location or open :class:`CaseStore`).
        out_location: where the bank store is created; it must not be, lie inside, or contain the prepared store.
        splits: case ``split`` attributes to use (``None`` in the tuple takes unsplit cases);
            ``None`` takes every case.
        config: template filtering.
        overwrite: replace an existing bank at ``out_location`` (only a synbt bank store is ever deleted).
        progress: ``(cases_done, cases_total, {"templates": n})``.

    Raises:
        OutputError: ``out_location`` touches the prepared store, or (with ``overwrite``) holds something
            other than a synbt bank; nothing is deleted.
        StoreError: if ``out_location`` exists (without ``overwrite``) or no case has a tumor.
    """
    config = config or BankConfig()
    src = prepared_store if isinstance(prepared_store, CaseStore) else CaseStore.open(prepared_store)
    if src.kind != "prepared":
        raise StoreError(f"{src.location} is a {src.kind!r} store; build the bank from a prepared store")
    out_loc = str(out_location)
    check_output_vs_inputs(out_loc, [src.location])
    cases = [c for c in src.case_ids() if splits is None or src.case_attrs(c).get("split") in splits]
    if not cases:
        raise StoreError(
            f"{src.location} has no complete case with split in {list(splits or [])}; "
            "check the splits file or pass --split all"
        )
    if overwrite:
        remove_own_store(out_loc, kind="bank", inputs=[src.location])
    card = {
        "synthetic": False,
        "bank_format": BANK_FORMAT,
        "source_store": str(src.location),
        "splits": None if splits is None else list(splits),
        "bank_config": config_to_dict(config),
        "generator_version": __version__,
        "templates": [],
    }
    with writer_lock(out_loc, command="bank build"):
        bank_store = CaseStore.create(out_location, kind="bank", card=card)
        metas = _extract_templates(src, cases, bank_store, config, progress)
        if not metas:
            raise StoreError(
                f"no tumor component of >= {config.min_voxels} voxels in the selected cases of "
                f"{src.location}; nothing to put in the bank"
            )
        bank_store.update_card(templates=metas, n_templates=len(metas))
    log.info("bank %s: %d templates from %d cases", out_location, len(metas), len(cases))
    return TumorBank.open(out_location)


def _extract_templates(
    src: CaseStore, cases: list[str], bank_store: CaseStore, config: BankConfig, progress: ProgressFn | None
) -> list[dict[str, Any]]:
    """Write every large enough tumor component of ``cases`` into ``bank_store``; returns the templates' metadata."""
    metas: list[dict[str, Any]] = []
    for done, case_id in enumerate(cases, start=1):
        names = src.array_names(case_id)
        arrays, attrs = src.read_case(case_id, ("image", "mask"))
        mask = arrays["mask"] > 0
        spacing = [float(s) for s in attrs.get("spacing", [1.0, 1.0, 1.0])]
        voxel_mm3 = float(np.prod(spacing))
        affine = np.asarray(attrs.get("affine", np.eye(4).tolist()), dtype=np.float64)
        breast_source, breast = _case_breast(names, src, case_id)
        bsize = breast_size_mm(breast, spacing) if breast is not None else None
        labels, n = ndimage.label(mask, structure=STRUCTURE_26)
        if n == 0:
            report(progress, done, len(cases), {"templates": float(len(metas))})
            continue
        slices = ndimage.find_objects(labels)
        sizes = np.bincount(labels.ravel())[1:]
        order = np.argsort(-sizes, kind="stable")
        image = arrays["image"]
        for rank, idx in enumerate(order, start=1):
            voxels = int(sizes[idx])
            if voxels < config.min_voxels:
                continue
            sl = slices[idx]
            start = [max(0, s.start - config.margin) for s in sl]
            stop = [min(d, s.stop + config.margin) for s, d in zip(sl, mask.shape, strict=True)]
            box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
            comp = labels[box] == idx + 1
            crop_img = image[(slice(None), *box)]
            inside = comp
            template_id = f"T{len(metas):06d}"
            origin = affine @ np.array([*start, 1.0])
            t_affine = affine.copy()
            t_affine[:3, 3] = origin[:3]
            meta = TemplateMeta(
                template_id=template_id,
                source_case=case_id,
                dataset=attrs.get("dataset"),
                split=attrs.get("split"),
                component=rank,
                n_components=int(n),
                bbox_start=tuple(int(s) for s in start),  # type: ignore[arg-type]
                shape=tuple(int(s) for s in comp.shape),  # type: ignore[arg-type]
                voxels=voxels,
                volume_mm3=voxels * voxel_mm3,
                extents_mm=tuple(float((s.stop - s.start) * sp) for s, sp in zip(sl, spacing, strict=True)),  # type: ignore[arg-type]
                breast_size_mm=bsize,
                breast_source=breast_source if bsize is not None else None,
                pre_mean=float(crop_img[0][inside].astype(np.float32).mean()),
                post_mean=float(crop_img[1][inside].astype(np.float32).mean()),
            )
            bank_store.write_case(
                template_id,
                {"image": np.ascontiguousarray(crop_img.astype(np.float16)), "mask": comp.astype(np.uint8)},
                {"affine": t_affine.tolist(), "spacing": spacing, "source_case": case_id, **meta.to_dict()},
            )
            metas.append(meta.to_dict())
        report(progress, done, len(cases), {"templates": float(len(metas))})
    return metas


def _box(mask: np.ndarray, margin: int) -> tuple[list[int], list[int]]:
    """Start and stop (exclusive) of ``mask``'s bounding box widened by ``margin`` (may leave the array)."""
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    return [int(i[0]) - margin for i in idx], [int(i[-1]) + 1 + margin for i in idx]


def _window(arr: np.ndarray, start: list[int], stop: list[int], *, mode: str = "constant") -> np.ndarray:
    """``arr[..., start:stop]`` over the last three axes, padded (zeros, or ``mode``) where the window leaves it."""
    lead = arr.ndim - 3
    shape = arr.shape[lead:]
    inner = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(start, stop, shape, strict=True))
    widths = [(0, 0)] * lead + [(max(-a, 0), max(b - n, 0)) for a, b, n in zip(start, stop, shape, strict=True)]
    return np.pad(arr[(..., *inner)], widths, mode=mode)  # type: ignore[call-overload]


class TumorBank:
    """Read access to a bank store, with replayable augmented sampling.

    Masks are read lazily and cached (templates are small). Picklable: a copy in a DataLoader
    worker reopens the store itself.

    Args:
        location: the bank store.
        augment: augmentation ranges used by :meth:`sample` / :meth:`draw`.
        min_voxels: only templates with at least this many voxels are drawn.
    """

    def __init__(
        self, location: str, templates: list[TemplateMeta], *, augment: AugmentConfig | None = None, min_voxels: int = 1
    ) -> None:
        self.location = location
        self.templates = templates
        self.augment = augment or AugmentConfig()
        self._by_id = {t.template_id: t for t in templates}
        self._drawable = [t.template_id for t in templates if t.voxels >= min_voxels]
        if not self._drawable:
            raise StoreError(f"bank {location} has no template with >= {min_voxels} voxels")
        self._cache: dict[str, np.ndarray] = {}
        self._drawable_at_least: dict[int, list[str]] = {}  # min_voxels → drawable ids, filtered once per minimum
        self._store: CaseStore | None = None

    @classmethod
    def open(cls, location: str | Path, *, augment: AugmentConfig | None = None, min_voxels: int = 1) -> TumorBank:
        """Open a bank built by :func:`build_bank`.

        Raises:
            StoreError: if ``location`` is not a bank store or holds no templates.
        """
        store = CaseStore.open(location)
        if store.kind != "bank":
            raise StoreError(
                f"{location} is a {store.kind!r} store, not a tumor bank; build one with 'synbt bank build'"
            )
        raw = store.attrs.get("templates") or []
        if not raw:
            raise StoreError(f"bank {location} lists no templates; it is empty or was not finished")
        bank = cls(str(location), [TemplateMeta.from_dict(t) for t in raw], augment=augment, min_voxels=min_voxels)
        bank._store = store
        return bank

    def __len__(self) -> int:
        return len(self.templates)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_store"] = None
        state["_cache"] = {}
        return state

    @property
    def template_ids(self) -> list[str]:
        return [t.template_id for t in self.templates]

    def meta(self, template_id: str) -> TemplateMeta:
        try:
            return self._by_id[template_id]
        except KeyError:
            raise KeyError(f"template {template_id!r} is not in bank {self.location}") from None

    def _open_store(self) -> CaseStore:
        if self._store is None:
            self._store = CaseStore.open(self.location)
        return self._store

    def template(self, template_id: str) -> np.ndarray:
        """The stored (un-augmented) template mask (X, Y, Z) uint8, read-only."""
        self.meta(template_id)
        if template_id not in self._cache:
            mask = self._open_store().read_array(template_id, "mask")
            mask.setflags(write=False)
            self._cache[template_id] = mask
        return self._cache[template_id]

    def template_image(self, template_id: str) -> np.ndarray:
        """The (2, X, Y, Z) float16 image crop under a template."""
        self.meta(template_id)
        return self._open_store().read_array(template_id, "image")

    def load_all(self) -> None:
        """Read every template mask into memory (for many draws in a loop)."""
        for t in self._drawable:
            self.template(t)

    def draw(self, rng: np.random.Generator, *, scale: float = 1.0, min_voxels: int = 1) -> TemplateRecord:
        """Draw a template id (uniform over those with ≥ ``min_voxels`` voxels) and its augmentation; no mask
        is computed.

        Raises:
            StoreError: if no drawable template has ``min_voxels`` voxels.
        """
        drawable = self._drawable_at_least.get(min_voxels)
        if drawable is None:
            drawable = [t for t in self._drawable if self._by_id[t].voxels >= min_voxels]
            self._drawable_at_least[min_voxels] = drawable
        if not drawable:
            largest = max(self._by_id[t].voxels for t in self._drawable)
            raise StoreError(
                f"bank {self.location} has no template with >= {min_voxels} voxels (largest {largest}); "
                "lower the minimum (placement min_template_voxels)"
            )
        template_id = drawable[int(rng.integers(0, len(drawable)))]
        return TemplateRecord(template_id=template_id, augment=draw_augment(rng, self.augment), scale=scale)

    def render(self, record: TemplateRecord) -> np.ndarray:
        """The augmented (X', Y', Z') uint8 mask of ``record`` (deterministic)."""
        return apply_augment(self.template(record.template_id), record.augment, scale=record.scale)

    def render_image(self, record: TemplateRecord, *, pad: int = 0) -> np.ndarray:
        """The template's image crop moved exactly as :meth:`render` moves its mask (linear interpolation).

        Flips, 90° turns, the small-angle rotation, zoom, scale and elastic displacement of ``record`` are applied
        to the (pre, post) crop with the sampling coordinates :func:`~synbt_factory.synthesis.augment.apply_augment`
        uses for the mask; beyond the stored crop the nearest crop voxel is repeated.

        Args:
            record: the drawn template (e.g. a placement record's ``template``).
            pad: extra voxels on every side of ``render(record)``'s grid (edge values repeated where the resampled
                grid ends).

        Returns:
            (2, X' + 2 pad, Y' + 2 pad, Z' + 2 pad) float32: ``image[:, pad:pad + X', ...]`` lies under
            ``render(record)`` voxel for voxel.

        Raises:
            StoreError: the bank keeps no usable image crop for the template (naming the bank and the fix).
        """
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        template_id = record.template_id
        template = self.template(template_id) > 0
        image = self._usable_image(template_id, template.shape)
        # the steps of apply_augment: crop to the mask's box + 1, flips, 90° turns, then one resampling
        lo, hi = _box(template, 1)
        m, img = _window(template, lo, hi), _window(image, lo, hi, mode="edge")
        augment = record.augment
        for axis, flip in enumerate(augment.flips):
            if flip:
                m, img = np.flip(m, axis=axis), np.flip(img, axis=axis + 1)
        if augment.rot90_k:
            a, b = augment.rot90_axes
            m = np.rot90(m, k=augment.rot90_k, axes=(a, b))
            img = np.rot90(img, k=augment.rot90_k, axes=(a + 1, b + 1))
        m = np.ascontiguousarray(m, dtype=np.float32)
        img = np.ascontiguousarray(img, dtype=np.float32)
        coords, out_shape, out_centre = augment_coordinates(m.shape, augment, record.scale)
        out = close_mask(ndimage.map_coordinates(m, coords, order=1, mode="constant", cval=0.0, prefilter=False) >= 0.5)
        if not out.any():
            out = np.zeros(out_shape, dtype=bool)
            out[tuple(int(round(c)) for c in out_centre)] = True
        lo, hi = _box(out, 1)
        if not np.array_equal(_window(out, lo, hi), self.render(record) > 0):
            raise RuntimeError(
                f"template {template_id} of bank {self.location}: the image transform does not match "
                "the mask's (render); apply_augment changed without render_image"
            )
        moved = np.stack(
            [
                ndimage.map_coordinates(img[c], coords, order=1, mode="nearest", prefilter=False)
                for c in range(img.shape[0])
            ]
        )
        return _window(moved, [v - pad for v in lo], [v + pad for v in hi], mode="edge")

    def _usable_image(self, template_id: str, shape: tuple[int, ...]) -> np.ndarray:
        """The template's (2, X, Y, Z) float32 image crop, or a :class:`StoreError` saying why it cannot be used."""
        where = f"bank {self.location}: template {template_id}"
        fix = "rebuild the bank from its prepared store (synbt bank build --overwrite)"
        try:
            image = np.asarray(self.template_image(template_id), dtype=np.float32)
        except (KeyError, FileNotFoundError, StoreError) as exc:
            raise StoreError(f"{where} keeps no usable image crop ({exc}); {fix}") from None
        if image.shape != (2, *shape):
            raise StoreError(
                f"{where} has an image crop of shape {image.shape}, not (2, *{tuple(shape)}) like its mask; {fix}"
            )
        if not np.isfinite(image).all():
            raise StoreError(f"{where} has non-finite values in its image crop; {fix}")
        return image

    def sample(self, rng: np.random.Generator, *, scale: float = 1.0) -> tuple[np.ndarray, TemplateRecord]:
        """Draw and render: ``(mask (X', Y', Z') uint8, record)``; ``render(record)`` gives the same mask."""
        record = self.draw(rng, scale=scale)
        return self.render(record), record

    def summary(self) -> dict[str, Any]:
        """Counts and volume / diameter quantiles of the bank (for ``synbt bank info``)."""
        vol = np.array([t.volume_mm3 for t in self.templates])
        diam = np.array([t.equivalent_diameter_mm for t in self.templates])
        datasets: dict[str, int] = {}
        for t in self.templates:
            key = t.dataset or "unknown"
            datasets[key] = datasets.get(key, 0) + 1
        q = [0.0, 0.1, 0.5, 0.9, 1.0]
        names = ["min", "p10", "median", "p90", "max"]
        return {
            "location": self.location,
            "templates": len(self.templates),
            "source_cases": len({t.source_case for t in self.templates}),
            "datasets": datasets,
            "volume_mm3_quantiles": dict(zip(names, np.quantile(vol, q).tolist(), strict=True)),
            "diameter_mm_quantiles": dict(zip(names, np.quantile(diam, q).tolist(), strict=True)),
        }
