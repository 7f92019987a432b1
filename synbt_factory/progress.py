"""Progress reporting without printing: library loops call a callback, the CLI draws it."""

from __future__ import annotations

from typing import Callable, Mapping

__all__ = ["ProgressFn", "report"]

#: ``progress(done, total, metrics)``: ``done`` of ``total`` units finished; metrics are current figures
#: (losses, Dice, cases/s) to show beside the bar.
ProgressFn = Callable[[int, int, Mapping[str, float]], None]


def report(progress: ProgressFn | None, done: int, total: int, metrics: Mapping[str, float] | None = None) -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(done, total, metrics or {})
