"""``synbt data prepare``: MAMA-MIA-layout NIfTI cases → a prepared Zarr store (case schema).

Per case: run ``check``'s own validation (:func:`~synbt_factory.data.check.check_and_load_case`)
and refuse the case on any error (so nothing ``check`` rejects is ever written) → from the very
arrays and affines it read, with MONAI: reorient to RAS → resample to 1 mm isotropic (images
linear, masks nearest) → one intensity scale shared by every phase (divide by the pre-contrast
99.5th percentile, so post/pre ratios and the sign of enhancement are kept exactly) → crop/pad to
a fixed field of view anchored on the breast region → write ``image`` (2, X, Y, Z) = (pre, first
post), ``mask`` and optional arrays. The affine attribute is MONAI's tracked affine: stored
indices → RAS+ mm.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synbt_factory import __version__
from synbt_factory.config import config_to_dict
from synbt_factory.data.check import (
    Volume,
    check_and_load_case,
    dataset_problems,
    describe_exception,
    relative_name,
)
from synbt_factory.data.mamamia import CaseRecord, DatasetIndex, index_dataset
from synbt_factory.progress import ProgressFn, report
from synbt_factory.store import CaseStore, StoreError, StoreLayout
from synbt_factory.store.lock import writer_lock

__all__ = ["PrepareConfig", "PrepareResult", "prepare_case", "prepare_dataset", "crop_window"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    """How cases are resampled, normalised and cropped.

    Args:
        fov_mm: field of view (X, Y, Z) in RAS order, in mm (= voxels at 1 mm). The default is the
            paper's 128×192×192 crop with the short axis superior–inferior.
        spacing_mm: isotropic output spacing.
        intensity_percentile: percentile of the pre-contrast image that maps to 1.0.
        clip_max: upper clip after scaling (enhancing tumors reach ~3).
        anterior_margin_mm: air kept in front of the most anterior body voxel.
        body_threshold: normalised pre-contrast level separating body from air.
        keep_all_phases: also store every post-contrast phase as ``phases`` (P, X, Y, Z).
    """

    fov_mm: tuple[int, int, int] = (192, 192, 128)
    spacing_mm: float = 1.0
    intensity_percentile: float = 99.5
    clip_max: float = 8.0
    anterior_margin_mm: int = 8
    body_threshold: float = 0.1
    keep_all_phases: bool = True

    def __post_init__(self) -> None:
        if len(self.fov_mm) != 3 or any(int(s) < 8 for s in self.fov_mm):
            raise ValueError(f"fov_mm must be three sizes >= 8 mm, got {self.fov_mm}")
        if not 0 < self.spacing_mm <= 5:
            raise ValueError(f"spacing_mm must be in (0, 5], got {self.spacing_mm}")
        if not 50 < self.intensity_percentile <= 100:
            raise ValueError(f"intensity_percentile must be in (50, 100], got {self.intensity_percentile}")
        if self.clip_max <= 1:
            raise ValueError(f"clip_max must be > 1, got {self.clip_max}")

    @property
    def fov_voxels(self) -> tuple[int, int, int]:
        return tuple(int(round(s / self.spacing_mm)) for s in self.fov_mm)  # type: ignore[return-value]


@dataclass
class PrepareResult:
    """What a prepare run did.

    Attributes:
        prepared / skipped / failed: case ids (failed: with the reason).
        padding: share of each prepared case's field of view that lies outside its source volume (zero padding).
        source_extent_mm: (X, Y, Z) extent in mm of each prepared case's source volume (RAS).
    """

    prepared: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    padding: dict[str, float] = field(default_factory=dict)
    source_extent_mm: dict[str, list[float]] = field(default_factory=dict)

    def padding_warning(self, fov_mm: tuple[float, float, float], *, threshold: float = 0.5) -> str | None:
        """A sentence with a ``--fov`` that fits the data, when most of the median case's FOV is padding."""
        if not self.padding:
            return None
        median = float(np.median(list(self.padding.values())))
        if median <= threshold:
            return None
        extent = np.max(np.array(list(self.source_extent_mm.values())), axis=0)
        fit = [int(min(f, 16 * np.ceil(e / 16))) for e, f in zip(extent, fov_mm, strict=True)]
        return (
            f"{median:.0%} of the field of view of the median case is padding (volumes up to "
            f"{' × '.join(f'{e:.0f}' for e in extent)} mm in a {' × '.join(f'{f:g}' for f in fov_mm)} mm FOV): "
            f"every later step pays for it. Prepare again with --fov {' '.join(map(str, fit))}"
        )


def crop_window(
    body: np.ndarray, size: tuple[int, int, int], *, anterior_margin: int, tumor: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """Start/end voxel per axis of a ``size`` window (may extend past the volume: padded later).

    Centred left–right and superior–inferior on the body, anchored ``anterior_margin`` voxels in
    front of the most anterior body voxel (RAS: +Y is anterior), then shifted, where it fits, so
    that the whole tumor is inside.
    """
    shape = body.shape
    if body.any():
        idx = [np.flatnonzero(body.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        lo = [int(i[0]) for i in idx]
        hi = [int(i[-1]) + 1 for i in idx]
    else:
        lo, hi = [0, 0, 0], list(shape)
    window = []
    for ax in range(3):
        if ax == 1:
            end = min(hi[1] + anterior_margin, max(hi[1], shape[1]))
            start = end - size[1]
        else:
            centre = (lo[ax] + hi[ax]) // 2
            start = centre - size[ax] // 2
        window.append([start, start + size[ax]])
    if tumor is not None and tumor.any():
        t_idx = np.argwhere(tumor)
        t_lo, t_hi = t_idx.min(axis=0), t_idx.max(axis=0) + 1
        for ax in range(3):
            start, end = window[ax]
            if t_hi[ax] - t_lo[ax] > size[ax]:
                continue
            if t_lo[ax] < start:
                window[ax] = [int(t_lo[ax]), int(t_lo[ax]) + size[ax]]
            elif t_hi[ax] > end:
                window[ax] = [int(t_hi[ax]) - size[ax], int(t_hi[ax])]
    return [(int(a), int(b)) for a, b in window]


def _to_ras_grid(volume: Volume, *, mask: bool, config: PrepareConfig) -> Any:
    """One checked volume as a (1, X, Y, Z) MetaTensor in RAS at ``spacing_mm`` (images linear, masks nearest)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    data, geometry = volume
    array = np.ascontiguousarray(data.reshape(geometry.shape), dtype=np.float32)  # (X, Y, Z, 1) → (X, Y, Z)
    tensor = MetaTensor(torch.from_numpy(array)[None], affine=torch.as_tensor(geometry.affine, dtype=torch.float64))
    tensor = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(tensor)
    return Spacing(
        pixdim=(config.spacing_mm,) * 3,
        mode="nearest" if mask else "bilinear",
        padding_mode="zeros" if mask else "border",
        dtype=np.float32,
    )(tensor)


def prepare_case(
    case: CaseRecord, config: PrepareConfig, *, root: Path | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Check, then reorient, resample, normalise and crop one case.

    Args:
        case: the case's files.
        config: resampling, normalisation and crop.
        root: dataset root, for file names in messages (default: two levels above the image folder).

    Returns:
        arrays: ``image`` (2, X, Y, Z) float16, ``mask`` (X, Y, Z) uint8, and when available
        ``phases`` (P, X, Y, Z) float16, ``tissue`` and ``breast`` uint8.
        attrs: ``affine`` (stored indices → RAS+ mm), ``spacing``, ``source_case`` ...

    Raises:
        ValueError: naming the case, the file and the cause when ``check`` reports an error for the
            case or the case cannot be prepared.
    """
    from monai.transforms import BorderPad, SpatialCrop

    root = Path(root) if root is not None else case.image_dir.parent.parent
    report_, volumes = check_and_load_case(case, root)
    if report_.errors:
        causes = "; ".join(f"{p.file}: {p.message} — {p.fix}" for p in report_.errors)
        raise ValueError(f"{case.case_id}: {causes}")
    phase_keys = [f"phase_{n}" for n in case.phase_numbers]
    sources: list[tuple[str, Path, bool]] = [(k, p, False) for k, p in zip(phase_keys, case.phases, strict=True)]
    if case.expert_mask is None:  # check reports it as an error; kept for type narrowing
        raise ValueError(f"{case.case_id}: no expert segmentation in segmentations/expert/")
    sources.append(("mask", case.expert_mask, True))
    mask_keys = ["mask"]
    for key, path in (("tissue", case.tissue_labels), ("breast", case.breast_mask)):
        if path is not None:
            sources.append((key, path, True))
            mask_keys.append(key)
    out: dict[str, Any] = {}
    for key, path, is_mask in sources:
        try:
            out[key] = _to_ras_grid(volumes[path], mask=is_mask, config=config)
        except Exception as exc:
            raise ValueError(
                f"{case.case_id}: {relative_name(path, root)}: cannot reorient/resample ({describe_exception(exc)})"
            ) from exc
    del volumes

    pre = out["phase_0"][0].numpy()
    finite = np.isfinite(pre)
    if not finite.all():
        raise ValueError(f"{case.case_id}: non-finite voxels in {case.phases[0].name}; run 'synbt data check'")
    scale = float(np.percentile(pre, config.intensity_percentile))
    if not scale > 0:
        raise ValueError(
            f"{case.case_id}: {relative_name(case.phases[0], root)}: pre-contrast image is empty "
            f"(percentile {config.intensity_percentile} = {scale})"
        )

    body = (pre / scale) > config.body_threshold
    tumor = out["mask"][0].numpy() > 0
    size = config.fov_voxels
    window = crop_window(
        body, size, anterior_margin=int(round(config.anterior_margin_mm / config.spacing_mm)), tumor=tumor
    )
    shape = pre.shape
    roi_start = [max(0, s) for s, _ in window]
    roi_end = [min(d, e) for (_, e), d in zip(window, shape, strict=True)]
    border = []
    for (s, e), d in zip(window, shape, strict=True):
        border += [max(0, -s), max(0, e - d)]
    if any(e <= s for s, e in zip(roi_start, roi_end, strict=True)):
        raise ValueError(f"{case.case_id}: crop window {window} misses the volume {shape}")
    crop = SpatialCrop(roi_start=roi_start, roi_end=roi_end)
    pad = BorderPad(spatial_border=border, mode="constant")

    def fit(t: Any) -> Any:
        return pad(crop(t))

    phases = []
    for key in phase_keys:
        t = fit(out[key])
        phases.append(np.clip(t[0].numpy() / scale, 0.0, config.clip_max))
    ref = fit(out["phase_0"])
    affine = np.asarray(ref.affine, dtype=np.float64)
    arrays: dict[str, np.ndarray] = {
        "image": np.stack([phases[0], phases[1]]).astype(np.float16),
        "mask": (fit(out["mask"])[0].numpy() > 0).astype(np.uint8),
    }
    if config.keep_all_phases:
        arrays["phases"] = np.stack(phases[1:]).astype(np.float16)
    for key in mask_keys[1:]:
        arrays[key] = np.rint(fit(out[key])[0].numpy()).astype(np.uint8)
    if arrays["image"].shape[1:] != size:
        raise AssertionError(f"{case.case_id}: prepared shape {arrays['image'].shape} != {size}")
    from synbt_factory.synthesis.syntumor import ENHANCEMENT_ATTR, enhancement_record

    try:
        info = case.info() or {}
    except ValueError:
        info = {}
    imaging = info.get("imaging_data", {}) if isinstance(info.get("imaging_data"), dict) else {}
    attrs = {
        "affine": affine.tolist(),
        "spacing": [float(config.spacing_mm)] * 3,
        "source_case": case.case_id,
        "split": case.split,
        "dataset": imaging.get("dataset"),
        "n_post_phases": case.n_post_phases,
        "intensity_scale": scale,
        "crop_window": [list(w) for w in window],
        # relative to the dataset root: stores are shared with other groups, local paths are not
        "source_files": [_shareable_name(p, root) for p in (*case.phases, case.expert_mask) if p is not None],
        "tumor_voxels": int(arrays["mask"].sum()),
        "fov_padding_fraction": 1.0
        - float(np.prod([e - s for s, e in zip(roi_start, roi_end, strict=True)])) / float(np.prod(size)),
        "source_extent_mm": [float(d * config.spacing_mm) for d in shape],
        # what SynTumor's enhancement statistics read at every generate, measured once here
        ENHANCEMENT_ATTR: enhancement_record(arrays["image"], arrays["mask"]),
    }
    return arrays, attrs


def _shareable_name(path: Path, root: Path) -> str:
    """``path`` relative to the dataset ``root`` (POSIX); a file outside it (a linked phase) by its name alone."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).name


def _store_anatomy(store: CaseStore, case_ids: list[str]) -> None:
    """Store the cases' placement anatomy (:mod:`~synbt_factory.synthesis.background_context`); a failure only
    means ``generate`` builds it each run, so it is logged, never fatal."""
    from synbt_factory.synthesis.background_context import store_placement_anatomy

    try:
        store_placement_anatomy(store, case_ids)
    except Exception as exc:  # noqa: BLE001 - the prepared case is complete and valid without it
        log.warning(
            "placement context of %s not stored (%s); generate builds it each run",
            ", ".join(case_ids[:3]),
            describe_exception(exc),
        )


def prepare_dataset(
    dataset_dir: Path,
    out: str | Path,
    *,
    config: PrepareConfig | None = None,
    layout: StoreLayout | None = None,
    workers: int = 2,
    case_ids: list[str] | None = None,
    progress: ProgressFn | None = None,
) -> PrepareResult:
    """Prepare every case of ``dataset_dir`` into the store ``out``; resumable.

    Re-running skips complete cases and redoes incomplete ones. Cases run in parallel with
    Dask (threads: NIfTI decompression and MONAI resampling release the GIL); each case is
    written by the task that made it. A case that fails (any error ``check`` reports for it
    included) is reported in the result, never written, and never stops the others.

    Raises:
        StoreError: if ``out`` holds a store prepared with another config.
        ValueError: if the dataset as a whole has an error (e.g. an unreadable splits file); nothing is written.
    """
    import dask

    config = config or PrepareConfig()
    index: DatasetIndex = index_dataset(Path(dataset_dir))
    dataset_level = dataset_problems(index)
    for problem in dataset_level:
        if problem.severity == "warning":
            log.warning("%s: %s", problem.file, problem.message)
    errors = [p for p in dataset_level if p.severity == "error"]
    if errors:
        raise ValueError(
            "; ".join(f"{p.file}: {p.message} — {p.fix}" for p in errors)
            + "; nothing was prepared (run 'synbt data check')"
        )
    cases = list(index.cases)
    if case_ids is not None:
        wanted = {c.upper() for c in case_ids}
        cases = [c for c in cases if c.case_id in wanted]
    card = {
        "synthetic": False,
        "source_dataset": index.dataset_name(),
        # the folder's name only: an absolute local path would leak into stores shared with other groups
        "source_dir": Path(dataset_dir).resolve().name,
        "prepare_config": config_to_dict(config),
        "generator_version": __version__,
    }
    with writer_lock(str(out), command="prepare"):
        store = CaseStore.create(out, kind="prepared", card=card, layout=layout, exist_ok=True)
        if store.attrs.get("prepare_config") != card["prepare_config"]:
            raise StoreError(
                f"{out} was prepared with another config {store.attrs.get('prepare_config')}; "
                "use a new --out or the same options"
            )
        store.remove_incomplete()
        result = PrepareResult()
        todo = []
        for case in cases:
            if store.is_complete(case.case_id):
                result.skipped.append(case.case_id)
            else:
                todo.append(case)
        lock = threading.Lock()
        done = [len(result.skipped)]
        total = len(cases)
        report(progress, done[0], total)

        def run(case: CaseRecord) -> None:
            try:
                arrays, attrs = prepare_case(case, config, root=index.root)
                store.write_case(case.case_id, arrays, attrs)
                _store_anatomy(store, [case.case_id])
                with lock:
                    result.prepared.append(case.case_id)
                    result.padding[case.case_id] = attrs["fov_padding_fraction"]
                    result.source_extent_mm[case.case_id] = attrs["source_extent_mm"]
            except Exception as exc:  # one bad case never stops the rest
                expected = isinstance(exc, (ValueError, StoreError))
                message = str(exc) if expected else f"{case.case_id}: failed unexpectedly ({describe_exception(exc)})"
                log.warning("case %s failed: %s", case.case_id, message)
                if not expected:
                    log.debug("case %s failed", case.case_id, exc_info=True)
                with lock:
                    result.failed[case.case_id] = message
            with lock:
                done[0] += 1
                report(progress, done[0], total)

        tasks = [dask.delayed(run)(case) for case in todo]
        dask.compute(*tasks, scheduler="threads", num_workers=max(1, workers))
        _store_anatomy(store, result.skipped)  # cases a kill or an older release left without one
        store.update_card(case_ids=store.case_ids())
    result.prepared.sort()
    return result
