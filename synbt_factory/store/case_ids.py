"""Case ids are path components in stores and exports: only safe ones are accepted."""

from __future__ import annotations

import re

__all__ = ["CaseIdError", "validate_case_id", "SAFE_CASE_ID"]

SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class CaseIdError(ValueError):
    """A case id that is not a safe path component."""


def validate_case_id(case_id: str) -> str:
    """Return ``case_id`` if it is a safe path component, else raise :class:`CaseIdError`.

    Safe: 1–128 characters of letters, digits, ``_``, ``-`` and ``.``, starting with a letter
    or digit, and not containing ``..`` (so it can never escape a folder).
    """
    if not isinstance(case_id, str) or not SAFE_CASE_ID.match(case_id) or ".." in case_id:
        raise CaseIdError(
            f"case id {case_id!r} is not a safe path component: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (rename the case folder and its files)"
        )
    return case_id
