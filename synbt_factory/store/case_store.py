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

Arrays added to a complete case later (:meth:`CaseStore.add_arrays`, e.g. ``tissue_pred``) never
unmark the case: an added array's own marker is its entry in the case's ``sha256`` attribute,
written after the array. An array present without a checksum entry is an unfinished addition:
readers refuse it, ``store verify`` reports it, and rerunning the command that adds it writes it again.

One command at a time writes a local store: it holds the writer lock ``<store>/.synbt-writer.lock``
(:mod:`synbt_factory.store.lock`), and :meth:`CaseStore.remove_incomplete` runs only under it.
Readers ignore the lock file. A folder that is empty (or holds only the lock) is free for a new store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from synbt_factory.store.case_ids import CaseIdError, validate_case_id
from synbt_factory.store.chunk_writer import EncodingJob, array_plan, start_encoding
from synbt_factory.store.errors import CaseDamageError, StoreError
from synbt_factory.store.layout import StoreLayout
from synbt_factory.store.local_writer import write_encoded_case
from synbt_factory.store.schema import ALLOWED_CODECS, array_problem, case_attr_problems, codec_names, declared_shape

__all__ = [
    "SCHEMA_VERSION",
    "CaseDamageError",
    "CaseStore",
    "StoreError",
    "StoreLayout",
    "array_sha256",
    "ALLOWED_CODECS",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA_KEY = "synbt_schema"
COMPLETE_KEY = "complete"

StoreKind = Literal["prepared", "synthetic", "bank"]


def array_sha256(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and C-order bytes (what verify recomputes from the store)."""
    arr = np.ascontiguousarray(array)
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.reshape(-1).view(np.uint8))  # the same bytes as tobytes(), without a copy
    return h.hexdigest()


def _array_codec_names(array: zarr.Array) -> list[str]:
    """Codec names of an open array (nested sharding codecs included)."""
    return codec_names(array.metadata.to_dict())


def _sync(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


async def _collect(items: Any) -> list[str]:
    return [item async for item in items]


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

        An existing empty folder (or one holding only the writer lock) is free to use. When the
        creation fails (e.g. disk full), what it made is removed again, so a rerun starts clean.

        Raises:
            StoreError: if the location holds something else, or a store of another kind, or the
                store cannot be created.
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
        local = None if "://" in loc else Path(loc)
        made_from = None if local is None else _first_missing(local)
        before = set(os.listdir(local)) if local is not None and made_from is None else set()
        try:
            # "w-" refuses a folder holding the writer lock; the lock already makes this writer the only one
            root = zarr.open_group(loc, mode="a" if before else "w-", zarr_format=3)
            root.attrs.update(
                {
                    SCHEMA_KEY: SCHEMA_VERSION,
                    "store_kind": kind,
                    "layout": layout.card_entry(),
                    **card,
                }
            )
            root.require_group("cases")
        except Exception as exc:
            _undo_create(loc, made_from, before)
            raise StoreError(f"cannot create a store at {loc}: {exc}") from exc
        return cls(root, loc, writable=True)

    @classmethod
    def open(cls, location: str | Path, *, mode: Literal["r", "r+"] = "r") -> CaseStore:
        """Open an existing store, checking its schema version.

        Raises:
            StoreError: naming the location and the fix if it is not a synbt store.
        """
        loc = str(location)
        if not _exists(loc):
            if "://" not in loc and _is_free_folder(Path(loc)):
                raise StoreError(
                    f"{loc} is an empty folder with no zarr.json, not a store (a store creation that "
                    "failed leaves one): rerun the command that creates it, which reuses an empty "
                    "folder, or remove the folder"
                )
            raise StoreError(f"store {loc} does not exist; create it first (synbt data prepare / synbt generate)")
        if "://" not in loc and Path(loc).is_dir() and not (Path(loc) / "zarr.json").exists():
            raise StoreError(
                f"{loc} has no zarr.json, so it is not a synbt store; give the folder that holds the store's zarr.json"
            )
        try:
            root = zarr.open_group(loc, mode=mode, zarr_format=3)
        except Exception as exc:
            raise StoreError(f"{loc} is not a readable Zarr v3 group ({exc})") from exc
        version = root.attrs.get(SCHEMA_KEY)
        if version is None:
            raise StoreError(f"{loc} is not a synbt store (no {SCHEMA_KEY!r} attribute)")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{loc} has synbt schema {version}, this synbt reads schema {SCHEMA_VERSION}")
        try:
            cases = root["cases"]
        except KeyError:
            raise StoreError(f"{loc} has no 'cases' group; it is damaged") from None
        except Exception as exc:  # its zarr.json is not valid JSON, or not a group's
            raise StoreError(f"{loc}/cases cannot be read ({type(exc).__name__}: {exc}); the store is damaged") from exc
        if not isinstance(cases, zarr.Group):
            raise StoreError(f"{loc}/cases is not a group; the store is damaged")
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

    @property
    def _cases_path(self) -> str:
        """Key prefix of the ``cases`` group in the store (no metadata read: the schema fixes its name)."""
        return "/".join(p for p in (self._root.path, "cases") if p)

    def _local_folder(self) -> Path | None:
        """The store's folder when it is a zarr ``LocalStore`` (written file by file, :mod:`.local_writer`)."""
        store = self._root.store
        return Path(store.root) if isinstance(store, zarr.storage.LocalStore) else None

    def _local_path(self) -> Path | None:
        p = Path(self.location)
        return p if "://" not in self.location and p.exists() else None

    # ----------------------------------------------------------------- listing
    def _children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` in the store, sorted, without parsing any metadata."""
        try:
            return sorted(set(_sync(_collect(self._root.store.list_dir(prefix)))))
        except Exception as exc:  # the store itself is unreadable (permissions, network)
            raise StoreError(f"cannot list {prefix} in {self.location} ({type(exc).__name__}: {exc})") from exc

    def _has_key(self, key: str) -> bool:
        try:
            return bool(_sync(self._root.store.exists(key)))
        except Exception:  # an unreadable entry counts as absent; verify names it through its group
            return False

    def _get_json(self, key: str) -> dict[str, Any] | None:
        """A ``zarr.json`` document, parsed, or None when there is no such key (or it is no file, e.g. a folder):
        one store round trip, where an existence check and a read took two. :class:`_MetadataError` when the
        document is present but unreadable or not a JSON object."""
        from zarr.core.buffer import default_buffer_prototype

        try:
            buf = _sync(self._root.store.get(key, prototype=default_buffer_prototype()))
        except Exception as exc:
            if not self._has_key(key):
                return None
            raise _MetadataError(f"{key} cannot be read ({type(exc).__name__}: {exc})") from exc
        if buf is None:
            return None
        try:
            doc = json.loads(buf.to_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise _MetadataError(f"{key} is not valid JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise _MetadataError(f"{key} is not a JSON object")
        return doc

    def _case_key(self, case_id: str, *parts: str) -> str:
        return "/".join((self._cases_path, case_id, *parts))

    def _group_state(self, case_id: str) -> tuple[str, dict[str, Any] | str | None]:
        """(state, detail) of a ``cases/`` entry, from its metadata alone.

        States: ``"complete"`` / ``"incomplete"`` (detail: the attributes), ``"damaged"`` (detail: the
        problem), ``"absent"`` (no such entry, or a plain file: detail None).
        """
        try:
            meta, problem = self._get_json(self._case_key(case_id, "zarr.json")), None
        except _MetadataError as exc:
            meta, problem = None, str(exc)
        if meta is None and problem is None:
            if not self._children(self._case_key(case_id)):
                return "absent", None
            return "damaged", "case folder without zarr.json (its metadata was deleted)"
        try:
            validate_case_id(case_id)
        except CaseIdError:
            return "damaged", (
                "unsafe case group name (not a safe path component: letters, digits, '_', '-', '.'); "
                "readers skip it: rename or remove the folder"
            )
        if meta is None:
            return "damaged", str(problem)
        if meta.get("node_type") != "group":
            return "damaged", f"not a group (node_type {meta.get('node_type')!r})"
        attrs = meta.get("attributes")
        if not isinstance(attrs, dict):
            return "damaged", "its attributes are not a JSON object"
        return ("complete" if bool(attrs.get(COMPLETE_KEY, False)) else "incomplete"), attrs

    def _survey(self) -> dict[str, tuple[str, Any]]:
        """State of every entry of ``cases/``; damaged ones are logged once per opened store."""
        prefix = self._cases_path
        entries = [n for n in self._children(prefix) if n != "zarr.json" and not n.endswith(".partial")]
        states = {n: self._group_state(n) for n in entries}
        damaged = sorted(n for n, (state, _) in states.items() if state == "damaged")
        if damaged and not getattr(self, "_damage_logged", False):
            self._damage_logged = True
            log.warning(
                "%s: %d damaged case group(s) are skipped (%s); run `synbt store verify %s` for details",
                self.location,
                len(damaged),
                ", ".join(repr(n) for n in damaged[:5]),
                self.location,
            )
        return {n: s for n, s in states.items() if s[0] != "absent"}

    def all_case_groups(self) -> list[str]:
        """Every case group name (an entry of ``cases/`` with a ``zarr.json``), complete or not, damaged or not."""
        prefix = self._cases_path
        return [n for n in self._children(prefix) if n != "zarr.json" and self._has_key(self._case_key(n, "zarr.json"))]

    def case_ids(self) -> list[str]:
        """Ids of complete cases (marker present), sorted; damaged groups are skipped (:meth:`damaged_case_groups`)."""
        return [n for n, (state, _) in self._survey().items() if state == "complete"]

    def incomplete_case_ids(self) -> list[str]:
        """Ids of readable, safely named case groups without the completion marker."""
        return [n for n, (state, _) in self._survey().items() if state == "incomplete"]

    def damaged_case_groups(self) -> dict[str, str]:
        """Entries of ``cases/`` that are no readable case, with the reason.

        Unsafe names, a ``zarr.json`` that is not valid JSON, a folder whose ``zarr.json`` is gone. Readers
        skip them and resume never deletes them; ``synbt store verify`` lists them.
        """
        return {n: detail for n, (state, detail) in self._survey().items() if state == "damaged"}

    def is_complete(self, case_id: str) -> bool:
        """Whether ``case_id`` is a safely named, readable case group carrying the completion marker."""
        if not isinstance(case_id, str):
            return False
        try:
            validate_case_id(case_id)
        except CaseIdError:
            return False
        return self._group_state(case_id)[0] == "complete"

    def __len__(self) -> int:
        return len(self.case_ids())

    def __contains__(self, case_id: object) -> bool:
        return isinstance(case_id, str) and self.is_complete(case_id)

    # ----------------------------------------------------------------- writing
    def write_case(self, case_id: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        """Write one case: its group with every attribute (checksums included), the arrays, then the marker.

        The group's attributes are written once, with the group, and the ``complete`` marker is a second, last
        update once every array is written. The checksums and chunks are computed in a thread pool
        (:mod:`~synbt_factory.store.chunk_writer`: the bytes zarr writes, without its per-chunk machinery), and
        every file is written as soon as it is encoded: straight into the folder of a local store
        (:mod:`~synbt_factory.store.local_writer`), else through the zarr store, all in one call into zarr's event
        loop. A crash before the marker leaves an unmarked group that readers skip and :meth:`remove_incomplete`
        deletes. Arrays in a non-native byte order are stored (and checksummed) in native order, as read back.

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
            raise ValueError(
                f"case {case_id}: image {image.shape} and mask {mask.shape} do not match (2, X, Y, Z)/(X, Y, Z)"
            )
        for key in ("affine", "spacing"):
            if key not in attrs:
                raise ValueError(f"case {case_id}: attribute {key!r} is required")
        if self._has_key(self._case_key(case_id, "zarr.json")):
            self.delete_case(case_id)
        contiguous = {name: _native(data) for name, data in arrays.items()}
        layout = self.layout
        plans = {name: array_plan(data.shape, data.dtype, layout) for name, data in contiguous.items()}
        planned = {name: plan for name, plan in plans.items() if plan is not None}
        # looked up at each call, so a test (or a caller) that replaces array_sha256 is honoured
        job = start_encoding(contiguous, planned, checksum=lambda data: array_sha256(data))
        others = {name: data for name, data in contiguous.items() if name not in planned}
        folder = self._local_folder()
        try:
            # the group is written once the checksums (queued first in the pool) are known
            attrs = {**attrs, "case_id": case_id, "sha256": {n: f.result() for n, f in job.digests.items()}}
            group_document = _group_document(attrs)
            complete_document = _group_document({**attrs, COMPLETE_KEY: True})
            if folder is not None and not others:
                write_encoded_case(folder / self._case_key(case_id), job, group_document, complete_document)
            else:
                _sync(
                    _write_case_async(
                        self._root.store,
                        self._case_key(case_id),
                        job,
                        others,
                        (group_document, complete_document),
                        layout,
                    )
                )
        finally:
            job.cancel()

    def add_arrays(self, case_id: str, arrays: dict[str, np.ndarray], *, attrs: dict[str, Any] | None = None) -> None:
        """Add or replace arrays of a complete case without ever unmarking the case.

        Each array's marker is its ``sha256`` entry: the entries of arrays being replaced are
        dropped first (one attribute update), the arrays are deleted and written, then their
        entries are added (one attribute update). A crash in between leaves the case complete
        with its other arrays readable; the new arrays lack an entry (an unfinished addition that
        readers refuse and a rerun writes again). ``attrs`` describing the arrays are set in that
        last update, with their markers.
        """
        self._require_writable()
        validate_case_id(case_id)
        if not self.is_complete(case_id):
            raise StoreError(f"case {case_id} is not complete in {self.location}")
        group = self._cases[case_id]
        layout = self.layout
        recorded = group.attrs.get("sha256")
        checksums = dict(recorded) if isinstance(recorded, dict) else {}
        if any(name in checksums for name in arrays):
            checksums = {k: v for k, v in checksums.items() if k not in arrays}
            group.attrs.update({"sha256": checksums})
        added: dict[str, str] = {}
        for name, data in arrays.items():
            data = np.ascontiguousarray(data)
            if name in group:
                del group[name]
            arr = group.create_array(name, shape=data.shape, dtype=data.dtype, **layout.array_options(data.shape))
            arr[...] = data
            added[name] = array_sha256(data)
        protected = {"sha256", "complete", "case_id"} & set(attrs or {})
        if protected:
            raise ValueError(f"add_arrays cannot set {sorted(protected)}")
        group.attrs.update({**(attrs or {}), "sha256": {**checksums, **added}})

    def delete_case(self, case_id: str) -> None:
        """Delete one case group; a group that is a symbolic link loses the link, never what it points to.

        Raises:
            StoreError: naming the group when it is still there afterwards.
        """
        self._require_writable()
        validate_case_id(case_id)
        local = self._local_path()
        if local is None:
            if case_id in self._cases:
                del self._cases[case_id]
            return
        target = local / "cases" / case_id
        try:
            if target.is_symlink():
                log.debug(
                    "case group %s is a link to %s: the link is removed, its target kept", target, os.readlink(target)
                )
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
        except OSError as exc:
            raise StoreError(f"cannot remove case group {target} ({exc}); remove it yourself, then rerun") from exc
        if target.exists() or target.is_symlink():
            raise StoreError(f"case group {target} is still there after its removal; remove it yourself, then rerun")

    def remove_incomplete(self) -> list[str]:
        """Delete unmarked case groups and orphan ``*.partial`` files; return the removed case ids.

        Runs only under the store's writer lock (:func:`synbt_factory.store.lock.writer_lock`): without
        it an unmarked group may be another writer's case in progress.

        Raises:
            StoreError: without the lock, or naming every group that could not be removed (the others
                are removed and logged).
        """
        self._require_writable()
        from synbt_factory.store.lock import holds_writer_lock

        if not holds_writer_lock(self.location):
            raise StoreError(
                f"{self.location}: unfinished cases are only removed under the store's writer lock "
                "(they may be another writer's cases in progress); take it with "
                "synbt_factory.store.lock.writer_lock"
            )
        removed: list[str] = []
        failed: list[str] = []
        for case_id in self.incomplete_case_ids():
            try:
                self.delete_case(case_id)
            except StoreError as exc:
                failed.append(str(exc))
            else:
                removed.append(case_id)
        local = self._local_path()
        if local is not None:
            for orphan in local.rglob("*.partial"):
                orphan.unlink(missing_ok=True)
        if removed:
            log.info("removed %d incomplete case(s): %s", len(removed), ", ".join(removed))
        if failed:
            raise StoreError("; ".join(failed))
        return removed

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"store {self.location} is open read-only")

    # ----------------------------------------------------------------- reading
    def _damaged(self, case_id: str, problem: str) -> CaseDamageError:
        return CaseDamageError(
            f"store {self.location}, case {case_id}: {problem}; "
            f"run `synbt store verify {self.location}` to list every damaged case",
            case_id=case_id,
            problem=problem,
        )

    def _complete_attrs(self, case_id: str) -> dict[str, Any]:
        """Attributes of a complete case, or StoreError naming why it cannot be read."""
        validate_case_id(case_id)
        state, detail = self._group_state(case_id)
        if state == "damaged":
            raise self._damaged(case_id, str(detail))
        if state != "complete":
            raise StoreError(f"case {case_id} is not a complete case of {self.location}")
        return detail  # type: ignore[return-value]

    def _array_meta(self, case_id: str, name: str) -> dict[str, Any] | None:
        key = self._case_key(case_id, name, "zarr.json")
        try:
            return self._get_json(key)
        except _MetadataError as exc:
            raise self._damaged(case_id, f"array {name!r}: {exc}") from exc

    def _checked_array(
        self, case_id: str, name: str, attrs: dict[str, Any], metas: dict[str, Any] | None = None
    ) -> zarr.Array:
        """Open ``name`` after its metadata passed the schema (codecs, shape, size) and it has a checksum.

        The array is opened from the document just checked, so a read costs that document and the chunks
        (zarr's own opening would read the ``cases`` group and the array document again). ``metas`` keeps the
        documents read for one case (the image's is needed to check every other array's shape).
        """
        metas = {} if metas is None else metas
        recorded = attrs.get("sha256")
        if not isinstance(recorded, dict) or not recorded:
            raise self._damaged(case_id, "no sha256 attribute (the case was not written by synbt, or it was damaged)")
        if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
            raise StoreError(f"case {case_id} in {self.location} has no array {name!r}")
        if name not in metas:
            metas[name] = self._array_meta(case_id, name)
        meta = metas[name]
        if meta is None:
            if name in recorded:
                raise self._damaged(case_id, f"array {name!r} is listed in the case's checksums but missing")
            raise StoreError(f"case {case_id} in {self.location} has no array {name!r}")
        if name not in recorded:
            problem = f"unfinished array {name} (rerun the command that adds it)"
            raise CaseDamageError(
                f"store {self.location}, case {case_id}: {problem}; it has no recorded sha256",
                case_id=case_id,
                problem=problem,
            )
        image_shape = None
        if name != "image":
            if "image" not in metas:
                metas["image"] = self._array_meta(case_id, "image")
            image_meta = metas["image"]
            image_shape = declared_shape(image_meta) if image_meta is not None else None
        problem = array_problem(name, meta, image_shape)
        if problem is not None:
            raise self._damaged(case_id, problem)
        try:
            return _array_from_document(self._root, self._case_key(case_id, name), meta)
        except Exception as exc:
            raise self._damaged(case_id, f"array {name!r} cannot be opened ({type(exc).__name__}: {exc})") from exc

    def _read_checked(
        self, case_id: str, name: str, attrs: dict[str, Any], verify: bool, metas: dict[str, Any] | None = None
    ) -> np.ndarray:
        arr = self._checked_array(case_id, name, attrs, metas)
        try:
            data = np.asarray(arr[...])
        except Exception as exc:  # a corrupted chunk fails to decode; a damaged declaration may exhaust memory
            raise self._damaged(case_id, f"array {name!r} cannot be read ({type(exc).__name__}: {exc})") from exc
        if verify and array_sha256(data) != attrs["sha256"][name]:
            raise self._damaged(
                case_id, f"array {name!r} does not match its recorded sha256 (a missing or corrupted chunk)"
            )
        return data

    def case_attrs(self, case_id: str) -> dict[str, Any]:
        """Attributes of a complete case (StoreError when it is incomplete or its metadata is damaged)."""
        return dict(self._complete_attrs(case_id))

    def array_names(self, case_id: str) -> list[str]:
        """Names of the arrays in a case group (from the store listing; no metadata is parsed)."""
        validate_case_id(case_id)
        if not self._has_key(self._case_key(case_id, "zarr.json")):
            raise StoreError(f"case {case_id} is not a case of {self.location}")
        return [
            n
            for n in self._children(self._case_key(case_id))
            if n != "zarr.json" and self._has_key(self._case_key(case_id, n, "zarr.json"))
        ]

    def open_array(self, case_id: str, name: str) -> zarr.Array:
        """The zarr array ``name`` of a complete case, for region reads.

        Its metadata is checked first (allowed codecs, declared shape against the image and a size
        limit, a recorded checksum). A region cannot be compared with the whole array's checksum:
        read whole arrays with :meth:`read_array`, which does.
        """
        return self._checked_array(case_id, name, self._complete_attrs(case_id))

    def read_array(self, case_id: str, name: str, *, verify: bool = True) -> np.ndarray:
        """The whole array ``name`` of a complete case, compared with its recorded sha256.

        Args:
            verify: compare the data read with the recorded checksum (on by default; pass ``False``
                only when the store was just verified, e.g. by ``synbt store verify``).

        Raises:
            StoreError: naming the store, case and array, and ``synbt store verify STORE``, when the
                array is missing, unfinished, outside the schema, undecodable or does not match.
        """
        return self._read_checked(case_id, name, self._complete_attrs(case_id), verify)

    def read_case(
        self, case_id: str, names: Iterable[str] = ("image", "mask"), *, verify: bool = True
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays ``names`` (each compared with its checksum unless ``verify=False``) and attributes of a complete case.

        Raises:
            StoreError: as :meth:`read_array`, or when ``affine`` / ``spacing`` are missing or not finite.
        """
        attrs = self._complete_attrs(case_id)
        problems = case_attr_problems(attrs)
        if problems:
            raise self._damaged(case_id, "; ".join(problems))
        metas: dict[str, Any] = {}
        arrays = {n: self._read_checked(case_id, n, attrs, verify, metas) for n in names}
        return arrays, dict(attrs)

    def _require_complete(self, case_id: str) -> None:
        self._complete_attrs(case_id)


def _array_from_document(root: zarr.Group, key: str, document: dict[str, Any]) -> zarr.Array:
    """The array at ``key`` of ``root``'s store, opened from its already read and checked ``zarr.json``."""
    from zarr.core.array import AsyncArray
    from zarr.storage import StorePath

    return zarr.Array(AsyncArray(metadata=document, store_path=StorePath(root.store, key)))


def _native(data: np.ndarray) -> np.ndarray:
    """``data`` C-contiguous in native byte order: what zarr reads back, so its checksum matches the read."""
    dtype = data.dtype if data.dtype.isnative else data.dtype.newbyteorder("=")
    return np.ascontiguousarray(data, dtype=dtype)


def _group_document(attrs: dict[str, Any]) -> bytes:
    """A group's ``zarr.json``, byte for byte as zarr's ``GroupMetadata`` renders it for ``update_attributes``.

    zarr renders the document through ``dataclasses.asdict``, which deep-copies every attribute first: 0.14 ms
    for a generated case's 2.2 kB document, against 0.05 ms here, twice per case. The Zarr v3 group document is
    these three keys, in zarr's order, with its JSON settings (``tests/store/test_local_writer.py`` compares
    both renderings).
    """
    from zarr.core.config import config as zarr_config

    document = {"attributes": attrs, "zarr_format": 3, "node_type": "group"}
    return json.dumps(document, indent=zarr_config.get("json_indent"), allow_nan=True).encode()


async def _write_case_async(
    store: Any,
    prefix: str,
    job: EncodingJob,
    others: dict[str, np.ndarray],
    documents: tuple[bytes, bytes],
    layout: StoreLayout,
) -> None:
    """Write the case group's document, then its arrays, then the document with the marker (last) through ``store``.

    ``documents``: the group's ``zarr.json`` without and with the ``complete`` marker. Each encoded file of ``job``
    (``zarr.json`` documents and chunks, keys relative to the group) is written as soon as it is encoded, while the
    others still compress.
    ``others`` are arrays without a plan (:func:`~synbt_factory.store.chunk_writer.array_plan`), written through
    zarr. Every chunk is written, empty ones included: testing each chunk for emptiness cost more CPU than
    writing the few bytes a compressed empty chunk takes.
    """
    import asyncio

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.group import AsyncGroup
    from zarr.storage import StorePath

    buffer = default_buffer_prototype().buffer
    group_key = f"{prefix}/zarr.json"
    await store.set(group_key, buffer.from_bytes(documents[0]))

    failures: list[BaseException] = []

    async def put(key: str, future: Any) -> None:
        if failures:
            return
        try:
            await store.set(f"{prefix}/{key}", buffer.from_bytes(await asyncio.wrap_future(future)))
        except BaseException as exc:  # the first failure stops the rest; raised once nothing is writing anymore
            failures.append(exc)
            job.cancel()

    await asyncio.gather(*(put(key, future) for key, future in job.files))
    if failures:
        raise failures[0]
    if others:
        group = await AsyncGroup.open(StorePath(store, prefix), zarr_format=3)
        for name, data in others.items():
            array = await group.create_array(
                name,
                shape=data.shape,
                dtype=data.dtype,
                config={"write_empty_chunks": True},
                **layout.array_options(data.shape),
            )
            await array.setitem(Ellipsis, data)
    await store.set(group_key, buffer.from_bytes(documents[1]))


class _MetadataError(ValueError):
    """A ``zarr.json`` document that is missing, unreadable or not a JSON object."""


def _exists(location: str) -> bool:
    """True when ``location`` holds something: a group (URLs), or a local path that is not a free folder."""
    if "://" in location:
        try:
            zarr.open_group(location, mode="r")
            return True
        except Exception:
            return False
    path = Path(location)
    return (path.exists() or path.is_symlink()) and not _is_free_folder(path)


def _is_free_folder(path: Path) -> bool:
    """An existing folder that is empty or holds only the writer lock: a new store may be created in it."""
    from synbt_factory.store.lock import LOCK_NAME

    try:
        return path.is_dir() and all(name == LOCK_NAME for name in os.listdir(path))
    except OSError:
        return False


def _first_missing(path: Path) -> Path | None:
    """The topmost folder on the way to ``path`` that does not exist yet (None when ``path`` exists)."""
    if path.exists() or path.is_symlink():
        return None
    top = path
    while top.parent != top and not top.parent.exists():
        top = top.parent
    return top


def _undo_create(location: str, made_from: Path | None, before: set[str]) -> None:
    """Remove what a failed store creation made: the folders it created, or the entries it added to a
    free folder (``before`` lists what was there)."""
    if "://" in location:
        log.debug("%s is remote: a failed creation is not cleaned up", location)
        return
    try:
        if made_from is not None:
            if made_from.exists():
                shutil.rmtree(made_from)
            return
        folder = Path(location)
        for name in sorted(set(os.listdir(folder)) - before):
            entry = folder / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    except OSError as exc:
        log.warning(
            "could not remove what the failed creation of %s left (%s); remove it before rerunning", location, exc
        )
