"""Check a MAMA-MIA-layout dataset and report every problem in one run.

Each :class:`Problem` names the case, the file, what is wrong and what to do. Errors make a
case unusable; warnings do not (``strict`` turns the empty-mask warning into an error).
``prepare`` runs the same per-case check (:func:`check_and_load_case`) and prepares only from
the volumes it validated, so a case ``check`` rejects is never written.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from synbt_factory.data.mamamia import CaseRecord, DatasetIndex
from synbt_factory.data.nifti import (
    Geometry,
    NiftiReadError,
    geometry_problems,
    read_full,
    read_geometry,
    same_geometry,
)
from synbt_factory.progress import ProgressFn, report
from synbt_factory.store.case_ids import CaseIdError, validate_case_id

__all__ = [
    "Problem",
    "CaseReport",
    "Volume",
    "check_case",
    "check_and_load_case",
    "check_dataset",
    "dataset_problems",
    "describe_exception",
    "relative_name",
    "DATASET",
]

log = logging.getLogger(__name__)

Severity = Literal["error", "warning"]
Volume = tuple[np.ndarray, Geometry]

#: ``case_id`` of problems that belong to the whole dataset (e.g. the splits file).
DATASET = "(dataset)"

_UNREADABLE_FIX = "re-download or re-export this file"


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

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` of the innermost cause of ``exc`` (wrappers such as MONAI's are skipped)."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        exc = inner
    if isinstance(exc, NiftiReadError):
        return exc.reason
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to the dataset root when it lies inside it (as messages name files)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _phase_gap_message(numbers: tuple[int, ...]) -> str | None:
    present = sorted(set(numbers))
    if not present or 0 not in present:
        return None
    missing = [n for n in range(1, present[-1] + 1) if n not in present]
    if not missing:
        return None
    names = ", ".join(f"_{n:04d}" for n in missing)
    return f"phases {', '.join(map(str, present))}: {names} {'is' if len(missing) == 1 else 'are'} missing"


def _check(  # noqa: C901 - one linear list of checks reads best in one place
    case: CaseRecord,
    root: Path,
    *,
    strict: bool,
    read_data: bool,
    keep: dict[Path, Volume] | None,
) -> CaseReport:
    problems: list[Problem] = []

    def add(file: Path | str, severity: Severity, message: str, fix: str) -> None:
        name = relative_name(file, root) if isinstance(file, Path) else file
        problems.append(Problem(case_id=case.case_id, file=name, severity=severity, message=message, fix=fix))

    def read(path: Path) -> Volume | None:
        """Read one file, or add an error naming it; also flags series, bad spacing and bad affines."""
        try:
            if read_data:
                volume = read_full(path)
            else:
                volume = (np.empty(0, np.float32), read_geometry(path))
        except NiftiReadError as exc:
            fix = "fix the link or the file's permissions" if exc.reason.startswith("cannot open") else _UNREADABLE_FIX
            add(path, "error", f"unreadable: {exc.reason}", fix)
            return None
        bad = geometry_problems(volume[1])
        for message in bad:
            add(path, "error", message, "re-export it as one 3D volume with a valid header (pixdim, affine)")
        if bad:
            return None
        if read_data:
            n_bad = int(volume[0].size - np.count_nonzero(np.isfinite(volume[0])))
            if n_bad:
                add(path, "error", f"{n_bad} NaN/Inf voxels", "re-export the image or replace non-finite voxels")
        if keep is not None:
            keep[path] = volume
        return volume

    try:
        validate_case_id(case.folder_name)
    except CaseIdError as exc:
        add(
            case.image_dir,
            "error",
            str(exc).split(":")[0] + " is not a safe path component",
            "rename the folder and its files to letters, digits, '_', '-' or '.'",
        )
    if case.listing_error is not None:
        add(case.image_dir, "error", case.listing_error, "make the folder readable")
    if len(set(case.listed_splits)) > 1:
        add(
            "train_test_splits.csv",
            "error",
            f"{case.case_id} is listed in {' and '.join(case.listed_splits)} (train/test leakage)",
            "keep the case in exactly one column of the splits file",
        )
    for f in case.unexpected_files:
        add(
            f,
            "warning",
            f"NIfTI file does not follow {case.folder_name}_NNNN.nii.gz and is ignored",
            "rename it to <ID>_<phase:04d>.nii.gz if it is a phase",
        )
    if 0 not in case.phase_numbers:
        add(case.image_dir, "error", "missing pre-contrast phase _0000", f"add {case.folder_name}_0000.nii.gz")
    if not any(n > 0 for n in case.phase_numbers):
        add(case.image_dir, "error", "no post-contrast phase (_0001 ...)", f"add {case.folder_name}_0001.nii.gz")
    if len(set(case.phase_numbers)) != len(case.phase_numbers):
        add(
            case.image_dir,
            "error",
            "two files share one phase number (e.g. .nii and .nii.gz)",
            "keep one file per phase",
        )
    gap = _phase_gap_message(case.phase_numbers)
    if gap:
        add(
            case.image_dir,
            "error",
            gap,
            "restore the missing phase, or renumber the files consecutively if it never existed",
        )

    geometries: dict[int, tuple[Path, Geometry]] = {}
    shape = spacing = None
    for number, path in zip(case.phase_numbers, case.phases, strict=True):
        volume = read(path)
        if volume is None:
            continue
        geometries.setdefault(number, (path, volume[1]))
        if number == 0 and read_data:
            data = volume[0]
            finite = data[np.isfinite(data)]
            if finite.size and float(finite.max()) == float(finite.min()):
                add(
                    path,
                    "error",
                    f"pre-contrast phase is constant (every voxel is {float(finite.max()):g})",
                    "re-export the pre-contrast image; it carries no anatomy",
                )
            elif finite.size and float(finite.max()) <= 0:
                add(
                    path,
                    "error",
                    "pre-contrast phase has no positive intensity",
                    "re-export the pre-contrast image (magnitude images are >= 0)",
                )
    ref: Geometry | None = None
    if geometries:
        ref_number = 0 if 0 in geometries else min(geometries)
        ref_path, ref = geometries[ref_number]
        shape, spacing = ref.shape, ref.spacing
        for number, (path, geom) in sorted(geometries.items()):
            if number != ref_number and not same_geometry(geom, ref):
                add(
                    path,
                    "error",
                    f"geometry differs from {ref_path.name} (shape {geom.shape} vs {ref.shape} or affine)",
                    "resample all phases of the case onto one grid",
                )

    def on_image_grid(path: Path, geom: Geometry, what: str) -> bool:
        if ref is not None and not same_geometry(geom, ref):
            add(
                path,
                "error",
                f"{what} shape {geom.shape}/affine differs from the image {ref.shape}",
                "resample it onto the pre-contrast image grid (nearest neighbour)",
            )
            return False
        return True

    tumor_voxels = None
    if case.expert_mask is None:
        add(
            f"segmentations/expert/{case.folder_name}.nii.gz",
            "error",
            "expert segmentation is missing",
            "add the tumor mask (or remove the case from the dataset)",
        )
    else:
        volume = read(case.expert_mask)
        if volume is not None and read_data:
            mask, mgeom = volume
            on_image_grid(case.expert_mask, mgeom, "mask")
            values = np.unique(mask[np.isfinite(mask)])
            if not np.all(np.isin(values, (0, 1))):
                add(
                    case.expert_mask,
                    "warning",
                    f"mask values {values[:6].tolist()} are not 0/1; > 0 counts as tumor",
                    "binarise the mask",
                )
            tumor_voxels = int(np.count_nonzero(mask > 0))
            if tumor_voxels == 0:
                add(
                    case.expert_mask,
                    "error" if strict else "warning",
                    "expert mask is empty",
                    "check the annotation; empty cases can only serve as healthy backgrounds",
                )
        elif volume is not None:
            on_image_grid(case.expert_mask, volume[1], "mask")
    for path, what in ((case.tissue_labels, "tissue labels"), (case.breast_mask, "breast mask")):
        if path is not None:
            volume = read(path)
            if volume is not None:
                on_image_grid(path, volume[1], what)
    if case.info_path is not None:
        try:
            case.info()
        except ValueError as exc:
            add(
                case.info_path,
                "warning",
                str(exc).split(": ", 1)[-1] + "; it is ignored",
                "fix or remove the JSON file",
            )
    return CaseReport(
        case_id=case.case_id,
        problems=tuple(problems),
        shape=shape,
        spacing=spacing,
        n_phases=len(case.phases),
        split=case.split,
        tumor_voxels=tumor_voxels,
    )


def check_case(case: CaseRecord, root: Path, *, strict: bool = False, read_data: bool = True) -> CaseReport:
    """All problems of one case. With ``read_data`` every file is read completely (NaN, truncation)."""
    return _check(case, root, strict=strict, read_data=read_data, keep=None)


def check_and_load_case(case: CaseRecord, root: Path, *, strict: bool = False) -> tuple[CaseReport, dict[Path, Volume]]:
    """:func:`check_case` with full reads, also returning every volume it read and found sound.

    ``prepare`` builds the case from these arrays, so each file is read once and what is prepared
    is exactly what was checked.
    """
    volumes: dict[Path, Volume] = {}
    return _check(case, root, strict=strict, read_data=True, keep=volumes), volumes


def _safe_check(case: CaseRecord, root: Path, *, strict: bool, read_data: bool) -> CaseReport:
    """:func:`check_case`, with an unexpected failure reported as an error of that case instead of a crash."""
    try:
        return check_case(case, root, strict=strict, read_data=read_data)
    except Exception as exc:  # one case's surprise never stops the run
        log.debug("check of %s failed", case.case_id, exc_info=True)
        problem = Problem(
            case_id=case.case_id,
            file=relative_name(case.image_dir, root),
            severity="error",
            message=f"check failed unexpectedly ({describe_exception(exc)})",
            fix="inspect the case's files; rerun with -v for details",
        )
        return CaseReport(
            case_id=case.case_id,
            problems=(problem,),
            shape=None,
            spacing=None,
            n_phases=len(case.phases),
            split=case.split,
            tumor_voxels=None,
        )


def dataset_problems(index: DatasetIndex) -> list[Problem]:
    """Problems of the dataset as a whole (the splits file, unreadable folders), each reported once."""
    return [
        Problem(
            case_id=DATASET, file=relative_name(i.file, index.root), severity=i.severity, message=i.message, fix=i.fix
        )
        for i in index.issues
    ]


def check_dataset(
    index: DatasetIndex,
    *,
    strict: bool = False,
    read_data: bool = True,
    workers: int = 2,
    progress: ProgressFn | None = None,
) -> list[CaseReport]:
    """Check every case (threads; NIfTI decompression releases the GIL). Order follows the index.

    Dataset-level problems are not in these reports: see :func:`dataset_problems`.
    """
    total = len(index.cases)
    reports: list[CaseReport] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_safe_check, c, index.root, strict=strict, read_data=read_data) for c in index.cases]
        for i, fut in enumerate(futures):
            reports.append(fut.result())
            report(progress, i + 1, total)
    return reports
