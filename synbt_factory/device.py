"""Device selection shared by every command (``--device auto|cpu|cuda``)."""

from __future__ import annotations

import torch

__all__ = ["DeviceError", "resolve_device"]


class DeviceError(RuntimeError):
    """The device asked for is not available on this machine."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available else CPU.

    Raises:
        DeviceError: ``cuda`` asked for without a visible GPU.
        ValueError: a name that is none of ``auto``, ``cpu``, ``cuda[:N]``.
    """
    name = name.lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
        return torch.device(name)
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}")
