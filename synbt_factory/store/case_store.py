"""The case schema shared by every synbt store (Zarr v3).

Layout::

    <store>/zarr.json                 root attributes: schema version, store kind, dataset card
    <store>/cases/<case_id>/image     (2, X, Y, Z) float16: channel 0 pre-contrast, 1 post-contrast
    <store>/cases/<case_id>/mask      (X, Y, Z) uint8 tumor mask (real ∪ synthetic)
    <store>/cases/<case_id>/...       optional arrays: synthetic_mask, tissue, breast, phases
    case attributes                   affine (4×4, stored indices → RAS+ mm), spacing, source_case,
                                      split, sha256 {array: hex}, ... and ``complete`` written LAST

A case without ``complete: true`` does not exist: readers skip it, resume deletes it. Each
case is written by one writer into its own arrays, so chunks never span two cases. Only
codecs of the Zarr v3 specification are used (``bytes``, ``zstd``, ``blosc``), so other
implementations (tensorstore) read the store without synbt.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from synbt_factory.store.case_ids import validate_case_id

__all__ = ["SCHEMA_VERSION", "CaseStore", "StoreError", "StoreLayout", "array_sha256", "ALLOWED_CODECS"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA_KEY = "synbt_schema"
COMPLETE_KEY = "complete"
ALLOWED_CODECS = frozenset({"bytes", "zstd", "blosc", "gzip", "crc32c", "transpose", "sharding_indexed"})

StoreKind = Literal["prepared", "synthetic", "bank"]


class StoreError(RuntimeError):
    """A store that is missing, of another schema, or damaged."""


@dataclass(frozen=True, kw_only=True)
class StoreLayout:
    """Chunking and compression of the case arrays.

    Args:
        chunk: spatial chunk edge in voxels (image chunks are (1, c, c, c)).
        codec: ``"zstd"`` or ``"blosc-lz4"`` / ``"blosc-zstd"`` (Zarr v3 spec codecs).
        level: compression level.
    """

    chunk: int = 64
    codec: str = "zstd"
    level: int = 3

    def __post_init__(self) -> None:
        if self.chunk < 8:
            raise ValueError(f"chunk must be >= 8 voxels, got {self.chunk}")
        if self.codec not in ("zstd", "blosc-lz4", "blosc-zstd"):
            raise ValueError(f"codec must be 'zstd', 'blosc-lz4' or 'blosc-zstd', got {self.codec!r}")

    def compressor(self) -> Any:
        if self.codec == "zstd":
            return ZstdCodec(level=self.level)
        cname = self.codec.split("-", 1)[1]
        return BloscCodec(cname=cname, clevel=self.level, shuffle="shuffle")

    def chunks_for(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Leading non-spatial axes get chunk 1, the last three get ``chunk``."""
        lead = len(shape) - 3
        return tuple([1] * lead + [min(self.chunk, s) for s in shape[lead:]])


def array_sha256(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and C-order bytes (what verify recomputes from the store)."""
    arr = np.ascontiguousarray(array)
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _array_codec_names(array: zarr.Array) -> list[str]:
    meta = array.metadata.to_dict()
    names = []
    for codec in meta.get("codecs", []):
        names.append(codec["name"] if isinstance(codec, dict) else str(codec))
    return names


class CaseStore:
    """A Zarr v3 store of cases in the synbt schema.

    Use :meth:`create` for a new store and :meth:`open` for an existing one. Path-like
    or URL strings are accepted (anything ``zarr.open_group`` accepts).
    """

    def __init__(self, root: zarr.Group, location: str, *, writable: bool) -> None:
        self._root = root
        self.location = location
        self.writable = writable

    # ----------------------------------------------------------------- open/create
    @classmethod
    def create(
        cls,
        location: str | Path,
        *,
        kind: StoreKind,
        card: dict[str, Any],
        layout: StoreLayout | None = None,
        exist_ok: bool = False,
    ) -> CaseStore:
        """Create a store (or reopen one of the same kind when ``exist_ok``).

        Raises:
            StoreError: if the location holds something else, or a store of another kind.
        """
        loc = str(location)
        layout = layout or StoreLayout()
        if _exists(loc):
            if not exist_ok:
                raise StoreError(f"{loc} already exists; choose another --out or remove it")
            store = cls.open(loc, mode="r+")
            if store.kind != kind:
                raise StoreError(f"{loc} is a {store.kind!r} store, not a {kind!r} one; choose another --out")
            return store
        try:
            root = zarr.open_group(loc, mode="w-", zarr_format=3)
        except Exception as exc:
            raise StoreError(f"cannot create a store at {loc}: {exc}") from exc
        root.attrs.update(
            {
                SCHEMA_KEY: SCHEMA_VERSION,
                "store_kind": kind,
                "layout": {"chunk": layout.chunk, "codec": layout.codec, "level": layout.level},
                **card,
            }
        )
        root.require_group("cases")
        return cls(root, loc, writable=True)

    @classmethod
    def open(cls, location: str | Path, *, mode: Literal["r", "r+"] = "r") -> CaseStore:
        """Open an existing store, checking its schema version.

        Raises:
            StoreError: naming the location and the fix if it is not a synbt store.
        """
        loc = str(location)
        if not _exists(loc):
            raise StoreError(f"store {loc} does not exist; create it first (synbt data prepare / synbt generate)")
        try:
            root = zarr.open_group(loc, mode=mode, zarr_format=3)
        except Exception as exc:
            raise StoreError(f"{loc} is not a readable Zarr v3 group ({exc})") from exc
        version = root.attrs.get(SCHEMA_KEY)
        if version is None:
            raise StoreError(f"{loc} is not a synbt store (no {SCHEMA_KEY!r} attribute)")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{loc} has synbt schema {version}, this synbt reads schema {SCHEMA_VERSION}")
        if "cases" not in root:
            raise StoreError(f"{loc} has no 'cases' group; it is damaged")
        return cls(root, loc, writable=mode != "r")

    # ----------------------------------------------------------------- metadata
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._root.attrs)

    @property
    def kind(self) -> str:
        return str(self._root.attrs.get("store_kind"))

    @property
    def layout(self) -> StoreLayout:
        return StoreLayout(**self._root.attrs.get("layout", {}))

    def update_card(self, **entries: Any) -> None:
        """Merge entries into the root attributes (the dataset card)."""
        self._require_writable()
        self._root.attrs.update(entries)

    @property
    def _cases(self) -> zarr.Group:
        return self._root["cases"]  # type: ignore[return-value]

    def _local_path(self) -> Path | None:
        p = Path(self.location)
        return p if "://" not in self.location and p.exists() else None

    # ----------------------------------------------------------------- listing
    def all_case_groups(self) -> list[str]:
        """Every case group name, complete or not, sorted."""
        return sorted(self._cases.group_keys())

    def case_ids(self) -> list[str]:
        """Ids of complete cases (marker present), sorted."""
        return [c for c in self.all_case_groups() if self.is_complete(c)]

    def incomplete_case_ids(self) -> list[str]:
        return [c for c in self.all_case_groups() if not self.is_complete(c)]

    def is_complete(self, case_id: str) -> bool:
        try:
            group = self._cases[case_id]
        except KeyError:
            return False
        return bool(group.attrs.get(COMPLETE_KEY, False))

    def __len__(self) -> int:
        return len(self.case_ids())

    def __contains__(self, case_id: object) -> bool:
        return isinstance(case_id, str) and self.is_complete(case_id)

    # ----------------------------------------------------------------- writing
    def write_case(self, case_id: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        """Write one case: arrays first, then attributes with checksums, then the marker.

        Args:
            case_id: safe path component.
            arrays: must include ``image`` (2, X, Y, Z) and ``mask`` (X, Y, Z); others optional.
            attrs: JSON-serialisable; must include ``affine`` and ``spacing``.
        """
        self._require_writable()
        validate_case_id(case_id)
        if "image" not in arrays or "mask" not in arrays:
            raise ValueError(f"case {case_id}: arrays must include 'image' and 'mask'")
        image, mask = arrays["image"], arrays["mask"]
        if image.ndim != 4 or image.shape[1:] != mask.shape:
            raise ValueError(f"case {case_id}: image {image.shape} and mask {mask.shape} do not match (2, X, Y, Z)/(X, Y, Z)")
        for key in ("affine", "spacing"):
            if key not in attrs:
                raise ValueError(f"case {case_id}: attribute {key!r} is required")
        if case_id in self._cases:
            self.delete_case(case_id)
        group = self._cases.create_group(case_id)
        layout = self.layout
        checksums: dict[str, str] = {}
        for name, data in arrays.items():
            data = np.ascontiguousarray(data)
            arr = group.create_array(
                name,
                shape=data.shape,
                dtype=data.dtype,
                chunks=layout.chunks_for(data.shape),
                compressors=layout.compressor(),
                fill_value=0,
            )
            arr[...] = data
            checksums[name] = array_sha256(data)
        group.attrs.update({**attrs, "case_id": case_id, "sha256": checksums})
        group.attrs.update({COMPLETE_KEY: True})

    def add_arrays(self, case_id: str, arrays: dict[str, np.ndarray]) -> None:
        """Add or replace arrays of a complete case, keeping its checksums true.

        The marker is cleared while arrays change and set again last.
        """
        self._require_writable()
        if not self.is_complete(case_id):
            raise StoreError(f"case {case_id} is not complete in {self.location}")
        group = self._cases[case_id]
        layout = self.layout
        checksums = dict(group.attrs.get("sha256", {}))
        group.attrs.update({COMPLETE_KEY: False})
        for name, data in arrays.items():
            data = np.ascontiguousarray(data)
            if name in group:
                del group[name]
            arr = group.create_array(
                name, shape=data.shape, dtype=data.dtype, chunks=layout.chunks_for(data.shape),
                compressors=layout.compressor(), fill_value=0,
            )
            arr[...] = data
            checksums[name] = array_sha256(data)
        group.attrs.update({"sha256": checksums})
        group.attrs.update({COMPLETE_KEY: True})

    def delete_case(self, case_id: str) -> None:
        self._require_writable()
        validate_case_id(case_id)
        local = self._local_path()
        if local is not None:
            shutil.rmtree(local / "cases" / case_id, ignore_errors=True)
        elif case_id in self._cases:
            del self._cases[case_id]

    def remove_incomplete(self) -> list[str]:
        """Delete unmarked case groups and orphan ``*.partial`` files; return the removed case ids."""
        self._require_writable()
        removed = self.incomplete_case_ids()
        for case_id in removed:
            self.delete_case(case_id)
        local = self._local_path()
        if local is not None:
            for orphan in local.rglob("*.partial"):
                orphan.unlink(missing_ok=True)
        if removed:
            log.info("removed %d incomplete case(s): %s", len(removed), ", ".join(removed))
        return removed

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"store {self.location} is open read-only")

    # ----------------------------------------------------------------- reading
    def case_attrs(self, case_id: str) -> dict[str, Any]:
        self._require_complete(case_id)
        return dict(self._cases[case_id].attrs)

    def array_names(self, case_id: str) -> list[str]:
        return sorted(self._cases[case_id].array_keys())

    def open_array(self, case_id: str, name: str) -> zarr.Array:
        """The zarr array ``name`` of a complete case, after checking its codecs are allowed."""
        self._require_complete(case_id)
        group = self._cases[case_id]
        if name not in group:
            raise StoreError(f"case {case_id} in {self.location} has no array {name!r}")
        arr = group[name]
        bad = [c for c in _array_codec_names(arr) if c not in ALLOWED_CODECS]
        if bad:
            raise StoreError(f"case {case_id}/{name} uses codec(s) {bad} outside the allowed set {sorted(ALLOWED_CODECS)}")
        return arr  # type: ignore[return-value]

    def read_array(self, case_id: str, name: str) -> np.ndarray:
        return np.asarray(self.open_array(case_id, name)[...])

    def read_case(self, case_id: str, names: Iterable[str] = ("image", "mask")) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays ``names`` and attributes of a complete case."""
        arrays = {n: self.read_array(case_id, n) for n in names}
        return arrays, self.case_attrs(case_id)

    def _require_complete(self, case_id: str) -> None:
        validate_case_id(case_id)
        if not self.is_complete(case_id):
            raise StoreError(f"case {case_id} is not a complete case of {self.location}")


def _exists(location: str) -> bool:
    if "://" in location:
        try:
            zarr.open_group(location, mode="r")
            return True
        except Exception:
            return False
    return Path(location).exists()
