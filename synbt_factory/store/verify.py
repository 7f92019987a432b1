"""``synbt store verify``: trust checksums, not reads.

A missing chunk reads back as the fill value with no error in zarr, and a corrupted chunk may
decode to wrong numbers; so every array of every case is read back and its sha256 compared with
the one recorded when the case was written. Markers, orphan ``*.partial`` files and unmarked
groups are reported too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from synbt_factory.progress import ProgressFn, report
from synbt_factory.store.case_store import CaseStore, array_sha256

__all__ = ["VerifyReport", "verify_store"]

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    checked: int = 0
    bad_cases: dict[str, list[str]] = field(default_factory=dict)
    incomplete: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad_cases and not self.incomplete and not self.orphans


def verify_case(store: CaseStore, case_id: str) -> list[str]:
    """Problems of one complete case (empty list when it verifies)."""
    problems = []
    attrs = store.case_attrs(case_id)
    recorded: dict[str, str] = attrs.get("sha256", {})
    if not recorded:
        return ["no sha256 attribute: the case was not written by synbt"]
    present = set(store.array_names(case_id))
    for name in sorted(set(recorded) - present):
        problems.append(f"array {name!r} is listed in sha256 but missing")
    for name in sorted(present - set(recorded)):
        problems.append(f"array {name!r} has no recorded checksum")
    for name in sorted(set(recorded) & present):
        try:
            data = store.read_array(case_id, name)
        except Exception as exc:  # a corrupt chunk may fail to decode
            problems.append(f"array {name!r} cannot be read ({type(exc).__name__}: {exc})")
            continue
        if array_sha256(data) != recorded[name]:
            problems.append(f"array {name!r} does not match its checksum (missing or corrupted chunk)")
    return problems


def verify_store(location: str | Path, *, progress: ProgressFn | None = None) -> VerifyReport:
    """Verify every case of a store; never raises for damaged cases, lists them."""
    store = CaseStore.open(location)
    result = VerifyReport()
    result.incomplete = store.incomplete_case_ids()
    local = Path(str(location))
    if local.exists():
        result.orphans = sorted(str(p.relative_to(local)) for p in local.rglob("*.partial"))
    case_ids = store.case_ids()
    for i, case_id in enumerate(case_ids):
        problems = verify_case(store, case_id)
        if problems:
            result.bad_cases[case_id] = problems
        result.checked += 1
        report(progress, i + 1, len(case_ids))
    return result
