"""Check a MAMA-MIA-layout dataset and report every problem in one run.

Each :class:`Problem` names the case, the file, what is wrong and what to do. Errors make a
case unusable; warnings do not (``strict`` turns the empty-mask warning into an error).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from synbt_factory.data.mamamia import CaseRecord, DatasetIndex
from synbt_factory.data.nifti import NiftiReadError, read_full, same_geometry
from synbt_factory.progress import ProgressFn, report
from synbt_factory.store.case_ids import CaseIdError, validate_case_id

__all__ = ["Problem", "CaseReport", "check_case", "check_dataset"]

log = logging.getLogger(__name__)

Severity = Literal["error", "warning"]


@dataclass(frozen=True, kw_only=True)
class Problem:
    case_id: str
    file: str
    severity: Severity
    message: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.severity}] {self.case_id}: {self.file}: {self.message} — {self.fix}"


@dataclass(frozen=True, kw_only=True)
class CaseReport:
    """What ``check`` found for one case, plus the summary ``index`` shows."""

    case_id: str
    problems: tuple[Problem, ...]
    shape: tuple[int, ...] | None
    spacing: tuple[float, ...] | None
    n_phases: int
    split: str | None
    tumor_voxels: int | None

    @property
    def usable(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def check_case(case: CaseRecord, root: Path, *, strict: bool = False, read_data: bool = True) -> CaseReport:
    """All problems of one case. With ``read_data`` every file is read completely (NaN, truncation)."""
    problems: list[Problem] = []

    def add(file: Path | str, severity: Severity, message: str, fix: str) -> None:
        problems.append(Problem(case_id=case.case_id, file=_rel(Path(file), root) if isinstance(file, Path) else file,
                                severity=severity, message=message, fix=fix))

    try:
        validate_case_id(case.folder_name)
    except CaseIdError as exc:
        add(case.image_dir, "error", str(exc).split(":")[0] + " is not a safe path component",
            "rename the folder and its files to letters, digits, '_', '-' or '.'")
    for f in case.unexpected_files:
        add(f, "warning", f"NIfTI file does not follow {case.folder_name}_NNNN.nii.gz and is ignored",
            "rename it to <ID>_<phase:04d>.nii.gz if it is a phase")
    if 0 not in case.phase_numbers:
        add(case.image_dir, "error", "missing pre-contrast phase _0000", f"add {case.folder_name}_0000.nii.gz")
    if not any(n > 0 for n in case.phase_numbers):
        add(case.image_dir, "error", "no post-contrast phase (_0001 ...)", f"add {case.folder_name}_0001.nii.gz")
    if len(set(case.phase_numbers)) != len(case.phase_numbers):
        add(case.image_dir, "error", "two files share one phase number (e.g. .nii and .nii.gz)", "keep one file per phase")

    geometries = {}
    shape = spacing = None
    for number, path in zip(case.phase_numbers, case.phases):
        try:
            if read_data:
                data, geom = read_full(path)
                n_bad = int(np.count_nonzero(~np.isfinite(data)))
                if n_bad:
                    add(path, "error", f"{n_bad} NaN/Inf voxels", "re-export the image or replace non-finite voxels")
            else:
                from synbt_factory.data.nifti import read_geometry

                geom = read_geometry(path)
        except NiftiReadError as exc:
            add(path, "error", f"unreadable: {exc.args[0].split(': ', 1)[-1]}", "re-download or re-export this file")
            continue
        geometries[number] = (path, geom)
    if geometries:
        ref_number = 0 if 0 in geometries else min(geometries)
        ref_path, ref = geometries[ref_number]
        shape, spacing = ref.shape, ref.spacing
        for number, (path, geom) in sorted(geometries.items()):
            if number != ref_number and not same_geometry(geom, ref):
                add(path, "error", f"geometry differs from {ref_path.name} (shape {geom.shape} vs {ref.shape} or affine)",
                    "resample all phases of the case onto one grid")

    tumor_voxels = None
    if case.expert_mask is None:
        add(f"segmentations/expert/{case.folder_name}.nii.gz", "error", "expert segmentation is missing",
            "add the tumor mask (or remove the case from the dataset)")
    else:
        try:
            mask, mgeom = read_full(case.expert_mask) if read_data else (None, None)
            if mask is not None:
                if geometries and not same_geometry(mgeom, geometries[min(geometries)][1]):
                    add(case.expert_mask, "error",
                        f"mask shape {mgeom.shape}/affine differs from the image {shape}",
                        "resample the mask onto the pre-contrast image grid (nearest neighbour)")
                values = np.unique(mask)
                if not np.all(np.isin(values, (0, 1))):
                    add(case.expert_mask, "warning", f"mask values {values[:6].tolist()} are not 0/1; > 0 counts as tumor",
                        "binarise the mask")
                tumor_voxels = int(np.count_nonzero(mask > 0))
                if tumor_voxels == 0:
                    add(case.expert_mask, "error" if strict else "warning", "expert mask is empty",
                        "check the annotation; empty cases can only serve as healthy backgrounds")
        except NiftiReadError as exc:
            add(case.expert_mask, "error", f"unreadable: {exc.args[0].split(': ', 1)[-1]}", "re-download or re-export this file")
    if case.info_path is not None:
        try:
            case.info()
        except ValueError as exc:
            add(case.info_path, "warning", str(exc).split(": ", 1)[-1], "fix or remove the JSON file")
    return CaseReport(case_id=case.case_id, problems=tuple(problems), shape=shape, spacing=spacing,
                      n_phases=len(case.phases), split=case.split, tumor_voxels=tumor_voxels)


def check_dataset(
    index: DatasetIndex, *, strict: bool = False, read_data: bool = True, workers: int = 2,
    progress: ProgressFn | None = None,
) -> list[CaseReport]:
    """Check every case (threads; NIfTI decompression releases the GIL). Order follows the index."""
    total = len(index.cases)
    reports: list[CaseReport] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(check_case, c, index.root, strict=strict, read_data=read_data) for c in index.cases]
        for i, fut in enumerate(futures):
            reports.append(fut.result())
            report(progress, i + 1, total)
    return reports
