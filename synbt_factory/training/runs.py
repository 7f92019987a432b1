"""Helpers shared by training loops: RNG state capture/restore, metric logs, checkpoint rotation, EMA, Ctrl-C.

Everything here is model-agnostic. RNG states are stored in checkpoint-safe form (tensors and
strings only), so checkpoints still load with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from synbt_factory.checkpoint import load_checkpoint, prune_checkpoints, save_checkpoint

__all__ = [
    "StopRequest",
    "TrainingInterrupted",
    "capture_rng_state",
    "interrupted_run",
    "run_steps",
    "stop_on_ctrl_c",
    "restore_rng_state",
    "MetricLog",
    "save_training_checkpoint",
    "latest_checkpoint",
    "make_ema",
    "to_float_metrics",
]

log = logging.getLogger(__name__)

LAST_NAME = "last.pt"
FINAL_NAME = "final.pt"


# ---------------------------------------------------------------------------- RNG state
def capture_rng_state(generators: Mapping[str, np.random.Generator] | None = None) -> dict[str, Any]:
    """Torch CPU (and CUDA, if present) RNG state plus named NumPy generators' states.

    NumPy bit-generator states hold integers wider than 64 bits, so they are stored as JSON strings.

    Returns:
        ``{"torch_cpu": ByteTensor, "torch_cuda": [ByteTensor...], "numpy": {name: json}}``.
    """
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state(), "torch_cuda": [], "numpy": {}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    for name, gen in (generators or {}).items():
        state["numpy"][name] = json.dumps(gen.bit_generator.state)
    return state


def restore_rng_state(state: Mapping[str, Any], generators: Mapping[str, np.random.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng_state`; every named generator must be present in ``state``.

    Raises:
        KeyError: a generator named in ``generators`` has no saved state.
    """
    torch.set_rng_state(state["torch_cpu"])
    cuda_states = state.get("torch_cuda") or []
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            log.warning(
                "checkpoint has %d CUDA RNG states, this machine %d GPUs: CUDA RNG not restored",
                len(cuda_states),
                torch.cuda.device_count(),
            )
    saved = state.get("numpy", {})
    for name, gen in (generators or {}).items():
        if name not in saved:
            raise KeyError(f"no saved RNG state for generator {name!r} (have: {sorted(saved)})")
        gen.bit_generator.state = json.loads(saved[name])


# ---------------------------------------------------------------------------- metric log
def to_float_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Tensors and numbers → plain floats (for logs, progress callbacks and checkpoints)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().float().item()
        out[key] = float(value)
    return out


class MetricLog:
    """Append-only JSON-lines metric log (one ``{"step": N, ...}`` object per line) with CSV export.

    On resume, :meth:`truncate_after` drops lines logged after the checkpoint that training resumes
    from, so the log never holds two different values for one step.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": int(step), **to_float_metrics(metrics)}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, float]]:
        """Every parseable record (a torn last line after a crash is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("skipping unreadable line in %s", self.path)
        return out

    def truncate_after(self, step: int) -> int:
        """Keep records with ``step <= step``; returns how many were dropped."""
        records = self.records()
        keep = [r for r in records if r.get("step", math.inf) <= step]
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
        tmp.replace(self.path)
        return len(records) - len(keep)

    def write_csv(self, path: Path | None = None) -> Path:
        """All records as CSV (columns: ``step`` then the union of metric names, blanks where absent)."""
        path = Path(path) if path is not None else self.path.with_suffix(".csv")
        records = self.records()
        columns = ["step"] + sorted({k for r in records for k in r} - {"step"})
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(records)
        return path


# ---------------------------------------------------------------------------- checkpoints
def save_training_checkpoint(
    folder: Path,
    step: int,
    payload: dict[str, Any],
    *,
    kind: str,
    config: dict[str, Any],
    keep_last: int,
    final: bool = False,
) -> Path:
    """Write ``step_<N>.pt`` and ``last.pt`` (both atomic), prune old steps; ``final`` also writes ``final.pt``.

    Returns:
        The ``step_<N>.pt`` path.
    """
    folder = Path(folder)
    path = save_checkpoint(folder / f"step_{step}.pt", payload, kind=kind, config=config)
    save_checkpoint(folder / LAST_NAME, payload, kind=kind, config=config)
    if final:
        save_checkpoint(folder / FINAL_NAME, payload, kind=kind, config=config)
    removed = prune_checkpoints(folder, keep_last=keep_last)
    if removed:
        log.debug("pruned %s", ", ".join(p.name for p in removed))
    return path


def latest_checkpoint(folder: Path, *, kind: str | None = None) -> dict[str, Any] | None:
    """The ``last.pt`` of a run folder (loaded with ``weights_only=True``), or ``None`` if there is none."""
    path = Path(folder) / LAST_NAME
    if not path.is_file():
        return None
    return load_checkpoint(path, kind=kind)


# ---------------------------------------------------------------------------- EMA
def make_ema(model: torch.nn.Module, decay: float = 0.999) -> AveragedModel:
    """An exponential moving average of ``model``'s parameters and buffers (torch ``AveragedModel``).

    Call ``ema.update_parameters(model)`` after each optimiser step (the first call copies the
    weights, later ones blend ``decay · ema + (1 − decay) · model``); ``ema.module`` is the averaged
    copy and ``ema.state_dict()`` goes into checkpoints.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must be in (0, 1), got {decay}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


# ---------------------------------------------------------------------------- Ctrl-C
class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a training run.

    A ``KeyboardInterrupt``, so callers that do not know it still stop as before.

    Args:
        step: the step the saved checkpoint resumes from (None when nothing was saved).
        checkpoint: the run's ``last.pt`` (None when the run has none yet).
    """

    def __init__(self, step: int | None, checkpoint: Path | None) -> None:
        where = f"at step {step}" if step is not None else "before the first checkpoint"
        super().__init__(f"training interrupted {where}")
        self.step = step
        self.checkpoint = checkpoint


class StopRequest:
    """Set by the first Ctrl-C during :func:`stop_on_ctrl_c`; the loop saves and stops after its current step."""

    def __init__(self) -> None:
        self.requested = False


@contextlib.contextmanager
def stop_on_ctrl_c() -> Iterator[StopRequest]:
    """Turn the first Ctrl-C into a request to stop after the current step; a second one stops at once.

    Outside the main thread (where signal handlers cannot be set) Ctrl-C keeps its usual effect.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        if request.requested:
            raise KeyboardInterrupt
        request.requested = True
        log.warning("Ctrl-C: stopping after the current step and saving a checkpoint (Ctrl-C again to stop now)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupted_run(folder: Path, step: int | None) -> TrainingInterrupted:
    """The :class:`TrainingInterrupted` of a run in ``folder`` whose latest checkpoint holds ``step``."""
    last = Path(folder) / LAST_NAME
    return TrainingInterrupted(step if last.is_file() else None, last if last.is_file() else None)


def run_steps(
    step: Callable[[int], Mapping[str, Any]],
    *,
    start: int,
    steps: int,
    resumed: bool,
    log_every: int,
    save_every: int,
    save: Callable[[int], None],
    metric_log: MetricLog,
    progress: Any,
    out: Path,
) -> None:
    """The step loop every trainer shares: log, save, report progress, and stop cleanly on Ctrl-C.

    ``step(step_index)`` trains one step and returns its metrics. Metrics are logged every ``log_every`` steps and
    checkpoints saved every ``save_every`` steps and at the last one. A first Ctrl-C finishes the current step,
    saves it (unless just saved) and raises :class:`TrainingInterrupted` naming it; a second one stops at once and
    names the last checkpoint saved.
    """
    from synbt_factory.progress import report

    saved = start if resumed else None
    with stop_on_ctrl_c() as stop:
        try:
            for step_index in range(start, steps):
                metrics = step(step_index)
                done = step_index + 1
                if done % log_every == 0 or done == steps:
                    metric_log.append(done, metrics)
                if done % save_every == 0 or done == steps:
                    save(done)
                    saved = done
                report(progress, done, steps, metrics)
                if stop.requested and done < steps:
                    if saved != done:
                        save(done)
                    raise interrupted_run(out, done)
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:
            raise interrupted_run(out, saved) from None
