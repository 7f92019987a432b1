"""Explicit random streams.

Every random function in synbt takes a generator. Per-case streams derive from
``(run_seed, case_index, stream)`` through :class:`numpy.random.SeedSequence`, so what
a case gets never depends on batch size, worker count or the order cases run in.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported only by torch_generator: NumPy-only callers never load it
    import torch

__all__ = ["case_seed_sequence", "case_generator", "torch_generator", "stream_id"]


def stream_id(stream: str) -> int:
    """A stable 32-bit integer for a stream name (crc32; identical on every platform)."""
    return zlib.crc32(stream.encode("utf-8"))


def case_seed_sequence(run_seed: int, case_index: int, stream: str = "") -> np.random.SeedSequence:
    """The seed sequence of one case's named stream.

    Args:
        run_seed: the run's ``--seed``; must be >= 0.
        case_index: the case's position in the run (0-based); must be >= 0.
        stream: a name separating independent uses (``"placement"``, ``"ddim"`` ...).
    """
    if run_seed < 0:
        raise ValueError(f"run_seed must be >= 0, got {run_seed}")
    if case_index < 0:
        raise ValueError(f"case_index must be >= 0, got {case_index}")
    return np.random.SeedSequence([int(run_seed), int(case_index), stream_id(stream)])


def case_generator(run_seed: int, case_index: int, stream: str = "") -> np.random.Generator:
    """A NumPy generator for one case's named stream."""
    return np.random.default_rng(case_seed_sequence(run_seed, case_index, stream))


def torch_generator(
    run_seed: int, case_index: int, stream: str = "", device: str | torch.device = "cpu"
) -> torch.Generator:
    """A torch generator on ``device`` for one case's named stream."""
    import torch

    seed = int(case_seed_sequence(run_seed, case_index, stream).generate_state(1, dtype=np.uint64)[0])
    gen = torch.Generator(device=device)
    gen.manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
    return gen
