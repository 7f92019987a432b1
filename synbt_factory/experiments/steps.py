"""Resumable steps: an explicit, ordered list of ``(name, callable)`` run in one run folder.

A step that finished leaves the marker ``<root>/steps/<name>.done.json``; a rerun skips it. The marker is written
atomically after the step returned and after every output it names exists, so a step killed half-way has no
marker and runs again (each step's own code resumes or redoes its outputs).

With ``rerun_downstream`` (the demo), the first step that runs makes every later step run too, marked or not:
later steps read what earlier ones wrote. Without it (the evidence experiment), each step is skipped on its own
marker.

What a marker holds is chosen by the caller, from one of two formats:

* :func:`flat_marker` (the evidence experiment): the step returns a dict, stored flat as
  ``{"step", **info, "seconds", "cpu_seconds", "finished"}``.
* :func:`outputs_marker` (the demo): the step returns ``(outputs, info)``, ``outputs`` being paths relative to
  the run folder, stored as ``{"version", "step", "seconds", "outputs", "info", "finished_at"}``. The runner
  checks that these outputs exist before it writes the marker.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synbt_factory.io import atomic_write_text

__all__ = [
    "MARKER_VERSION",
    "MarkerFn",
    "Step",
    "StepError",
    "StepOutcome",
    "StepRunner",
    "StepTiming",
    "flat_marker",
    "outputs_marker",
]

log = logging.getLogger(__name__)

#: ``version`` of :func:`outputs_marker` markers.
MARKER_VERSION = 1

#: One step: its name (the marker's file name) and what runs it.
Step = tuple[str, Callable[[], Any]]


@dataclass(frozen=True)
class StepTiming:
    """What one run of a step took.

    Attributes:
        seconds: wall-clock seconds.
        cpu_seconds: CPU seconds of this process.
    """

    seconds: float
    cpu_seconds: float


#: ``marker(name, what the step returned, timing)`` → the marker's JSON-ready content.
MarkerFn = Callable[[str, Any, StepTiming], dict[str, Any]]


def flat_marker(name: str, info: dict[str, Any], timing: StepTiming) -> dict[str, Any]:
    """The step's returned dict, flat, with its wall and CPU seconds and the UTC finish time.

    Args:
        name: the step.
        info: what the step returned.
        timing: what the step took.

    Returns:
        ``{"step", **info, "seconds", "cpu_seconds", "finished"}``.
    """
    return {
        "step": name,
        **info,
        "seconds": round(timing.seconds, 2),
        "cpu_seconds": round(timing.cpu_seconds, 2),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def outputs_marker(name: str, result: tuple[dict[str, str], dict[str, Any]], timing: StepTiming) -> dict[str, Any]:
    """The step's outputs (paths relative to the run folder) and info, its wall seconds and local finish time.

    Args:
        name: the step.
        result: what the step returned: ``(outputs, info)``.
        timing: what the step took.

    Returns:
        ``{"version", "step", "seconds", "outputs", "info", "finished_at"}``.
    """
    outputs, info = result
    return {
        "version": MARKER_VERSION,
        "step": name,
        "seconds": round(timing.seconds, 3),
        "outputs": outputs,
        "info": info,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class StepError(RuntimeError):
    """A step raised, or finished without writing an output it named; its marker is not written.

    Args:
        step: the step's name.
        reason: what went wrong.
    """

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"step {step!r} failed: {reason}")
        self.step = step
        self.reason = reason


@dataclass(frozen=True)
class StepOutcome:
    """One step of a call to the runner.

    Attributes:
        name: the step.
        marker: its marker, as written now or as read when the step was skipped.
        skipped: an earlier call had finished the step.
        seconds: wall seconds of the step (measured now, or the marker's when skipped).
    """

    name: str
    marker: dict[str, Any]
    skipped: bool
    seconds: float


class StepRunner:
    """Runs steps in the run folder ``root``; finished ones (``<root>/steps/<name>.done.json``) are skipped.

    Args:
        root: the run folder; the markers go into ``<root>/steps`` (created with the first one), and a marker's
            ``outputs`` are paths relative to ``root``.
        marker: how a step's result becomes its marker (:func:`flat_marker` or :func:`outputs_marker`).
        rerun_downstream: once a step runs, every later step of this runner runs too, marked or not.
        error: ``error(step, reason)`` → the exception raised when a step fails (chained to the step's own).
        passthrough: exception types a step may raise that propagate as they are.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        marker: MarkerFn = flat_marker,
        rerun_downstream: bool = False,
        error: Callable[[str, str], Exception] = StepError,
        passthrough: tuple[type[Exception], ...] = (),
    ) -> None:
        self.root = Path(root)
        self.folder = self.root / "steps"
        self.marker = marker
        self.rerun_downstream = rerun_downstream
        self.error = error
        self.passthrough = passthrough
        self._ran = False

    def path(self, name: str) -> Path:
        """The marker file of step ``name``."""
        return self.folder / f"{name}.done.json"

    def done(self, name: str) -> dict[str, Any] | None:
        """The marker of ``name``, or ``None`` when the step has not finished (or its marker is unreadable)."""
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("marker %s is unreadable; the step runs again", path)
            return None

    def finished(self) -> dict[str, dict[str, Any]]:
        """Every readable marker in the folder, by step name, in file-name order."""
        markers = {}
        for path in sorted(self.folder.glob("*.done.json")):
            name = path.name.removesuffix(".done.json")
            marker = self.done(name)
            if marker is not None:
                markers[name] = marker
        return markers

    def run(self, name: str, step: Callable[[], Any]) -> StepOutcome:
        """Run ``step`` unless its marker exists (and no earlier step ran, with ``rerun_downstream``).

        Args:
            name: the step's name.
            step: runs it; returns what :attr:`marker` turns into the marker.

        Returns:
            The step's marker, whether it ran now, and its seconds.

        Raises:
            Exception: ``error(name, reason)`` when the step raised or left out an output its marker names;
                a ``passthrough`` exception as it is.
        """
        marker = None if (self.rerun_downstream and self._ran) else self.done(name)
        if marker is not None:
            seconds = float(marker.get("seconds", math.nan))
            log.info("step %s: done earlier (%.1f s), skipped", name, seconds)
            return StepOutcome(name=name, marker=marker, skipped=True, seconds=seconds)
        log.info("step %s: running", name)
        self._ran = True
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            result = step()
        except self.passthrough:
            raise
        except Exception as exc:
            raise self.error(name, f"{type(exc).__name__}: {exc}") from exc
        timing = StepTiming(seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)
        marker = self.marker(name, result, timing)
        missing = [v for v in marker.get("outputs", {}).values() if not (self.root / v).exists()]
        if missing:
            raise self.error(name, f"finished without writing {missing}")
        atomic_write_text(self.path(name), json.dumps(marker, indent=2, default=str) + "\n")
        log.debug("step %s: done in %.1f s", name, timing.seconds)
        return StepOutcome(name=name, marker=marker, skipped=False, seconds=timing.seconds)

    def run_all(self, steps: Iterable[Step]) -> list[StepOutcome]:
        """Run ``steps`` in order (see :meth:`run`); stops at the first that fails.

        Args:
            steps: ``(name, callable)`` pairs, in execution order.

        Returns:
            One outcome per step, in order.
        """
        return [self.run(name, step) for name, step in steps]
