"""Evaluate a trained segmenter on a prepared store: sliding-window inference → Dice / HD95 / MSD.

For each case of the chosen split, the whole volume (pre-contrast + first post-contrast phase)
is segmented with MONAI ``sliding_window_inference`` (window = the checkpoint's training crop
unless given; the paper uses 128×192×192, i.e. (X, Y, Z) = 192×192×128), then scored with
:mod:`synbt_factory.metrics` in mm using the case's spacing.

Output folder::

    metrics.csv                 one row per case (case_id, dice, hd95, msd, voxel counts, seconds
                                [, MAMA-MIA dsc / hd95_max / norm_hd])
    summary.json                mean / std / median per metric, the empty-mask rule, settings
                                [, MAMA-MIA performance score]
    predictions/<ID>.nii.gz     (--save-nifti) uint8 mask in the prepared grid (case ``affine``)
    predictions_original/<ID>.nii.gz
                                (--save-nifti, when the case records its source NIfTI files) the
                                mask resampled (nearest neighbour) onto the original image grid
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synbt_factory.data.mixing import case_splits, load_case
from synbt_factory.device import resolve_device
from synbt_factory.io import atomic_write_text
from synbt_factory.metrics import (
    EMPTY_RULE,
    mama_mia_case,
    mama_mia_score,
    segmentation_metrics,
    summarize,
)
from synbt_factory.models.segmenters import check_spatial_size, predict_volume
from synbt_factory.progress import ProgressFn, report
from synbt_factory.store import CaseStore
from synbt_factory.training.segmentation import load_segmenter

__all__ = ["EvalConfig", "EvalResult", "evaluate_segmenter", "write_rows_csv", "save_prediction_nifti", "CSV_COLUMNS"]

log = logging.getLogger(__name__)

CSV_COLUMNS = ("case_id", "dice", "hd95", "msd", "pred_voxels", "truth_voxels", "seconds")
MAMA_COLUMNS = ("mama_mia_dsc", "mama_mia_hd95_max", "mama_mia_norm_hd")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What to evaluate and how.

    Args:
        split: ``"test"``, ``"val"`` or ``"train"`` (as divided by the checkpoint's split settings).
        window: sliding window (X, Y, Z); ``None`` = the checkpoint's validation window.
        overlap: window overlap fraction.
        sw_batch_size: windows per forward pass (>= 2 on CPU).
        empty_penalty: ``"diagonal"`` or ``"nan"`` (see :mod:`synbt_factory.metrics`).
        mama_mia: also score the MAMA-MIA challenge way.
        save_nifti: write predictions as NIfTI.
        max_cases: evaluate at most this many cases.
        case_ids: evaluate exactly these cases (overrides ``split``).
    """

    split: str = "test"
    window: tuple[int, int, int] | None = None
    overlap: float = 0.25
    sw_batch_size: int = 2
    empty_penalty: str = "diagonal"
    mama_mia: bool = False
    save_nifti: bool = False
    max_cases: int | None = None
    case_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {self.split!r}")
        if self.window is not None and (len(self.window) != 3 or any(int(w) < 1 for w in self.window)):
            raise ValueError(f"window must be three positive sizes, got {self.window}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if self.empty_penalty not in ("diagonal", "nan"):
            raise ValueError(f"empty_penalty must be 'diagonal' or 'nan', got {self.empty_penalty!r}")
        if self.max_cases is not None and self.max_cases < 1:
            raise ValueError(f"max_cases must be >= 1, got {self.max_cases}")


@dataclass(frozen=True)
class EvalResult:
    """Per-case rows, the summary dict and the files written."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    csv_path: Path | None
    summary_path: Path | None


def write_rows_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` (dicts) as CSV with ``columns`` (floats with full precision)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
    return atomic_write_text(path, text.getvalue())


def save_prediction_nifti(path: Path, mask: np.ndarray, affine: np.ndarray) -> Path:
    """Write a (X, Y, Z) uint8 mask with ``affine`` (indices → RAS+ mm) as NIfTI (sform and qform)."""
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(mask, dtype=np.uint8), np.asarray(affine, dtype=np.float64))
    img.set_sform(img.affine, code=1)
    img.set_qform(img.affine, code=1)
    nib.save(img, str(path))
    return path


def _source_reference(attrs: dict[str, Any], dataset: Path | None = None) -> Path | None:
    """The original NIfTI whose grid a prediction is resampled onto: the expert mask (last of
    ``source_files``) when it exists, else the first (pre-contrast) image.

    ``source_files`` are relative to the dataset root the store was prepared from (``dataset``); stores
    prepared by older releases recorded absolute paths, which are used as they are when they exist.
    """
    files = attrs.get("source_files")
    if isinstance(files, dict):
        files = list(files.values())
    if not isinstance(files, (list, tuple)) or not files:
        return None
    for candidate in (files[-1], files[0]):
        p = Path(str(candidate))
        if not p.is_absolute():
            if dataset is None:
                continue
            p = Path(dataset) / p
        if p.is_file():
            return p
    return None


def _save_original_geometry(path: Path, mask: np.ndarray, affine: np.ndarray, reference: Path) -> Path:
    import nibabel as nib
    from nibabel.processing import resample_from_to

    src = nib.Nifti1Image(np.asarray(mask, dtype=np.uint8), np.asarray(affine, dtype=np.float64))
    ref = nib.load(str(reference))
    out = resample_from_to(src, (ref.shape[:3], ref.affine), order=0, mode="constant", cval=0)
    return save_prediction_nifti(path, np.asarray(out.dataobj) > 0, ref.affine)


def evaluate_segmenter(
    checkpoint: Path,
    data: str | Path,
    *,
    config: EvalConfig | None = None,
    out_dir: Path | None = None,
    device: str = "auto",
    progress: ProgressFn | None = None,
    dataset: Path | None = None,
) -> EvalResult:
    """Segment and score the cases of a prepared store with a trained checkpoint.

    Args:
        checkpoint: ``best.pt`` / ``last.pt`` of :func:`synbt_factory.training.segmentation.train_segmenter`.
        data: prepared store location.
        config: evaluation settings.
        out_dir: folder for ``metrics.csv``, ``summary.json`` and predictions (``None`` = write nothing).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: ``(cases done, total, {"dice": running mean})`` callback.
        dataset: the dataset root the store was prepared from; with ``config.save_nifti``, predictions are also
            written on each case's original grid (``predictions_original/``), found through ``source_files``.

    Raises:
        ValueError: if the split has no cases or the window does not suit the network.
    """
    config = config or EvalConfig()
    dev = resolve_device(device)
    model, train_config, payload = load_segmenter(Path(checkpoint), device=dev)
    window = tuple(int(w) for w in (config.window or train_config.window))
    check_spatial_size(train_config.model, window, what="window")
    store = CaseStore.open(str(data))
    if config.case_ids is not None:
        ids = list(config.case_ids)
        missing = [c for c in ids if c not in store]
        if missing:
            raise ValueError(f"cases {', '.join(missing)} are not complete cases of {store.location}")
    else:
        splits = case_splits(store, val_fraction=train_config.val_fraction, split_seed=train_config.split_seed)
        ids = list(splits.get(config.split))
    if config.max_cases is not None:
        ids = ids[: config.max_cases]
    if not ids:
        raise ValueError(f"no {config.split!r} cases in {store.location}; check the cases' 'split' attributes")
    out = Path(out_dir) if out_dir is not None else None
    log.info(
        "evaluating %s on %d %s cases of %s (window %s, %s)", checkpoint, len(ids), config.split, data, window, dev
    )

    rows: list[dict[str, Any]] = []
    no_reference: list[str] = []
    for i, case_id in enumerate(ids, start=1):
        t0 = time.perf_counter()
        image, mask, attrs = load_case(store, case_id)
        pred = predict_volume(
            model,
            image,
            window,
            overlap=config.overlap,
            sw_batch_size=config.sw_batch_size,
            device=dev,
            amp=train_config.amp,
        )
        spacing = tuple(float(s) for s in attrs.get("spacing", (1.0, 1.0, 1.0)))
        m = segmentation_metrics(pred, mask, spacing, empty_penalty=config.empty_penalty)  # type: ignore[arg-type]
        row: dict[str, Any] = {"case_id": case_id, **m.as_dict()}
        if config.mama_mia:
            mm = mama_mia_case(pred, mask, spacing)
            row.update({"mama_mia_dsc": mm.dsc, "mama_mia_hd95_max": mm.hd95_max, "mama_mia_norm_hd": mm.norm_hd})
        if out is not None and config.save_nifti:
            affine = np.asarray(attrs.get("affine", np.eye(4)), dtype=np.float64)
            save_prediction_nifti(out / "predictions" / f"{case_id}.nii.gz", pred, affine)
            reference = _source_reference(attrs, dataset)
            if reference is not None:
                _save_original_geometry(out / "predictions_original" / f"{case_id}.nii.gz", pred, affine, reference)
            else:
                no_reference.append(case_id)
        row["seconds"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
        log.debug("%s: dice %.4f hd95 %.2f msd %.2f", case_id, row["dice"], row["hd95"], row["msd"])
        report(progress, i, len(ids), {"dice": float(np.mean([r["dice"] for r in rows]))})

    if no_reference:
        where = (
            "its source files were not found under --dataset " + str(dataset)
            if dataset is not None
            else "pass --dataset, the folder the store was prepared from"
        )
        log.warning(
            "%d prediction(s) written on the prepared grid only (not on the original grid: %s), e.g. %s",
            len(no_reference),
            where,
            no_reference[0],
        )
    names = ["dice", "hd95", "msd"] + (["mama_mia_dsc", "mama_mia_norm_hd"] if config.mama_mia else [])
    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "split": config.split if config.case_ids is None else "custom",
        "n_cases": len(rows),
        "model": train_config.model.name,
        "preset": train_config.model.preset,
        "window": list(window),
        "overlap": config.overlap,
        "checkpoint_step": int(payload.get("step", -1)),
        "empty_rule": EMPTY_RULE,
        "empty_penalty": config.empty_penalty,
        "metrics": summarize(rows, names),
    }
    if config.mama_mia:
        summary["mama_mia_score"] = mama_mia_score(
            [r["mama_mia_dsc"] for r in rows], [r["mama_mia_norm_hd"] for r in rows]
        )
    csv_path = summary_path = None
    if out is not None:
        columns = CSV_COLUMNS + (MAMA_COLUMNS if config.mama_mia else ())
        csv_path = write_rows_csv(out / "metrics.csv", rows, columns)
        summary_path = out / "summary.json"
        summary_path.write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    return EvalResult(rows=rows, summary=summary, csv_path=csv_path, summary_path=summary_path)


def _json_safe(value: Any) -> Any:
    """NaN/inf → None so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
