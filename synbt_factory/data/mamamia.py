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
ordered numerically. Case ids are the image folder names in upper case. Entries named like NIfTI
files are indexed whatever they are, so that ``check`` reports a broken link or a folder instead of
the phases being silently renumbered. The splits file is read as UTF-8 (a byte-order mark is
allowed); a case listed in two splits keeps both in ``listed_splits``, and problems that belong to
no single case (an unreadable splits file) are collected in ``DatasetIndex.issues``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["CaseRecord", "DatasetIndex", "DatasetLayoutError", "IndexIssue", "index_dataset", "is_nifti"]

log = logging.getLogger(__name__)

_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_PHASE_RE = re.compile(r"^(?P<id>.+)_(?P<phase>\d{4})\.nii(?:\.gz)?$", re.IGNORECASE)


class DatasetLayoutError(FileNotFoundError):
    """The folder is not laid out like MAMA-MIA."""


def is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_NIFTI_SUFFIXES)


def _named_nifti(path: Path) -> bool:
    """Named like a NIfTI file, whatever it is: a broken link or a folder is reported by ``check``, not hidden."""
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


@dataclass(frozen=True, kw_only=True)
class IndexIssue:
    """A problem found while indexing that belongs to no single case (e.g. the splits file)."""

    file: Path
    severity: Literal["error", "warning"]
    message: str
    fix: str


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
        split: ``"train"``, ``"test"`` or None when the splits file does not list the case (or lists it
            in more than one split).
        unexpected_files: NIfTI files in the folder that do not follow ``<ID>_NNNN``.
        listed_splits: every split whose column lists the case (two or more is a train/test leak).
        listing_error: why the case folder could not be listed, if it could not.
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
    listed_splits: tuple[str, ...] = ()
    listing_error: str | None = None

    @property
    def n_post_phases(self) -> int:
        return sum(1 for n in self.phase_numbers if n > 0)

    def info(self) -> dict[str, Any] | None:
        """The patient info JSON object, or None if absent.

        Raises:
            ValueError: naming the file if it cannot be read, is not UTF-8 JSON or is not a JSON object.
        """
        if self.info_path is None:
            return None
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.info_path}: cannot read patient info JSON ({exc})") from exc
        if not isinstance(info, dict):
            raise ValueError(f"{self.info_path}: patient info JSON is a {type(info).__name__}, not an object")
        return info


@dataclass(frozen=True, kw_only=True)
class DatasetIndex:
    """All cases found under ``root``, sorted by id."""

    root: Path
    cases: tuple[CaseRecord, ...]
    splits_file: Path | None
    notes: tuple[str, ...] = field(default=())
    issues: tuple[IndexIssue, ...] = field(default=())

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


def _nifti_by_stem(folder: Path | None, issues: list[IndexIssue]) -> dict[str, Path]:
    """Map lower-case stem → path for every entry named like a NIfTI file in ``folder``."""
    if folder is None or not folder.is_dir():
        return {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        issues.append(
            IndexIssue(
                file=folder,
                severity="error",
                message=f"cannot list the folder ({exc.strerror})",
                fix="make the folder readable",
            )
        )
        return {}
    return {_strip_nifti(p.name).lower(): p for p in entries if _named_nifti(p)}


def _read_splits(path: Path | None, issues: list[IndexIssue]) -> dict[str, list[str]]:
    """Wide CSV: one column per split (``train_split``, ``test_split``), shorter columns padded empty.

    Returns case id (upper case) → every split that lists it. An unreadable file (not UTF-8, a NUL
    byte, not a file) is recorded in ``issues`` as one error and gives no splits.
    """
    if path is None:
        return {}

    def unreadable(why: str) -> dict[str, list[str]]:
        issues.append(
            IndexIssue(
                file=path,
                severity="error",
                message=f"cannot read the splits file: {why}",
                fix="rewrite it as a UTF-8 CSV with columns train_split,test_split",
            )
        )
        return {}

    try:
        raw = path.read_bytes()
    except OSError as exc:
        return unreadable(exc.strerror or str(exc))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return unreadable(f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})")
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        return unreadable(f"NUL byte on line {line}")
    splits: dict[str, list[str]] = {}
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None:
            return {}
        for row in reader:
            for column, value in row.items():
                if column is None or not isinstance(value, str) or not value.strip():
                    continue
                name = column.strip().lower().removesuffix("_split")
                listed = splits.setdefault(value.strip().upper(), [])
                if name not in listed:
                    listed.append(name)
    except csv.Error as exc:
        return unreadable(f"malformed CSV ({exc})")
    order = [c.strip().lower().removesuffix("_split") for c in reader.fieldnames if c is not None]
    return {case: sorted(names, key=order.index) for case, names in splits.items()}


def index_dataset(root: Path) -> DatasetIndex:
    """Find every case under ``root``.

    Entries named like NIfTI files are indexed whatever they are (a broken link, a folder), so that
    ``check`` reports them instead of silently renumbering phases.

    Raises:
        DatasetLayoutError: if ``root`` has no ``images`` folder (or cannot be listed), naming what was expected.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root} is not a folder; pass the dataset root (the folder holding images/)")
    try:
        images = _child_ci(root, "images")
        if images is None or not images.is_dir():
            raise DatasetLayoutError(
                f"{root} has no images/ folder; expected the MAMA-MIA layout images/<ID>/<ID>_0000.nii.gz "
                "(make one with: synbt data phantom --out DIR)"
            )
        image_entries = sorted(images.iterdir())
        segs = _child_ci(root, "segmentations")
        tissue_root = _child_ci(root, "tissue")
        info_dir = _child_ci(root, "patient_info_files")
        splits_file = _child_ci(root, "train_test_splits.csv")
        mask_dirs = {
            name: _child_ci(parent, sub) if parent else None
            for name, parent, sub in (
                ("expert", segs, "expert"),
                ("automatic", segs, "automatic"),
                ("labels", tissue_root, "labels"),
                ("breast", tissue_root, "breast"),
            )
        }
    except OSError as exc:
        if isinstance(exc, DatasetLayoutError):
            raise
        raise DatasetLayoutError(
            f"{exc.filename or root}: cannot list the folder ({exc.strerror}); make the dataset readable"
        ) from exc
    issues: list[IndexIssue] = []
    expert, automatic, tissue, breast = (
        _nifti_by_stem(mask_dirs[name], issues) for name in ("expert", "automatic", "labels", "breast")
    )
    infos: dict[str, Path] = {}
    if info_dir is not None and info_dir.is_dir():
        try:
            infos = {p.stem.lower(): p for p in info_dir.iterdir() if p.suffix.lower() == ".json"}
        except OSError as exc:
            issues.append(
                IndexIssue(
                    file=info_dir,
                    severity="warning",
                    message=f"cannot list the folder ({exc.strerror}); patient info ignored",
                    fix="make the folder readable",
                )
            )
    splits = _read_splits(splits_file, issues)

    cases = []
    notes = []
    for case_dir in image_entries:
        if not case_dir.is_dir():
            if not case_dir.is_file():
                notes.append(f"{case_dir}: neither a folder nor a file (a broken link?), skipped")
            continue
        key = case_dir.name.lower()
        numbered: list[tuple[int, Path]] = []
        unexpected: list[Path] = []
        listing_error = None
        try:
            entries = sorted(case_dir.iterdir())
        except OSError as exc:
            entries, listing_error = [], f"cannot list the folder ({exc.strerror})"
        for f in entries:
            if not _named_nifti(f):
                continue
            m = _PHASE_RE.match(f.name)
            if m and m.group("id").lower() == key:
                numbered.append((int(m.group("phase")), f))
            else:
                unexpected.append(f)
        numbered.sort(key=lambda t: t[0])
        if not numbered and not unexpected and listing_error is None:
            notes.append(f"{case_dir}: no NIfTI files, skipped")
            continue
        listed = tuple(splits.get(case_dir.name.upper(), ()))
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
                split=listed[0] if len(listed) == 1 else None,
                unexpected_files=tuple(unexpected),
                listed_splits=listed,
                listing_error=listing_error,
            )
        )
    cases.sort(key=lambda c: c.case_id)
    if splits_file is not None:
        unknown = sorted(set(splits) - {c.case_id for c in cases})
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            issues.append(
                IndexIssue(
                    file=splits_file,
                    severity="warning",
                    message=f"lists {len(unknown)} case(s) with no images/ folder: {shown}",
                    fix="remove them from the splits file or add their images",
                )
            )
    log.debug("indexed %d cases under %s", len(cases), root)
    return DatasetIndex(
        root=root, cases=tuple(cases), splits_file=splits_file, notes=tuple(notes), issues=tuple(issues)
    )
