"""Progress reporting without printing: library loops call a callback, the CLI draws it.

:class:`StepClock` wraps such a callback for a training run: it announces the run (preset, steps, device)
before step 1, measures the seconds per step over the first few steps and logs the ETA; when the ETA exceeds
:data:`ETA_WARN_SECONDS` it warns and names the faster preset. Everything goes through :mod:`logging`, so it
shows on a terminal and in a log file alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

__all__ = [
    "ETA_WARN_SECONDS",
    "EtaEstimate",
    "ProgressFn",
    "RunPlan",
    "StepClock",
    "estimate_eta",
    "format_duration",
    "report",
]

log = logging.getLogger(__name__)

#: ``progress(done, total, metrics)``: ``done`` of ``total`` units finished; metrics are current figures
#: (losses, Dice, cases/s) to show beside the bar.
ProgressFn = Callable[[int, int, Mapping[str, float]], None]

#: a run whose ETA exceeds this (2 h) gets a warning naming the faster preset
ETA_WARN_SECONDS = 2 * 3600.0


def report(progress: ProgressFn | None, done: int, total: int, metrics: Mapping[str, float] | None = None) -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(done, total, metrics or {})


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """What a training run will do, announced before its first step.

    Args:
        what: the run, e.g. ``"train vqvae (patch stage)"``.
        preset: the preset's name.
        steps: optimiser steps in all (a resumed run counts from its first step).
        device: where it runs (``cpu``, ``cuda:0``).
        faster: what to pass for a shorter run (``"--preset cpu"``); None when there is no faster preset.
    """

    what: str
    preset: str
    steps: int
    device: str
    faster: str | None = None


@dataclass(frozen=True, kw_only=True)
class EtaEstimate:
    """Measured seconds per step and the time the remaining steps will take at that pace."""

    seconds_per_step: float
    eta_seconds: float
    remaining_steps: int


def estimate_eta(steps_measured: int, seconds: float, remaining_steps: int) -> EtaEstimate:
    """The pace of ``steps_measured`` steps that took ``seconds``, extrapolated over ``remaining_steps``."""
    per_step = seconds / max(steps_measured, 1)
    return EtaEstimate(
        seconds_per_step=per_step,
        eta_seconds=per_step * max(remaining_steps, 0),
        remaining_steps=max(remaining_steps, 0),
    )


def format_duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.4 h``, ``208 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


class StepClock:
    """A :data:`ProgressFn` wrapper that announces a training run and logs its measured pace and ETA.

    The pace is measured from the first step reported (so set-up work and the first step's warm-up are left
    out) over the next ``measure_steps`` steps; a resumed run measures from where it resumed. The first steps
    are often slower than the rest (allocation, caches), so the pace is measured once more over the next
    ``refine_steps`` steps, and the new ETA logged when it differs from the first by more than a factor 1.5.

    Args:
        plan: the run to announce.
        progress: the callback to pass every report on to (e.g. the CLI's bar); None = none.
        measure_steps: steps to time before the ETA is logged.
        refine_steps: steps after the first estimate over which the pace is measured again.
        warn_after_seconds: an ETA above this is a warning naming ``plan.faster``.
        clock: seconds as a float (``time.monotonic``; tests pass a fake one).
    """

    def __init__(
        self,
        plan: RunPlan,
        progress: ProgressFn | None = None,
        *,
        measure_steps: int = 3,
        refine_steps: int = 50,
        warn_after_seconds: float = ETA_WARN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.progress = progress
        self.measure_steps = max(1, measure_steps)
        self.refine_steps = max(1, refine_steps)
        self.refined: EtaEstimate | None = None
        self._second: tuple[int, float] | None = None
        self.warn_after_seconds = warn_after_seconds
        self.clock = clock
        self.estimate: EtaEstimate | None = None
        self._first: tuple[int, float] | None = None
        self._announced = False

    def announce(self) -> None:
        """Log the run's preset, steps and device (call it before step 1; else the first report does, with the
        total it reports)."""
        self._announced = True
        p = self.plan
        log.info(
            "%s: preset %s, %d steps on %s; the pace and ETA follow after %d steps",
            p.what,
            p.preset,
            p.steps,
            p.device,
            self.measure_steps + 1,
        )

    def __call__(self, done: int, total: int, metrics: Mapping[str, float]) -> None:
        if not self._announced:
            self.plan = replace(self.plan, steps=total)
            self.announce()
        report(self.progress, done, total, metrics)
        if self.refined is not None:
            return
        now = self.clock()
        if self.estimate is not None:
            self._refine(done, total, now)
            return
        if self._first is None:
            self._first = (done, now)
            return
        first_done, first_time = self._first
        if done - first_done < self.measure_steps:
            return
        self.estimate = estimate_eta(done - first_done, now - first_time, total - done)
        self._second = (done, now)
        self._log(self.estimate)

    def _refine(self, done: int, total: int, now: float) -> None:
        assert self._second is not None and self.estimate is not None
        start_done, start_time = self._second
        if done - start_done < self.refine_steps:
            return
        self.refined = estimate_eta(done - start_done, now - start_time, total - done)
        ratio = self.refined.seconds_per_step / max(self.estimate.seconds_per_step, 1e-12)
        if ratio > 1.5 or ratio < 1 / 1.5:
            self._log(self.refined, again=True)

    def _log(self, estimate: EtaEstimate, *, again: bool = False) -> None:
        p = self.plan
        pace = f"{estimate.seconds_per_step:.3g} s/step" + (" (measured again)" if again else "")
        eta = format_duration(estimate.eta_seconds)
        if estimate.eta_seconds <= self.warn_after_seconds:
            log.info("%s: %s, about %s for the remaining %d steps", p.what, pace, eta, estimate.remaining_steps)
            return
        advice = (
            f"for a shorter run pass {p.faster} (or fewer --steps)"
            if p.faster
            else "for a shorter run pass fewer --steps"
        )
        log.warning(
            "%s: %s, so the remaining %d steps of preset %s take about %s on %s (over %s); %s",
            p.what,
            pace,
            estimate.remaining_steps,
            p.preset,
            eta,
            p.device,
            format_duration(self.warn_after_seconds),
            advice,
        )
