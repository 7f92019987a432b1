"""``synbt store verify``: trust checksums, not reads; list every bad case, never stop at the first.

A missing chunk reads back as the fill value with no error in zarr, and a corrupted chunk may
decode to wrong numbers; so every array of every case is read back and its sha256 compared with
the one recorded when the case was written. The schema is checked from the metadata before any
chunk is read (codecs, shapes against the image, a size limit, a finite 4×4 affine, spacing), and
float arrays are checked for NaN/Inf. Unsafe or unreadable case groups, symbolic links, markers,
orphan ``*.partial`` files and unfinished arrays are reported too. For a synthetic store, each case's
``source_sha256`` is compared with its background's current checksum in the source store.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synbt_factory.progress import ProgressFn, report
from synbt_factory.store.case_store import (
    SCHEMA_KEY,
    SCHEMA_VERSION,
    CaseDamageError,
    CaseStore,
    StoreError,
    array_sha256,
)
from synbt_factory.store.schema import case_attr_problems

__all__ = ["VerifyReport", "verify_case", "verify_store"]

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """What ``verify_store`` found.

    Attributes:
        checked: complete cases checked.
        bad_cases: case group name → its problems (complete, damaged or unsafely named groups).
        incomplete: case groups without the completion marker.
        orphans: ``*.partial`` files left by an interrupted writer.
        store_problems: damage of the store itself (its root metadata); nothing else could be checked.
        notes: limits of the check that are not damage (e.g. an unreachable source store).
    """

    checked: int = 0
    bad_cases: dict[str, list[str]] = field(default_factory=dict)
    incomplete: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    store_problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.bad_cases or self.incomplete or self.orphans or self.store_problems)


def _problem(exc: Exception) -> str:
    return exc.problem if isinstance(exc, CaseDamageError) else str(exc)


def _verify_array(store: CaseStore, case_id: str, name: str, recorded: str) -> list[str]:
    try:
        data = store.read_array(case_id, name, verify=False)  # compared below, with a message of its own
    except StoreError as exc:
        return [_problem(exc)]
    problems = []
    if array_sha256(data) != recorded:
        problems.append(f"array {name!r} does not match its checksum (missing or corrupted chunk)")
    if np.issubdtype(data.dtype, np.floating):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            problems.append(f"array {name!r} holds {bad} NaN/Inf value(s)")
    return problems


def verify_case(store: CaseStore, case_id: str) -> list[str]:
    """Problems of one complete case (empty list when it verifies)."""
    try:
        attrs = store.case_attrs(case_id)
        present = set(store.array_names(case_id))
    except StoreError as exc:
        return [_problem(exc)]
    problems = case_attr_problems(attrs)
    recorded = attrs.get("sha256")
    if not isinstance(recorded, dict) or not recorded:
        return [*problems, "no sha256 attribute: the case was not written by synbt"]
    for name in ("image", "mask"):
        if name not in present and name not in recorded:
            problems.append(f"array {name!r} is missing")
    for name in sorted(set(recorded) - present):
        problems.append(f"array {name!r} is listed in sha256 but missing")
    for name in sorted(present - set(recorded)):
        problems.append(f"unfinished array {name} (rerun the command that adds it)")
    for name in sorted(set(recorded) & present):
        problems.extend(_verify_array(store, case_id, name, str(recorded[name])))
    return problems


class _SourceCheck:
    """Compares synthetic cases' ``source_sha256`` with their backgrounds' current image checksums."""

    def __init__(self, source: CaseStore) -> None:
        self.source = source
        self._current: dict[str, str | None] = {}
        self.unrecorded = 0

    def _image_sha(self, case_id: str) -> str | None:
        if case_id not in self._current:
            try:
                sha = self.source.case_attrs(case_id).get("sha256")
                image = sha.get("image") if isinstance(sha, dict) else None
                self._current[case_id] = image if isinstance(image, str) else "(none recorded)"
            except (StoreError, ValueError):  # gone, incomplete, damaged or an unsafe name
                self._current[case_id] = None
        return self._current[case_id]

    def problems(self, attrs: dict[str, Any]) -> list[str]:
        background, recorded = attrs.get("source_case"), attrs.get("source_sha256")
        if not isinstance(background, str) or not isinstance(recorded, str):
            self.unrecorded += 1
            return []
        current = self._image_sha(background)
        if current is None:
            return [
                f"made from background {background}, which {self.source.location} no longer holds as a complete case"
            ]
        if current != recorded:
            return [
                f"made from a background that has since changed ({background} in {self.source.location} "
                "has another image sha256 than when the case was made; regenerate the case)"
            ]
        return []


def _source_check(store: CaseStore, source: str | Path | None, notes: list[str]) -> _SourceCheck | None:
    if store.kind != "synthetic":
        if source is not None:
            notes.append(f"--source applies to synthetic stores; {store.location} is a {store.kind!r} store")
        return None
    identity = store.attrs.get("run_identity")
    recorded = identity.get("prepared") if isinstance(identity, dict) else None
    location = str(source) if source is not None else recorded
    if not isinstance(location, str):
        notes.append("the card records no source store: backgrounds were not checked (pass --source PREPARED)")
        return None
    try:
        return _SourceCheck(CaseStore.open(location))
    except StoreError as exc:
        where = "given with --source" if source is not None else "recorded in the card"
        notes.append(
            f"source store {location} ({where}) is not reachable ({exc}); backgrounds were not checked "
            "against it (pass --source PREPARED)"
        )
        return None


def _store_damage(location: str | Path, exc: StoreError) -> str | None:
    """The error as store damage when ``location`` holds a synbt store's root metadata, else None."""
    root = Path(str(location)) / "zarr.json"
    if "://" in str(location) or not root.is_file():
        return None
    try:
        doc = json.loads(root.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return f"the root metadata {root} is not valid JSON ({err}); the store is damaged"
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    if isinstance(attrs, dict) and attrs.get(SCHEMA_KEY) == SCHEMA_VERSION:  # a synbt store that cannot be opened
        return str(exc)
    return None


def _symlinked_groups(location: str | Path) -> dict[str, str]:
    """Entries of a local store's ``cases/`` that are symbolic links, with the problem."""
    cases = Path(str(location)) / "cases"
    if "://" in str(location) or not cases.is_dir():
        return {}
    found = {}
    for path in sorted(cases.iterdir()):
        if path.is_symlink():
            found[path.name] = (
                f"case group is a symbolic link to {os.readlink(path)} (a store holds its own case "
                "folders: copy the case in, or remove the link and rerun the command that wrote it)"
            )
    return found


def verify_store(
    location: str | Path, *, source: str | Path | None = None, progress: ProgressFn | None = None
) -> VerifyReport:
    """Verify every case of a store; never raises for damage, lists it.

    Args:
        source: the prepared store a synthetic store was made from (default: the one its card records).

    Raises:
        StoreError: only when ``location`` is not a synbt store at all (missing, foreign, other schema).
    """
    result = VerifyReport()
    try:
        store = CaseStore.open(location)
    except StoreError as exc:
        damage = _store_damage(location, exc)
        if damage is None:
            raise
        result.store_problems.append(damage)
        return result
    for name, problem in store.damaged_case_groups().items():
        result.bad_cases[name] = [problem]
    for name, problem in _symlinked_groups(location).items():
        result.bad_cases.setdefault(name, []).append(problem)
    result.incomplete = store.incomplete_case_ids()
    local = Path(str(location))
    if local.exists():
        result.orphans = sorted(str(p.relative_to(local)) for p in local.rglob("*.partial"))
    sources = _source_check(store, source, result.notes)
    case_ids = store.case_ids()
    for i, case_id in enumerate(case_ids):
        try:
            problems = verify_case(store, case_id)
            if sources is not None:
                problems.extend(sources.problems(store.case_attrs(case_id)))
        except Exception as exc:  # one case must never stop the check of the others
            log.debug("verifying %s failed", case_id, exc_info=True)
            problems = [f"cannot be checked ({type(exc).__name__}: {exc})"]
        if problems:
            result.bad_cases.setdefault(case_id, []).extend(problems)
        result.checked += 1
        report(progress, i + 1, len(case_ids))
    if sources is not None and sources.unrecorded:
        result.notes.append(f"{sources.unrecorded} case(s) record no source_sha256: their backgrounds were not checked")
    return result
