"""The store's exceptions, below every other store module so that each can raise them without importing another.

:mod:`~synbt_factory.store.case_store` re-exports :class:`StoreError` and :class:`CaseDamageError`, and
:mod:`~synbt_factory.store.lock` re-exports :class:`StoreLockedError`, where callers import them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CaseDamageError", "StoreError", "StoreLockedError"]


class StoreError(RuntimeError):
    """A store that is missing, of another schema, or damaged."""


class CaseDamageError(StoreError):
    """One case of a store is damaged; ``problem`` says how, without the store and the fix around it."""

    def __init__(self, message: str, *, case_id: str = "", problem: str = "") -> None:
        super().__init__(message)
        self.case_id = case_id
        self.problem = problem or message

    def __reduce__(self) -> tuple[Any, ...]:  # keeps case and problem across processes (Dask, DataLoader workers)
        return _rebuild_damage, (str(self), self.case_id, self.problem)


def _rebuild_damage(message: str, case_id: str, problem: str) -> CaseDamageError:
    return CaseDamageError(message, case_id=case_id, problem=problem)


class StoreLockedError(StoreError):
    """Another command holds the writer lock of a store."""
