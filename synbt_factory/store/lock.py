"""The exclusive writer lock of a local store: ``<store>/.synbt-writer.lock``.

One command at a time writes a store (creates it, writes or deletes cases, removes unfinished
ones). :func:`writer_lock` creates the lock file atomically (``O_CREAT | O_EXCL``) holding JSON
``{pid, host, command, started, token}`` and removes it when the command ends, also after an
error. A second writer is refused with a message naming the holder and the fix.

- A lock of this host whose process is gone (killed, crashed) is stale: it is reported and taken
  over with a warning.
- A lock of another host is never broken automatically: synbt cannot see that host's processes,
  so the message says how to remove it when the user is sure no command is writing.
- Readers (open, read, ``store verify``, ``store info``, export) ignore the file; zarr never lists it
  because it is no array or group. Worker processes of one run (Dask) write their own cases without
  taking it: the driver holds it for the whole run.
- Remote stores (URLs with ``://``) have no lock; writers of one remote store must be serialised by
  the user.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from synbt_factory.store.errors import StoreError, StoreLockedError

__all__ = ["LOCK_NAME", "LockHolder", "StoreLockedError", "holds_writer_lock", "read_lock", "writer_lock"]

log = logging.getLogger(__name__)

LOCK_NAME = ".synbt-writer.lock"
_TAKE_ATTEMPTS = 3


@dataclass(frozen=True, kw_only=True)
class LockHolder:
    """The content of a lock file.

    Attributes:
        pid: process id of the holder on ``host``.
        host: ``socket.gethostname()`` of the holder.
        command: what it runs (``"generate"``, ``"prepare"``, ...).
        started: ISO 8601 UTC time the lock was taken.
        token: random id of this lock, so a holder only ever removes its own file.
    """

    pid: int
    host: str
    command: str
    started: str
    token: str

    def describe(self) -> str:
        return f"{self.command!r} (pid {self.pid} on host {self.host}, since {self.started})"

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def is_stale(self) -> bool:
        """True when the holder ran on this host and its process is gone."""
        return self.on_this_host() and not _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    if pid <= 0 or os.name == "nt":  # os.kill(pid, 0) would end the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def _lock_path(location: str | Path) -> Path | None:
    loc = str(location)
    return None if "://" in loc else Path(loc) / LOCK_NAME


def _read_holder(path: Path) -> LockHolder | None:
    """The holder recorded in ``path``; None when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
        return LockHolder(
            pid=int(data["pid"]),
            host=str(data["host"]),
            command=str(data["command"]),
            started=str(data["started"]),
            token=str(data["token"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_lock(location: str | Path) -> LockHolder | None:
    """The holder of a store's writer lock, or None when nobody holds it (or the store is remote)."""
    path = _lock_path(location)
    return None if path is None else _read_holder(path)


def holds_writer_lock(location: str | Path) -> bool:
    """True when this process holds the writer lock of ``location`` (always True for remote stores)."""
    path = _lock_path(location)
    if path is None:
        return True
    holder = _read_holder(path)
    return holder is not None and holder.pid == os.getpid() and holder.on_this_host()


def _refusal(location: str, path: Path, holder: LockHolder | None) -> StoreLockedError:
    if holder is None:
        return StoreLockedError(
            f"{location} has a writer lock {path} that cannot be read (a command may be taking it right now); "
            f"if no synbt command is writing this store, remove {path} and rerun"
        )
    if holder.on_this_host():
        return StoreLockedError(
            f"{location} is being written by {holder.describe()}; wait for it to finish or stop it, then rerun "
            "(one command at a time writes a store)"
        )
    return StoreLockedError(
        f"{location} is being written by {holder.describe()}; synbt cannot check a process on another host, so "
        f"the lock is kept: if you are sure no synbt command is writing this store, remove {path} and rerun"
    )


def _create(path: Path, command: str) -> LockHolder | None:
    """Create the lock file atomically; None when it already exists."""
    mine = LockHolder(
        pid=os.getpid(),
        host=socket.gethostname(),
        command=command,
        started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        token=uuid.uuid4().hex,
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(asdict(mine)) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return mine


def _take_over(location: str, path: Path, stale: LockHolder) -> None:
    """Move a stale lock aside; if what was moved is not that stale lock (another process took it over
    meanwhile), put it back."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = _read_holder(aside)
    if moved is None or moved.token != stale.token:
        with contextlib.suppress(OSError):
            os.link(aside, path)  # fails if a third process holds a new lock: then that one stays
        aside.unlink(missing_ok=True)
        return
    aside.unlink(missing_ok=True)
    log.warning(
        "%s: took over the stale writer lock of %s: its process is no longer running", location, stale.describe()
    )


def _acquire(location: str, path: Path, command: str) -> LockHolder:
    for _ in range(_TAKE_ATTEMPTS):
        mine = _create(path, command)
        if mine is not None:
            return mine
        holder = _read_holder(path)
        if holder is None and not path.exists():
            continue  # released meanwhile
        if holder is not None and holder.is_stale():
            _take_over(location, path, holder)
            continue
        raise _refusal(location, path, holder)
    raise _refusal(location, path, _read_holder(path))


@contextlib.contextmanager
def writer_lock(location: str, *, command: str) -> Iterator[None]:
    """Hold the exclusive writer lock of a store for the ``with`` block.

    The store folder is created when missing (and removed again at the end if it is still empty),
    so the lock can be taken before the store is created.

    Args:
        location: store path; URLs (``://``) are not locked.
        command: what holds it, shown to a refused writer (``"generate"``, ``"prepare"``).

    Raises:
        StoreLockedError: another live process holds the lock, or a lock of another host is present.
        StoreError: the location is not a folder.
    """
    loc = str(location)
    path = _lock_path(loc)
    if path is None:
        log.debug("%s is remote: no writer lock is taken", loc)
        yield
        return
    folder = path.parent
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot make the store folder {loc} ({exc}); choose another store location") from exc
    mine = _acquire(loc, path, command)
    log.debug("%s: writer lock taken by %s", loc, mine.describe())
    try:
        yield
    finally:
        current = _read_holder(path)
        if current is not None and current.token == mine.token:
            path.unlink(missing_ok=True)
        else:
            log.warning("%s: the writer lock is no longer this command's; it is left in place", loc)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a store created under the lock stays
