"""Discover cases laid out as the public MAMA-MIA dataset (and the phantom, which copies it).

Layout::

    images/<ID>/<ID>_0000.nii.gz        0 = pre-contrast, 1 = first post-contrast, 2 ...
    segmentations/expert/<ID>.nii.gz    tumor ground truth
    segmentations/automatic/<ID>.nii.gz
    patient_info_files/<id>.json
    train_test_splits.csv               wide: columns train_split, test_split
    tissue/labels/<ID>.nii.gz           optional (phantom; or Duke-style FGT labels a user adds)
    tissue/breast/<ID>.nii.gz           optional breast mask

File and folder names are matched case-insensitively (releases differ in casing); non-NIfTI
files (e.g. ``SYNAPSE_METADATA_MANIFEST.tsv``) are ignored; phases are found by globbing and
ordered numerically. Case ids are the image folder names in upper case.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CaseRecord", "DatasetIndex", "DatasetLayoutError", "index_dataset", "is_nifti"]

log = logging.getLogger(__name__)

_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_PHASE_RE = re.compile(r"^(?P<id>.+)_(?P<phase>\d{4})\.nii(?:\.gz)?$", re.IGNORECASE)


class DatasetLayoutError(FileNotFoundError):
    """The folder is not laid out like MAMA-MIA."""


def is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_NIFTI_SUFFIXES)


def _strip_nifti(name: str) -> str:
    low = name.lower()
    for suffix in _NIFTI_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True, kw_only=True)
class CaseRecord:
    """Where one case's files are.

    Attributes:
        case_id: canonical id (upper case of the image folder name).
        image_dir: the case's image folder.
        phases: NIfTI files ordered by phase number; ``phases[0]`` is pre-contrast.
        phase_numbers: the numbers parsed from the file names (``0, 1, 2 ...``).
        expert_mask / automatic_mask / info_path / tissue_labels / breast_mask: paths or None.
        split: ``"train"``, ``"test"`` or None when the splits file does not list the case.
        unexpected_files: NIfTI files in the folder that do not follow ``<ID>_NNNN``.
    """

    case_id: str
    folder_name: str
    image_dir: Path
    phases: tuple[Path, ...]
    phase_numbers: tuple[int, ...]
    expert_mask: Path | None
    automatic_mask: Path | None
    info_path: Path | None
    tissue_labels: Path | None
    breast_mask: Path | None
    split: str | None
    unexpected_files: tuple[Path, ...] = ()

    @property
    def n_post_phases(self) -> int:
        return sum(1 for n in self.phase_numbers if n > 0)

    def info(self) -> dict[str, Any] | None:
        """The patient info JSON, or None if absent (raises ValueError naming the file if unreadable)."""
        if self.info_path is None:
            return None
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.info_path}: cannot read patient info JSON ({exc})") from exc


@dataclass(frozen=True, kw_only=True)
class DatasetIndex:
    """All cases found under ``root``, sorted by id."""

    root: Path
    cases: tuple[CaseRecord, ...]
    splits_file: Path | None
    notes: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.cases)

    def get(self, case_id: str) -> CaseRecord:
        for case in self.cases:
            if case.case_id == case_id.upper():
                return case
        raise KeyError(f"case {case_id!r} is not in {self.root}")

    def dataset_name(self) -> str:
        """``imaging_data.dataset`` of the first case's info (e.g. ``PHANTOM``), else the folder name."""
        for case in self.cases:
            try:
                info = case.info()
            except ValueError:
                continue
            if info and isinstance(info.get("imaging_data"), dict) and info["imaging_data"].get("dataset"):
                return str(info["imaging_data"]["dataset"])
        return self.root.name


def _child_ci(folder: Path, name: str) -> Path | None:
    """The child of ``folder`` whose name equals ``name`` case-insensitively."""
    if not folder.is_dir():
        return None
    target = name.lower()
    for child in folder.iterdir():
        if child.name.lower() == target:
            return child
    return None


def _nifti_by_stem(folder: Path | None) -> dict[str, Path]:
    """Map lower-case stem → NIfTI path for every NIfTI file in ``folder``."""
    if folder is None or not folder.is_dir():
        return {}
    return {_strip_nifti(p.name).lower(): p for p in sorted(folder.iterdir()) if is_nifti(p)}


def _read_splits(path: Path | None) -> dict[str, str]:
    """Wide CSV: one column per split (``train_split``, ``test_split``), shorter columns padded empty."""
    if path is None:
        return {}
    splits: dict[str, str] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return {}
        for row in reader:
            for column, value in row.items():
                if column is None or not value or not value.strip():
                    continue
                name = column.strip().lower().removesuffix("_split")
                splits[value.strip().upper()] = name
    return splits


def index_dataset(root: Path) -> DatasetIndex:
    """Find every case under ``root``.

    Raises:
        DatasetLayoutError: if ``root`` has no ``images`` folder, naming what was expected.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root} is not a folder; pass the dataset root (the folder holding images/)")
    images = _child_ci(root, "images")
    if images is None or not images.is_dir():
        raise DatasetLayoutError(
            f"{root} has no images/ folder; expected the MAMA-MIA layout images/<ID>/<ID>_0000.nii.gz "
            "(make one with: synbt data phantom --out DIR)"
        )
    segs = _child_ci(root, "segmentations")
    expert = _nifti_by_stem(_child_ci(segs, "expert") if segs else None)
    automatic = _nifti_by_stem(_child_ci(segs, "automatic") if segs else None)
    tissue_root = _child_ci(root, "tissue")
    tissue = _nifti_by_stem(_child_ci(tissue_root, "labels") if tissue_root else None)
    breast = _nifti_by_stem(_child_ci(tissue_root, "breast") if tissue_root else None)
    info_dir = _child_ci(root, "patient_info_files")
    infos = (
        {p.stem.lower(): p for p in info_dir.iterdir() if p.suffix.lower() == ".json"} if info_dir else {}
    )
    splits_file = _child_ci(root, "train_test_splits.csv")
    splits = _read_splits(splits_file)

    cases = []
    notes = []
    for case_dir in sorted(p for p in images.iterdir() if p.is_dir()):
        key = case_dir.name.lower()
        numbered: list[tuple[int, Path]] = []
        unexpected: list[Path] = []
        for f in sorted(case_dir.iterdir()):
            if not is_nifti(f):
                continue
            m = _PHASE_RE.match(f.name)
            if m and m.group("id").lower() == key:
                numbered.append((int(m.group("phase")), f))
            else:
                unexpected.append(f)
        numbered.sort(key=lambda t: t[0])
        if not numbered and not unexpected:
            notes.append(f"{case_dir}: no NIfTI files, skipped")
            continue
        cases.append(
            CaseRecord(
                case_id=case_dir.name.upper(),
                folder_name=case_dir.name,
                image_dir=case_dir,
                phases=tuple(p for _, p in numbered),
                phase_numbers=tuple(n for n, _ in numbered),
                expert_mask=expert.get(key),
                automatic_mask=automatic.get(key),
                info_path=infos.get(key),
                tissue_labels=tissue.get(key),
                breast_mask=breast.get(key),
                split=splits.get(case_dir.name.upper()),
                unexpected_files=tuple(unexpected),
            )
        )
    cases.sort(key=lambda c: c.case_id)
    log.debug("indexed %d cases under %s", len(cases), root)
    return DatasetIndex(root=root, cases=tuple(cases), splits_file=splits_file, notes=tuple(notes))
