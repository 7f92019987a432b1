"""Zarr v3 stores following the synbt case schema (prepared real cases and synthetic cases)."""

from synbt_factory.store.case_ids import CaseIdError, validate_case_id
from synbt_factory.store.case_store import (
    SCHEMA_VERSION,
    CaseStore,
    StoreError,
    StoreLayout,
    array_sha256,
)

__all__ = [
    "SCHEMA_VERSION",
    "CaseStore",
    "StoreError",
    "StoreLayout",
    "array_sha256",
    "CaseIdError",
    "validate_case_id",
]
