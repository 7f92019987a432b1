"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every atomic write in synbt goes through :func:`atomic_path` (for writers that need a file name, such
as nibabel or h5py) or :func:`atomic_write` (for writers that take an open binary file, such as
``torch.save``); :func:`atomic_write_bytes`, :func:`atomic_write_text` and :func:`atomic_write_json`
are built on the latter.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "file_mode",
    "share_like_open",
]


def _umask() -> int:
    """The process umask, read without changing it where the OS tells it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permissions ``open()`` gives a new file here: 0o666 less the umask (group-readable on a group umask)."""
    return 0o666 & ~_umask()


def share_like_open(fd_or_path: int | str | Path) -> None:
    """Give a file made by ``tempfile.mkstemp`` (always 0o600) the permissions of a plain ``open()`` instead, so
    checkpoints and caches written through a temporary file stay readable by the group where the umask allows."""
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, file_mode())
    else:
        os.chmod(fd_or_path, file_mode())


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk where the OS allows; errors are ignored."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    path: str | Path, *, suffix: str = ".partial", unique: bool = False, fsync_dir: bool = False
) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it is renamed over ``path`` when the block succeeds.

    The parent folder is created. If the block raises (or the rename fails), the temporary file is removed
    and the exception propagates, so ``path`` keeps its previous contents.

    Args:
        path: the target file.
        suffix: appended to ``path``'s name to form the temporary name (``<name><suffix>``), e.g.
            ``".partial.nii.gz"`` for a writer that picks its format from the extension.
        unique: make a fresh ``.<name>.<random><suffix>`` file with ``tempfile.mkstemp`` instead of the fixed
            ``<name><suffix>``, so concurrent writers of the same target never share a temporary file; it gets
            the permissions a plain ``open()`` would give (:func:`share_like_open`), not mkstemp's 0o600.
        fsync_dir: after the rename, fsync the folder too, so the rename itself survives a power loss.

    Yields:
        The temporary path (created empty when ``unique``; otherwise not created).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if unique:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        tmp = Path(name)
    else:
        fd, tmp = -1, path.with_name(path.name + suffix)
    try:
        if fd >= 0:
            try:
                share_like_open(fd)
            finally:
                os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync_dir:
        _fsync_dir(path.parent)


def atomic_write(
    path: str | Path,
    write: Callable[[BinaryIO], object],
    *,
    fsync: bool = True,
    unique: bool = False,
    fsync_dir: bool = False,
) -> Path:
    """Atomically write ``path`` with ``write(fh)`` on an open binary temporary file (see :func:`atomic_path`).

    Args:
        path: the target file; its folder is created.
        write: called once with the temporary file opened ``"wb"``; it writes the whole content.
        fsync: flush and fsync the file before the rename (a crash cannot leave a renamed but empty file).
        unique: use a fresh ``mkstemp`` temporary file (see :func:`atomic_path`) instead of ``<path>.partial``.
        fsync_dir: fsync the folder after the rename.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    with atomic_path(path, unique=unique, fsync_dir=fsync_dir) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())
    return path


def atomic_write_bytes(path: str | Path, payload: bytes, *, fsync: bool = True) -> Path:
    """Write ``payload`` to ``path`` through ``<path>.partial``, fsync (unless ``fsync=False``), then rename.

    A crash leaves either the previous file or the new one (and at most a ``.partial`` file, which
    the next write replaces). The parent folder is created.
    """
    return atomic_write(path, lambda fh: fh.write(payload), fsync=fsync)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | Path, data: Any, *, fsync: bool = True) -> Path:
    """:func:`atomic_write_text` of ``data`` as indented JSON with a final newline."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n", fsync=fsync)
