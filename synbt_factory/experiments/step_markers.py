"""Resumable steps: a step that finished leaves ``<folder>/<name>.done.json``; a rerun skips it.

The marker is written atomically after the step's outputs, so a step killed half-way has no marker and runs
again (each step's own code resumes or redoes its outputs).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synbt_factory.io import atomic_write_json

__all__ = ["StepMarkers"]

log = logging.getLogger(__name__)


class StepMarkers:
    """The markers of one run folder.

    Args:
        folder: where the ``<name>.done.json`` files live (created on the first marker).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.done.json"

    def done(self, name: str) -> dict[str, Any] | None:
        """The marker of ``name``, or None when the step has not finished."""
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("marker %s is unreadable; the step runs again", path)
            return None

    def run(self, name: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``step`` unless its marker exists; the marker holds what it returned plus its wall seconds."""
        marker = self.done(name)
        if marker is not None:
            log.info("step %s: done earlier (%.1f s), skipped", name, marker.get("seconds", float("nan")))
            return marker
        t0, c0 = time.perf_counter(), time.process_time()
        info = step()
        marker = {"step": name, **info, "seconds": round(time.perf_counter() - t0, 2),
                  "cpu_seconds": round(time.process_time() - c0, 2),
                  "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write_json(self.path(name), marker)
        log.info("step %s: %.1f s", name, marker["seconds"])
        return marker
