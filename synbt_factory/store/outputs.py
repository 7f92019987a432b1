"""Guards for commands that write or replace an output: synbt never deletes or mixes what it did not write.

- :func:`check_output_vs_inputs`: an output must not be, lie inside, or contain one of the command's
  inputs (symlinks resolved).
- :func:`remove_own_store`: an existing output store is deleted only when its root ``zarr.json``
  carries synbt's marker of the same kind (a ``synbt_schema`` and a ``store_kind`` attribute), no
  writer holds its lock, and it is a real folder (not a link); anything else stops with an error
  naming the path.

The phantom writer (:mod:`synbt_factory.phantom.writer`) follows the same rule with its README marker.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from synbt_factory.store.lock import LOCK_NAME, read_lock

__all__ = ["OutputError", "check_output_vs_inputs", "remove_own_store", "store_kind_at"]

log = logging.getLogger(__name__)


class OutputError(ValueError):
    """An output location that would delete, overwrite or mix files synbt did not write."""


def _local(location: str | Path) -> Path | None:
    loc = str(location)
    return None if "://" in loc else Path(loc).expanduser()


def check_output_vs_inputs(out: str | Path, inputs: Iterable[str | Path], *, option: str = "--out") -> None:
    """Refuse an output that is, lies inside, or contains one of ``inputs`` (local paths; URLs are skipped).

    Raises:
        OutputError: naming the output, the input and the fix.
    """
    out_path = _local(out)
    if out_path is None:
        return
    resolved_out = out_path.resolve()
    for item in inputs:
        in_path = _local(item)
        if in_path is None:
            continue
        resolved_in = in_path.resolve()
        if resolved_out == resolved_in:
            relation = "is"
        elif resolved_in in resolved_out.parents:
            relation = "lies inside"
        elif resolved_out in resolved_in.parents:
            relation = "contains"
        else:
            continue
        raise OutputError(
            f"{option} {out} {relation} the input {item}; writing there would damage the input: choose another {option}"
        )


def store_kind_at(path: str | Path) -> str | None:
    """The ``store_kind`` of the synbt store whose root ``zarr.json`` is in ``path``; None if it is not one."""
    meta = Path(path) / "zarr.json"
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    if not isinstance(attrs, dict) or "synbt_schema" not in attrs:
        return None
    kind = attrs.get("store_kind")
    return kind if isinstance(kind, str) else None


def remove_own_store(out: str | Path, *, kind: str, inputs: Iterable[str | Path] = (), option: str = "--out") -> bool:
    """Delete the synbt store of ``kind`` at ``out`` so that a command can write it again.

    Nothing at ``out``, or an empty folder (or one holding only a stale lock), is left as it is.
    Remote locations are not deleted (the store's creation then reports that it exists).

    Returns:
        True when a store was deleted.

    Raises:
        OutputError: ``out`` is or touches an input, is a link or a file, is a folder that is not a
            synbt store of ``kind``, or a writer holds its lock; nothing is deleted.
    """
    check_output_vs_inputs(out, inputs, option=option)
    path = _local(out)
    if path is None:
        log.debug("%s is remote: it is not replaced", out)
        return False
    if path.is_symlink():
        raise OutputError(
            f"{option} {out} is a symbolic link; synbt does not replace what a link points to: "
            f"choose another {option} or remove the link yourself"
        )
    if not path.exists():
        return False
    if not path.is_dir():
        raise OutputError(
            f"{option} {out} is a file, not a synbt {kind} store; synbt only replaces what it wrote: "
            f"choose another {option}"
        )
    holder = read_lock(path)
    if holder is not None and not holder.is_stale():
        raise OutputError(
            f"{option} {out} is being written by {holder.describe()}; it is not replaced while its writer lock is held"
        )
    if all(name == LOCK_NAME for name in os.listdir(path)):
        return False  # empty, or only a stale lock: a new store is created there
    found = store_kind_at(path)
    if found is None:
        raise OutputError(
            f"{option} {out} is not a synbt store (no zarr.json with a synbt_schema attribute); synbt "
            f"only replaces what it wrote: choose another {option} or remove it yourself"
        )
    if found != kind:
        raise OutputError(
            f"{option} {out} is a synbt {found!r} store, not a {kind!r} one; synbt only replaces a "
            f"{kind} store there: choose another {option}"
        )
    shutil.rmtree(path)
    log.info("removed the previous %s store %s", kind, out)
    return True
