"""An encoded case written straight into a local folder: the files zarr's ``LocalStore`` would write, fewer steps.

``LocalStore.set`` sends every file to a thread of asyncio's executor, creates its parent folders, and writes it
to a uniquely named ``*.partial`` file that is then renamed over the key. A case is about 40 files (the group
document twice, each array's ``zarr.json`` and chunks), and those steps cost 30 of the 47 CPU ms a small-phantom
case took to write, more than its checksums and compression together (``bench/store_bench.py``).

Here the caller's thread writes each file as soon as the writer pool has encoded it, creating each folder once.
Chunks and array documents are written in place: until the group's ``complete`` marker exists, a torn file is in
an unmarked group, which readers skip and the next run removes whole (the same guarantee as before). The group
document, which carries the marker, is still written to a ``*.partial`` file and renamed over the key, so it is
always whole. The bytes and paths are zarr's own (``tests/store/test_local_writer.py`` compares the folders).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from synbt_factory.store.chunk_writer import EncodingJob

__all__ = ["write_encoded_case"]


def _write_whole(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to a ``*.partial`` sibling, then rename it over ``path`` (never a torn ``path``)."""
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _make_folders(folder: Path, made: set[Path]) -> None:
    """Create ``folder`` and its missing parents below one in ``made``, top down: one ``mkdir`` each (``parents=True``
    first fails on every missing level, then retries; 46 calls a case instead of 33)."""
    missing = []
    while folder not in made:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        made.add(path)


def write_encoded_case(
    group: Path,
    job: EncodingJob,
    group_document: bytes,
    complete_document: bytes,
) -> None:
    """Write a case group into a local folder: its document, then every encoded file, then the marked document.

    Args:
        group: the case group's folder (created if missing).
        job: the checksums and encoded files (``zarr.json`` documents and chunks, keys relative to the group).
        group_document: the group's ``zarr.json`` with every attribute and the checksums, without the marker.
        complete_document: the same with the ``complete`` marker, written last.

    Raises:
        OSError: a file could not be written; the work not started yet is cancelled, and the group stays
            unmarked.
    """
    group.mkdir(parents=True, exist_ok=True)
    _write_whole(group / "zarr.json", group_document)
    made: set[Path] = {group}
    try:
        for key, future in job.files:
            path = group / key
            _make_folders(path.parent, made)
            data = future.result()
            with open(path, "wb") as f:
                f.write(data)
    except BaseException:
        job.cancel()
        raise
    _write_whole(group / "zarr.json", complete_document)
