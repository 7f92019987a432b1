"""Atomic, self-describing checkpoints.

A checkpoint is one ``torch.save`` file holding plain tensors, numbers, strings, lists
and dicts only, so it loads with ``weights_only=True``. It always carries ``kind``,
``config`` (the component's config dict) and ``synbt_version``. Writes go to a temporary
file in the same folder, are fsynced, then ``os.replace``d over the target
(:func:`synbt_factory.io.atomic_write`), so a crash during a save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from synbt_factory import __version__
from synbt_factory.io import atomic_write

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "rebuilding_from",
    "file_sha256",
    "CheckpointError",
    "check_checkpoint_file",
    "prune_checkpoints",
]

log = logging.getLogger(__name__)
_TORCH_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, of the wrong kind, or its contents cannot rebuild its component."""


_MESSAGE_CHARS = 300


def _describe(exc: BaseException) -> str:
    """One line for what went wrong while rebuilding from a checkpoint."""
    if isinstance(exc, KeyError):
        return f"it has no entry {exc.args[0]!r}" if exc.args else "an entry is missing"
    text = " ".join(str(exc).split())
    if len(text) > _MESSAGE_CHARS:
        text = text[: _MESSAGE_CHARS - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def rebuilding_from(path: Path, what: str) -> Iterator[None]:
    """Report a failure to rebuild ``what`` from the loaded checkpoint ``path`` as one :class:`CheckpointError`.

    Wrap the lines that read the checkpoint's entries, rebuild the config and the network and load its
    weights: a missing entry, a config this version cannot rebuild (missing keys, wrong types) and
    weights of other names or shapes all mean the file does not match its kind.

    Args:
        path: the checkpoint file (named in the message).
        what: the component, e.g. ``"VQ-VAE"``.

    Raises:
        CheckpointError: naming the file, the cause and the fix.
    """
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot rebuild its {what} ({_describe(exc)}); the file is damaged, edited or from "
            "another synbt version: pass a checkpoint written by this version's 'synbt train', or train a new one"
        ) from exc


def save_checkpoint(path: Path, payload: dict[str, Any], *, kind: str, config: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (plus ``kind``, ``config``, version) to ``path``.

    Args:
        path: target file; its folder is created.
        payload: state dicts and plain values (must load with ``weights_only=True``).
        kind: what this is (``"vqvae"``, ``"diffusion"``, ``"tissue"``, ``"segmenter"``).
        config: the component's config as a plain dict.
    """
    path = Path(path)
    data = dict(payload)
    data.update({"kind": kind, "config": config, "synbt_version": __version__})
    # a fresh temporary file per save (two trainers saving to one folder never share one), with a plain open()'s
    # permissions, fsynced; the folder is fsynced after the rename
    atomic_write(path, lambda fh: torch.save(data, fh), unique=True, fsync_dir=True)
    log.debug("saved %s checkpoint %s", kind, path)
    return path


def load_checkpoint(path: Path, *, kind: str | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check its kind.

    Raises:
        CheckpointError: naming the file and what to do, if it is missing, corrupt or of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train one first or pass the right --ckpt path")
    check_checkpoint_file(path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # the safe loader refused an object no synbt checkpoint holds
        raise CheckpointError(
            f"{path} is not a synbt checkpoint: it holds Python objects other than tensors and "
            "plain values, which synbt never saves (refused by the safe loader)"
        ) from exc
    except Exception as exc:  # torch raises several types for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {first}); it may be truncated or damaged"
        ) from exc
    if not isinstance(data, dict) or "kind" not in data or "config" not in data:
        raise CheckpointError(f"{path} is not a synbt checkpoint (no 'kind'/'config' entries)")
    if kind is not None and data["kind"] != kind:
        raise CheckpointError(f"{path} is a {data['kind']!r} checkpoint, expected {kind!r}")
    return data


def check_checkpoint_file(path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` starts like a ``torch.save`` file (a zip archive), so that a
    text file or an image given as a checkpoint is named as such rather than with the unpickler's advice.
    Reads 4 bytes: commands check their checkpoint arguments with it before any work starts."""
    with open(path, "rb") as fh:
        head = fh.read(len(_TORCH_MAGIC))
    if head != _TORCH_MAGIC:
        raise CheckpointError(
            f"{path} is not a synbt checkpoint (not a file written by torch.save); pass a .pt file "
            "written by a synbt trainer, e.g. runs/<run>/final.pt"
        )


def file_sha256(path: Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (recorded in store metadata for provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


_STEP_RE = re.compile(r"step_(\d+)\.pt$")


def prune_checkpoints(folder: Path, *, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` ``step_<N>.pt`` files in ``folder``; returns those removed."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    steps = sorted(
        ((int(m.group(1)), p) for p in Path(folder).glob("step_*.pt") if (m := _STEP_RE.search(p.name))),
        key=lambda t: t[0],
    )
    removed = [p for _, p in steps[:-keep_last]]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
