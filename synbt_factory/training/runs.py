"""What every training loop shares: the run folder, seeding, RNG state, metric logs, checkpoints, EMA, Ctrl-C.

The four trainers (``training.vqvae``, ``training.diffusion``, ``training.segmentation``,
``tissue.train``) follow one convention, kept here:

* **run folder** (:class:`RunFolder`): ``last.pt`` (the resume point: model, optimiser, step, RNG
  states), ``final.pt`` (the model after the last step), ``best.pt`` (best validation score, for the
  trainers that validate), ``step_<N>.pt`` (periodic, for the trainers with ``keep_last``),
  ``metrics.jsonl`` (+ ``.csv``) and ``config.json``;
* **resume** is opt-in: without it an existing ``last.pt`` is a :class:`FileExistsError`; with it a
  configuration that changed outside the trainer's allowed fields is a :class:`ResumeConfigError` naming
  the fields; with nothing to resume the run starts fresh;
* **seeding**: weights are initialised and the loop runs under the global torch RNG seeded from a named
  :mod:`synbt_factory.rng` stream of the run seed inside ``torch.random.fork_rng``
  (:func:`seeded_torch`), so a caller's RNG is never touched; samplers use their own generators;
* **Ctrl-C** (:func:`stop_on_ctrl_c`): the current step finishes, ``last.pt`` is saved, and
  :class:`TrainingInterrupted` names it.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from synbt_factory.checkpoint import load_checkpoint, prune_checkpoints, save_checkpoint
from synbt_factory.io import atomic_write_json
from synbt_factory.rng import case_seed_sequence

__all__ = [
    "BEST_NAME",
    "CONFIG_NAME",
    "FINAL_NAME",
    "LAST_NAME",
    "METRICS_NAME",
    "RunFolder",
    "StepSchedule",
    "ResumeConfigError",
    "changed_fields",
    "stream_seed",
    "seeded_torch",
    "TrainResult",
    "seeded_torch_at",
    "StopRequest",
    "TrainingInterrupted",
    "capture_rng_state",
    "interrupted_run",
    "run_steps",
    "stop_on_ctrl_c",
    "restore_rng_state",
    "MetricLog",
    "save_training_checkpoint",
    "make_ema",
    "to_float_metrics",
]

log = logging.getLogger(__name__)

LAST_NAME = "last.pt"
FINAL_NAME = "final.pt"
BEST_NAME = "best.pt"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What a finished (or already finished) generator run produced (``train vqvae`` stage, ``train diffusion``).

    Args:
        final_checkpoint: the run's ``final.pt``.
        steps: the run's total steps.
        metrics: the last step's metrics.
        resumed_from: the step the run resumed at (``None`` for a fresh run).
    """

    final_checkpoint: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None


# ---------------------------------------------------------------------------- seeding
def stream_seed(seed: int, stream: str) -> int:
    """A 32-bit torch seed for the run's named stream (``case_seed_sequence(seed, 0, stream)``)."""
    return int(case_seed_sequence(seed, 0, stream).generate_state(1)[0])


@contextlib.contextmanager
def seeded_torch(seed: int, stream: str, device: str | torch.device = "cpu") -> Iterator[None]:
    """Run a block under the global torch RNG seeded from the run's named stream; restore it afterwards.

    Module constructors and dropout draw from the global RNG, which takes no generator argument: the block
    runs inside ``torch.random.fork_rng`` (CPU, plus ``device`` when it is a CUDA device) so the caller's
    RNG state is the same after the block as before.

    Args:
        seed: the run seed (>= 0).
        stream: the use, e.g. ``"vqvae-init"`` or ``"tissue-loop"``.
        device: a CUDA device whose RNG state is also forked; CPU forks only the CPU state.
    """
    with seeded_torch_at(stream_seed(seed, stream), device):
        yield


@contextlib.contextmanager
def seeded_torch_at(torch_seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """:func:`seeded_torch` with the torch seed given directly (the global RNG is restored afterwards).

    For the two initialisations whose seed predates the named streams (the tissue model: the run seed itself;
    the segmenter: ``SeedSequence([seed, 0x5E6])``): changing them would change every trained weight, and the
    demo's 120-step tissue model is sensitive to its initial weights.
    """
    device = torch.device(device)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(int(torch_seed))
        yield


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
    torch.set_rng_state(state["torch_cpu"].cpu())  # a checkpoint loaded with map_location="cuda" moved it
    cuda_states = state.get("torch_cuda") or []
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
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
        self.path = Path(path)  # its folder is created by the first write, not here

    def append(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log ``metrics`` (tensors and numbers, stored as floats) at ``step``."""
        self.append_record({"step": int(step), **to_float_metrics(metrics)})

    def append_record(self, record: Mapping[str, Any]) -> None:
        """Log one JSON-ready record as it is (event logs: ``{"event": "val", "step": N, ...}``); it needs ``step``.

        Raises:
            KeyError: ``record`` has no ``step``.
        """
        if "step" not in record:
            raise KeyError(f"a metric record needs a 'step' entry, got {sorted(record)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record)) + "\n")

    def records(self) -> list[dict[str, Any]]:
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
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


# ---------------------------------------------------------------------------- run folder
class ResumeConfigError(ValueError):
    """A run cannot resume because its configuration changed in fields that must stay the same.

    Args:
        path: the checkpoint the run would resume from.
        changed: dotted names of the fields that changed.
        allowed: the fields that may change between a run and its continuation.
    """

    def __init__(self, path: Path, changed: Sequence[str], allowed: Iterable[str]) -> None:
        self.path = Path(path)
        self.changed = tuple(changed)
        self.allowed = tuple(sorted(allowed))
        may = f" (only {', '.join(self.allowed)} may change)" if self.allowed else ""
        super().__init__(
            f"cannot resume {self.path}: the configuration changed in {', '.join(self.changed)}{may}; "
            "rerun with its settings or choose another output folder"
        )


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_fields(saved: Mapping[str, Any], current: Mapping[str, Any], *, allowed: Iterable[str] = ()) -> list[str]:
    """Sorted dotted names of the entries that differ between two (nested) config dicts, outside ``allowed``.

    An allowed name also covers every entry below it (``"post"`` allows ``"post.margin_mm"``); tuples and lists
    compare equal when their items do, and a missing entry equals ``None`` (a checkpoint written before a field
    with a ``None`` default existed still resumes).
    """
    allowed = frozenset(allowed)
    a, b = _flatten(saved), _flatten(current)

    def free(name: str) -> bool:
        parts = name.split(".")
        return any(".".join(parts[:i]) in allowed for i in range(1, len(parts) + 1))

    def same(x: Any, y: Any) -> bool:
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            return len(x) == len(y) and all(same(u, v) for u, v in zip(x, y, strict=True))
        return bool(x == y)

    return sorted(k for k in set(a) | set(b) if not free(k) and not same(a.get(k), b.get(k)))


class RunFolder:
    """The folder of one training run: its file names and the rules every trainer follows for them.

    Layout::

        <path>/last.pt        resume point: model, optimiser, step, RNG states (atomic)
        <path>/final.pt       the model after the last step
        <path>/best.pt        best validation score so far (trainers that validate: tissue, segment)
        <path>/step_<N>.pt    periodic checkpoints, the newest ``keep_last`` kept (vqvae, diffusion)
        <path>/metrics.jsonl  metric log, one JSON object per line with its ``step`` (and ``metrics.csv``)
        <path>/config.json    the run's configuration

    Args:
        path: the run folder (created by :meth:`start_log`, :meth:`write_config` or a save).
        kind: the checkpoint kind (``"vqvae"``, ``"diffusion"``, ``"segmenter"``, ``"tissue"``).
    """

    def __init__(self, path: str | Path, kind: str) -> None:
        self.path = Path(path)
        self.kind = kind
        self.metric_log = MetricLog(self.path / METRICS_NAME)

    # ------------------------------------------------------------------ names
    @property
    def last(self) -> Path:
        """``last.pt``: the resume point."""
        return self.path / LAST_NAME

    @property
    def final(self) -> Path:
        """``final.pt``: the model after the last step."""
        return self.path / FINAL_NAME

    @property
    def best(self) -> Path:
        """``best.pt``: the best validation score so far."""
        return self.path / BEST_NAME

    @property
    def config_path(self) -> Path:
        """``config.json``: the run's configuration."""
        return self.path / CONFIG_NAME

    # ------------------------------------------------------------------ resume
    def has_run(self) -> bool:
        """Whether the folder holds a run (a ``last.pt``)."""
        return self.last.is_file()

    def open(self, *, resume: bool, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The checkpoint to resume from (``last.pt``, loaded with ``weights_only=True``), or ``None`` to start fresh.

        Args:
            resume: continue an existing run; without it an existing ``last.pt`` is an error.
            map_location: where the checkpoint's tensors load.

        Raises:
            FileExistsError: the folder holds a run and ``resume`` is off (a run is never overwritten).
            CheckpointError: ``last.pt`` is damaged or of another kind.
        """
        if not self.has_run():
            if resume:
                log.info("nothing to resume in %s; starting a new run", self.path)
            return None
        if not resume:
            raise FileExistsError(
                f"{self.path} already holds a run ({LAST_NAME}); resume it (--resume) or choose another output folder"
            )
        return load_checkpoint(self.last, kind=self.kind, map_location=map_location)

    def check_resume(self, saved: Mapping[str, Any], current: Mapping[str, Any], *, allowed: Iterable[str]) -> None:
        """Refuse to resume when the configuration changed outside ``allowed``.

        Args:
            saved: the configuration the checkpoint was trained with (nested dicts).
            current: this run's configuration, in the same form.
            allowed: fields that may change between a run and its continuation (``"steps"``, ``"log_every"`` ...).

        Raises:
            ResumeConfigError: naming every changed field.
        """
        allowed = tuple(allowed)
        changed = changed_fields(saved, current, allowed=allowed)
        if changed:
            raise ResumeConfigError(self.last, changed, allowed)

    def start_log(self, resumed_step: int | None) -> MetricLog:
        """Create the folder and its metric log: a resumed run drops the lines logged after ``resumed_step`` (so no
        step is logged twice), a fresh run starts an empty log.

        Returns:
            The run's :class:`MetricLog`.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        dropped = self.metric_log.truncate_after(-1 if resumed_step is None else resumed_step)
        if resumed_step is not None and dropped:
            log.info("dropped %d metric lines logged after step %d", dropped, resumed_step)
        return self.metric_log

    def write_config(self, config: Mapping[str, Any]) -> Path:
        """Write ``config.json`` (indented JSON, atomic)."""
        return atomic_write_json(self.config_path, dict(config))

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: Path, payload: dict[str, Any], *, config: dict[str, Any]) -> Path:
        """Atomically write one checkpoint of this run's kind (``self.last``, ``self.best``, ``self.final`` ...)."""
        return save_checkpoint(path, payload, kind=self.kind, config=config)

    def save_step(
        self, step: int, payload: dict[str, Any], *, config: dict[str, Any], keep_last: int, final: bool = False
    ) -> Path:
        """``step_<N>.pt`` and ``last.pt`` (``final.pt`` too when ``final``), then prune old ``step_<N>.pt`` files.

        Returns:
            The ``step_<N>.pt`` path.
        """
        return save_training_checkpoint(
            self.path, step, payload, kind=self.kind, config=config, keep_last=keep_last, final=final
        )

    def interrupted(self, step: int | None) -> TrainingInterrupted:
        """The :class:`TrainingInterrupted` of this run stopped with its ``last.pt`` at ``step``."""
        return interrupted_run(self.path, step)

    def train(
        self,
        step: Callable[[int], Mapping[str, Any]],
        payload: Callable[[int], dict[str, Any]],
        schedule: StepSchedule,
        *,
        start: int,
        resumed: bool,
        config: dict[str, Any],
        metric_log: MetricLog,
        progress: Any,
        last_metrics: Callable[[], dict[str, float]],
    ) -> TrainResult:
        """Train steps ``start .. schedule.steps`` with :func:`run_steps`, saving ``payload(step)`` as it goes.

        Checkpoints go through :meth:`save_step` (``final.pt`` at the last step). A run resumed at (or past) its
        last step that has no ``final.pt`` yet gets it first, so a run stopped between its last step and its final
        save finishes on the next call. The metric log is written as CSV at the end.

        Args:
            step: trains one step (``step(step_index)``) and returns its metrics.
            payload: the checkpoint dict at a step (weights, optimizer, RNG states, config, metrics).
            schedule: the train config's ``steps``, ``keep_last``, ``log_every`` and ``save_every``.
            start: the first step to train (the resumed step, or 0).
            resumed: whether ``start`` comes from a checkpoint of this run.
            config: the model config embedded in every checkpoint.
            metric_log: where logged steps go.
            progress: the progress callback (:data:`~synbt_factory.progress.ProgressFn`) or ``None``.
            last_metrics: the metrics to report in the result (the last step's, or the checkpoint's).
        """

        def save(at: int) -> None:
            self.save_step(at, payload(at), config=config, keep_last=schedule.keep_last, final=at >= schedule.steps)

        if start >= schedule.steps and not self.final.exists():
            save(start)
        run_steps(
            step,
            start=start,
            steps=schedule.steps,
            resumed=resumed,
            log_every=schedule.log_every,
            save_every=schedule.save_every,
            save=save,
            metric_log=metric_log,
            progress=progress,
            out=self.path,
        )
        metric_log.write_csv()
        return TrainResult(
            final_checkpoint=self.final,
            steps=schedule.steps,
            metrics=last_metrics(),
            resumed_from=start if resumed else None,
        )


class StepSchedule(Protocol):
    """What :meth:`RunFolder.train` reads from a train config."""

    steps: int
    keep_last: int
    log_every: int
    save_every: int


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
