"""Score any model's NIfTI predictions against ground-truth NIfTI masks (same metrics as evaluation).

Files are matched by case id, MAMA-MIA style: ``<ID>.nii.gz`` (or ``.nii``), compared
case-insensitively (``DUKE_001.nii.gz`` matches ``duke_001.nii``). Voxels > 0 are tumor. The
voxel spacing comes from the truth file's header; prediction and truth must share shape and
affine (a prediction in another grid is an error naming both files, never silently resampled).
Files without a partner are listed in the result.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synbt_factory.data.nifti import read_full
from synbt_factory.metrics import (
    EMPTY_RULE,
    mama_mia_case,
    mama_mia_score,
    segmentation_metrics,
    summarize,
)
from synbt_factory.progress import ProgressFn, report

__all__ = ["ScoreError", "ScoreResult", "index_nifti_folder", "score_predictions", "case_id_of"]

log = logging.getLogger(__name__)

_NIFTI = re.compile(r"^(?P<id>.+?)\.nii(\.gz)?$", re.IGNORECASE)


class ScoreError(ValueError):
    """Predictions and truths that cannot be scored (missing folders, mismatched grids, duplicates)."""


@dataclass(frozen=True)
class ScoreResult:
    """Per-case rows (truth-file case ids), summary, and files left without a partner."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    unmatched_predictions: list[Path]
    unmatched_truths: list[Path]


def case_id_of(path: Path) -> str | None:
    """The case id of a ``<ID>.nii[.gz]`` file name, or ``None`` for other files."""
    m = _NIFTI.match(Path(path).name)
    return m.group("id") if m else None


def index_nifti_folder(folder: Path) -> dict[str, Path]:
    """``{CASE_ID (upper case): path}`` of the NIfTI files directly in ``folder``.

    Raises:
        ScoreError: if the folder is missing or two files share a case id ignoring case/extension.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ScoreError(f"{folder} is not a folder of NIfTI masks")
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        case_id = case_id_of(path)
        if case_id is None:
            continue
        key = case_id.upper()
        if key in out:
            raise ScoreError(f"{out[key].name} and {path.name} in {folder} are the same case {case_id!r}; keep one")
        out[key] = path
    return out


def score_predictions(
    pred_dir: Path,
    truth_dir: Path,
    *,
    empty_penalty: str = "diagonal",
    mama_mia: bool = False,
    atol_mm: float = 1e-3,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """Dice, HD95 (mm) and MSD (mm) of every prediction that has a truth file.

    Args:
        pred_dir: folder of predicted masks ``<ID>.nii[.gz]``.
        truth_dir: folder of reference masks ``<ID>.nii[.gz]`` (e.g. ``segmentations/expert``).
        empty_penalty: ``"diagonal"`` or ``"nan"`` (see :mod:`synbt_factory.metrics`).
        mama_mia: add the MAMA-MIA challenge columns and score.
        atol_mm: tolerance on affine entries when checking that the grids agree.

    Raises:
        ScoreError: no case matches, or a pair differs in shape or affine (naming the files).
    """
    preds = index_nifti_folder(Path(pred_dir))
    truths = index_nifti_folder(Path(truth_dir))
    matched = sorted(set(preds) & set(truths))
    unmatched_pred = [preds[k] for k in sorted(set(preds) - set(truths))]
    unmatched_truth = [truths[k] for k in sorted(set(truths) - set(preds))]
    if not matched:
        raise ScoreError(
            f"no prediction in {pred_dir} ({len(preds)} NIfTI files) matches a truth file in {truth_dir} "
            f"({len(truths)} files); name predictions <ID>.nii.gz like the truths"
        )
    if unmatched_pred:
        log.warning(
            "%d prediction(s) without a truth file: %s", len(unmatched_pred), ", ".join(p.name for p in unmatched_pred)
        )
    if unmatched_truth:
        log.warning(
            "%d truth file(s) without a prediction: %s",
            len(unmatched_truth),
            ", ".join(p.name for p in unmatched_truth),
        )

    rows: list[dict[str, Any]] = []
    for i, key in enumerate(matched, start=1):
        pred_path, truth_path = preds[key], truths[key]
        truth, tg = read_full(truth_path)
        pred, pg = read_full(pred_path)
        if truth.ndim != 3 or pred.ndim != 3:
            raise ScoreError(f"{pred_path} {pred.shape} / {truth_path} {truth.shape}: masks must be 3D")
        if pg.shape != tg.shape:
            raise ScoreError(
                f"{pred_path} has shape {pg.shape} but its truth {truth_path} has {tg.shape}; "
                "write predictions in the truth's grid"
            )
        if not np.allclose(pg.affine, tg.affine, atol=atol_mm):
            diff = float(np.abs(pg.affine - tg.affine).max())
            raise ScoreError(
                f"{pred_path} and its truth {truth_path} have different affines (max difference "
                f"{diff:.4g}); write predictions in the truth's grid"
            )
        spacing = tuple(float(s) for s in tg.spacing)
        m = segmentation_metrics(pred > 0, truth > 0, spacing, empty_penalty=empty_penalty)  # type: ignore[arg-type]
        row: dict[str, Any] = {"case_id": case_id_of(truth_path), **m.as_dict()}
        if mama_mia:
            mm = mama_mia_case(pred > 0, truth > 0, spacing)
            row.update({"mama_mia_dsc": mm.dsc, "mama_mia_hd95_max": mm.hd95_max, "mama_mia_norm_hd": mm.norm_hd})
        rows.append(row)
        report(progress, i, len(matched), {"dice": float(np.mean([r["dice"] for r in rows]))})

    names = ["dice", "hd95", "msd"] + (["mama_mia_dsc", "mama_mia_norm_hd"] if mama_mia else [])
    summary: dict[str, Any] = {
        "pred_dir": str(pred_dir),
        "truth_dir": str(truth_dir),
        "n_cases": len(rows),
        "empty_rule": EMPTY_RULE,
        "empty_penalty": empty_penalty,
        "metrics": summarize(rows, names),
        "unmatched_predictions": [p.name for p in unmatched_pred],
        "unmatched_truths": [p.name for p in unmatched_truth],
    }
    if mama_mia:
        summary["mama_mia_score"] = mama_mia_score(
            [r["mama_mia_dsc"] for r in rows], [r["mama_mia_norm_hd"] for r in rows]
        )
    return ScoreResult(
        rows=rows, summary=summary, unmatched_predictions=unmatched_pred, unmatched_truths=unmatched_truth
    )
