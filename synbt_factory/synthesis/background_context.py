"""A background's placement context from the prepared store, its costly anatomy computed once and stored.

The anatomy of a placement context (:class:`~synbt_factory.synthesis.placement.PlacementAnatomy`: body and
chest wall, the breast trimmed to the anatomical prior, the existing tumors' margin and the breast's depth map)
depends on the background alone. ``synbt data prepare`` and ``synbt data tissue`` store it in each prepared
case, so every later ``generate`` run, and every worker of one, reads it instead of redoing hole fills and
distance transforms. Stored arrays (added with :meth:`~synbt_factory.store.CaseStore.add_arrays`, so each has
its own checksum marker)::

    placement_breast      (X, Y, Z) uint8   breast inside the body, trimmed to the anatomical prior
    placement_forbidden   (X, Y, Z) uint8   outside the body ∪ chest wall
    placement_avoid       (X, Y, Z) uint8   existing tumors dilated by overlap_margin_mm
    placement_depth       (X, Y, Z) float32 distance (voxels) of each breast voxel to the breast's outside

and the case attribute ``placement_anatomy``: the key it was built for (version, the
:data:`~synbt_factory.synthesis.placement.ANATOMY_FIELDS` of the config, the breast array used and the sha256
of every input array) with the breast size. A stored anatomy is used only when its key matches the one a run
would build, so a changed tissue prediction or placement config silently falls back to building it (and
placements are bit-identical either way: the stored arrays are the built ones, losslessly).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from synbt_factory.progress import ProgressFn, report
from synbt_factory.synthesis.bank import BREAST_SOURCES
from synbt_factory.synthesis.placement import (
    ANATOMY_FIELDS,
    PlacementAnatomy,
    PlacementConfig,
    PlacementContext,
    PlacementError,
)

__all__ = [
    "ANATOMY_ATTR",
    "ANATOMY_ARRAYS",
    "context_from_store",
    "has_stored_anatomy",
    "store_placement_anatomy",
    "stored_anatomy",
]

log = logging.getLogger(__name__)

#: bump when the anatomy's definition changes: older stored anatomies are then rebuilt, never used
ANATOMY_VERSION = 1
ANATOMY_ATTR = "placement_anatomy"
#: PlacementAnatomy field → stored array name
ANATOMY_ARRAYS = {
    "breast": "placement_breast",
    "forbidden": "placement_forbidden",
    "avoid": "placement_avoid",
    "depth": "placement_depth",
}


def _sources(names: set[str], source: str) -> tuple[str | None, str | None]:
    """(FGT array, breast array) a placement reads for ``source`` (see :func:`context_from_store`)."""
    if source not in ("auto", "pred", "labels"):
        raise ValueError(f"source must be 'auto', 'pred' or 'labels', got {source!r}")
    auto = tuple(zip(("tissue_pred", "tissue"), BREAST_SOURCES, strict=True))  # the bank's order of breast masks
    order = {"auto": auto, "pred": auto[:1], "labels": auto[1:]}[source]
    fgt_name = next((f for f, _ in order if f in names), None)
    breast_name = next((b for _, b in order if b in names), None)
    if source != "auto" and fgt_name is None:
        raise PlacementError(f"no {order[0][0]!r} array (placement source {source!r})")
    return fgt_name, breast_name


def _key(attrs: dict[str, Any], breast_name: str | None, config: PlacementConfig) -> dict[str, Any]:
    """What an anatomy was built from: JSON-ready, compared whole."""
    checksums = attrs.get("sha256") or {}
    inputs = {name: checksums.get(name) for name in ("image", "mask", breast_name) if name}
    key = {
        "version": ANATOMY_VERSION,
        "config": {f: getattr(config, f) for f in ANATOMY_FIELDS},
        "breast_array": breast_name,
        "inputs_sha256": inputs,
    }
    return json.loads(json.dumps(key))


def has_stored_anatomy(
    store: Any,
    case_id: str,
    config: PlacementConfig | None = None,
    *,
    source: str = "auto",
    attrs: dict[str, Any] | None = None,
    names: set[str] | None = None,
) -> bool:
    """Whether the case holds a finished anatomy built for its current inputs and this config (reads no array).

    ``attrs`` / ``names``: the case's attributes and array names when the caller has read them already (they
    are not read again).
    """
    config = config or PlacementConfig()
    attrs = store.case_attrs(case_id) if attrs is None else attrs
    record = attrs.get(ANATOMY_ATTR)
    if not isinstance(record, dict):
        return False
    _, breast_name = _sources(set(store.array_names(case_id)) if names is None else names, source)
    finished = attrs.get("sha256") or {}
    return record.get("key") == _key(attrs, breast_name, config) and all(
        name in finished for name in ANATOMY_ARRAYS.values()
    )


def stored_anatomy(
    store: Any, case_id: str, config: PlacementConfig | None = None, *, source: str = "auto"
) -> PlacementAnatomy | None:
    """The case's stored anatomy when it was built for these inputs and this config, else None."""
    attrs = store.case_attrs(case_id)
    if not has_stored_anatomy(store, case_id, config, source=source, attrs=attrs):
        return None
    return _read_anatomy(store, case_id, attrs)


def _read_anatomy(store: Any, case_id: str, attrs: dict[str, Any]) -> PlacementAnatomy:
    """The stored anatomy of a case whose ``attrs`` record one (:func:`has_stored_anatomy`), its arrays read in one
    :meth:`read_case` (the case's metadata read once, not once per array)."""
    record = attrs[ANATOMY_ATTR]
    read, _ = store.read_case(case_id, tuple(ANATOMY_ARRAYS.values()))
    arrays = {field: read[name] for field, name in ANATOMY_ARRAYS.items()}
    size = record.get("breast_size_mm")
    return PlacementAnatomy(
        breast=arrays["breast"] > 0,
        forbidden=arrays["forbidden"] > 0,
        avoid=arrays["avoid"] > 0,
        depth=np.asarray(arrays["depth"], dtype=np.float32),
        breast_size_mm=None if size is None else float(size),
        breast_given=bool(record.get("breast_given")),
    )


def _read_fgt(store: Any, case_id: str, fgt_name: str | None) -> np.ndarray | None:
    """(X, Y, Z) bool FGT: the model's ``tissue_pred``, the labels' class 2, or None."""
    if fgt_name == "tissue_pred":
        return store.read_array(case_id, "tissue_pred") > 0
    if fgt_name == "tissue":
        return store.read_array(case_id, "tissue") == 2
    return None


def _read_inputs(store: Any, case_id: str, breast_name: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(2, X, Y, Z) float32 image, (X, Y, Z) tumor mask and the bool breast mask (None: intensity)."""
    arrays, _ = store.read_case(case_id, ("image", "mask"))
    breast = store.read_array(case_id, breast_name) > 0 if breast_name else None
    return arrays["image"].astype(np.float32), arrays["mask"], breast


def context_from_store(
    store: Any, case_id: str, config: PlacementConfig | None = None, *, source: str = "auto"
) -> PlacementContext:
    """A :class:`~synbt_factory.synthesis.placement.PlacementContext` for one prepared case.

    The anatomy is read from the store when one was stored for these inputs and this config
    (:func:`store_placement_anatomy`), else built; the context is identical either way.

    Args:
        store: an open :class:`~synbt_factory.store.CaseStore`.
        case_id: the background case.
        config: placement rules.
        source: ``"auto"`` — FGT from ``tissue_pred`` (the tissue model's, written by ``synbt data
            tissue``) else the ``tissue`` label map's class 2, breast from ``breast_pred`` else
            ``breast`` else intensity; ``"pred"`` — only the model's arrays; ``"labels"`` — only
            the label maps (e.g. to compare placement on true and predicted tissue).

    Raises:
        PlacementError: if ``source`` asks for arrays the case does not have, or the case has no breast.
    """
    config = config or PlacementConfig()
    attrs = store.case_attrs(case_id)
    names = set(store.array_names(case_id))
    try:
        fgt_name, breast_name = _sources(names, source)
    except PlacementError as exc:
        raise PlacementError(f"case {case_id} has {exc}") from None
    stored = has_stored_anatomy(store, case_id, config, source=source, attrs=attrs, names=names)
    anatomy = _read_anatomy(store, case_id, attrs) if stored else None
    if anatomy is None:
        image, mask, breast = _read_inputs(store, case_id, breast_name)
        anatomy = PlacementAnatomy.build(image, mask=mask, breast=breast, config=config)
    ctx = PlacementContext.from_anatomy(anatomy, fgt=_read_fgt(store, case_id, fgt_name), config=config)
    ctx.notes["fgt_source"] = fgt_name or "none"
    ctx.notes["breast_source"] = breast_name or "intensity"
    ctx.notes["anatomy"] = "stored" if stored else "built"
    return ctx


def store_placement_anatomy(
    store: Any,
    case_ids: Sequence[str] | None = None,
    config: PlacementConfig | None = None,
    progress: ProgressFn | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build and store each case's placement anatomy (the caller holds the store's writer lock).

    A case whose stored anatomy already matches its inputs and ``config`` is skipped unless ``overwrite``.
    A case without a breast to place in is counted and left without one (generate reports it per case).

    Returns:
        ``{"written": n, "skipped": n, "no_breast": [case ids]}``.
    """
    config = config or PlacementConfig()
    ids = list(case_ids) if case_ids is not None else store.case_ids()
    written, skipped, no_breast = 0, 0, []
    for i, case_id in enumerate(ids, start=1):
        if not overwrite and has_stored_anatomy(store, case_id, config):
            skipped += 1
        else:
            attrs = store.case_attrs(case_id)
            _, breast_name = _sources(set(store.array_names(case_id)), "auto")
            image, mask, breast = _read_inputs(store, case_id, breast_name)
            try:
                anatomy = PlacementAnatomy.build(image, mask=mask, breast=breast, config=config)
            except PlacementError:
                no_breast.append(case_id)
            else:
                record = {
                    "key": _key(attrs, breast_name, config),
                    "breast_size_mm": anatomy.breast_size_mm,
                    "breast_given": anatomy.breast_given,
                }
                arrays = {
                    name: (
                        getattr(anatomy, field).astype(np.float32)
                        if field == "depth"
                        else getattr(anatomy, field).astype(np.uint8)
                    )
                    for field, name in ANATOMY_ARRAYS.items()
                }
                store.add_arrays(case_id, arrays, attrs={ANATOMY_ATTR: record})
                written += 1
        report(progress, i, len(ids), {"written": float(written)})
    if no_breast:
        log.warning(
            "%d case(s) have no breast voxel inside the body, so no tumor can be placed in them: %s",
            len(no_breast),
            ", ".join(no_breast[:5]) + (" …" if len(no_breast) > 5 else ""),
        )
    return {"written": written, "skipped": skipped, "no_breast": no_breast}
