"""``synbt demo``: the whole SynBT method, end to end, on the embedded procedural phantom.

One call runs every stage of the paper on a few phantom cases with small budgets::

    phantom → prepare → VQ-VAE (patch stage, then volume stage) → VQ-VAE evaluation (Fig. 4a-like PNG)
    → latent diffusion → tissue model (+ tissue_pred in the prepared store) → tumor bank
    → synthetic stores (SynTumor and SynBT; SynBT stops at the quality gate when its first batch is far from real)
    → realism report of both stores against the real tumors → PNG previews
    → segmenters trained on real only / real + synthetic (same budget and seed) → test-split table

Every step is a function of a :class:`DemoRun` (:func:`demo_steps` lists them in order) run by the marker-based
:class:`~synbt_factory.experiments.steps.StepRunner`. A step writes its outputs, then a marker
``<out>/steps/<name>.done.json`` (outputs relative to ``<out>``, seconds, finish time); a rerun
skips marked steps up to the first unmarked one, which runs, and so do all steps after it (each
resumes through the library call underneath where it can: prepare, the trainings and generation
continue where they stopped, so redoing a finished later step costs little). ``<out>/demo_config.json``
pins the configuration and seed: a folder cannot be resumed with other settings.

The budgets are far too small for meaningful numbers; the demo shows that every piece runs
and where its artifacts land. For real runs use the individual ``synbt`` commands.

Where the parts live: settings and presets in :mod:`~synbt_factory.experiments.demo_config`, the run folder and
the library settings of each step in :mod:`~synbt_factory.experiments.demo_run`, the steps in ``demo_data``,
``demo_generators``, ``demo_synthetic``, ``demo_previews`` and ``demo_segment``, the evaluation table in
:mod:`~synbt_factory.experiments.demo_table`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from synbt_factory.config import config_to_dict
from synbt_factory.experiments.demo_config import (
    DEMO_PRESETS,
    DEMO_STEPS,
    FROM_SCRATCH,
    PRETRAINED_PHANTOM,
    SEG_ARMS,
    DemoConfig,
    demo_preset,
)
from synbt_factory.experiments.demo_data import step_bank, step_phantom, step_prepare, step_tissue
from synbt_factory.experiments.demo_generators import (
    step_diffusion,
    step_vqvae_eval,
    step_vqvae_patch,
    step_vqvae_volume,
)
from synbt_factory.experiments.demo_previews import step_previews
from synbt_factory.experiments.demo_run import DemoRun, ProgressFactory
from synbt_factory.experiments.demo_segment import step_eval_table, step_segment
from synbt_factory.experiments.demo_synthetic import step_generate_synbt, step_generate_syntumor, step_realism
from synbt_factory.experiments.demo_table import table_rows, write_eval_table
from synbt_factory.experiments.steps import MARKER_VERSION, Step, StepError, StepRunner, outputs_marker
from synbt_factory.io import atomic_write_text

__all__ = [
    "DEMO_PRESETS",
    "DEMO_STEPS",
    "FROM_SCRATCH",
    "MARKER_VERSION",
    "PRETRAINED_PHANTOM",
    "SEG_ARMS",
    "DemoConfig",
    "DemoError",
    "DemoResult",
    "DemoRun",
    "ProgressFactory",
    "StepRecord",
    "demo_preset",
    "demo_steps",
    "read_marker",
    "run_demo",
    "table_rows",
    "write_eval_table",
]

log = logging.getLogger(__name__)


class DemoError(StepError):
    """A demo step failed; ``step`` names it. Finished steps are kept: fix the cause and rerun to resume.

    Args:
        step: the step's name.
        message: what went wrong.
    """

    def __init__(self, step: str, message: str) -> None:
        super().__init__(step, message)


@dataclass(frozen=True)
class StepRecord:
    """One step of a run: its outputs (absolute paths), seconds it took when it ran, whether this call skipped it."""

    name: str
    seconds: float
    skipped: bool
    outputs: dict[str, Path]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoResult:
    """What a demo run produced.

    Attributes:
        out: the run folder.
        steps: every step in order (``skipped`` when an earlier call had finished it).
        table_rows: the evaluation table rows (method, arm, metrics summary).
        wall_seconds: seconds this call took.
    """

    out: Path
    steps: list[StepRecord]
    table_rows: list[dict[str, Any]]
    wall_seconds: float

    def step(self, name: str) -> StepRecord:
        """The record of step ``name`` (``KeyError`` when the run has no such step)."""
        for record in self.steps:
            if record.name == name:
                return record
        raise KeyError(name)

    def artifact(self, step: str, key: str) -> Path:
        """The output ``key`` of step ``step`` (absolute path)."""
        return self.step(step).outputs[key]


def demo_steps(run: DemoRun) -> list[Step]:
    """Every step of ``run``, in execution order (the names of :meth:`DemoConfig.step_names`).

    Args:
        run: the run folder and settings the steps work on.

    Returns:
        ``(name, callable)`` pairs; each callable returns ``(outputs, info)``.
    """
    steps: list[Step] = [
        ("phantom", partial(step_phantom, run)),
        ("prepare", partial(step_prepare, run)),
        ("vqvae_patch", partial(step_vqvae_patch, run)),
        ("vqvae_volume", partial(step_vqvae_volume, run)),
        ("vqvae_eval", partial(step_vqvae_eval, run)),
        ("diffusion", partial(step_diffusion, run)),
        ("tissue", partial(step_tissue, run)),
        ("bank", partial(step_bank, run)),
        ("generate_syntumor", partial(step_generate_syntumor, run)),
        ("generate_synbt", partial(step_generate_synbt, run)),
        ("realism", partial(step_realism, run)),
        ("previews", partial(step_previews, run)),
        *((f"segment_{arm}", partial(step_segment, run, arm)) for arm in run.config.seg_arms),
        ("eval_table", partial(step_eval_table, run)),
    ]
    names = tuple(name for name, _ in steps)
    if names != run.config.step_names():
        raise RuntimeError(f"demo steps {names} differ from DemoConfig.step_names() {run.config.step_names()}")
    return steps


def _runner(out: Path) -> StepRunner:
    """The demo's step runner: ``(outputs, info)`` markers; a step that runs makes every later step run."""
    return StepRunner(out, marker=outputs_marker, rerun_downstream=True, error=DemoError)


def read_marker(out: Path, name: str) -> dict[str, Any] | None:
    """The marker of a finished step, or ``None``.

    Args:
        out: the run folder.
        name: the step.
    """
    return _runner(Path(out)).done(name)


@contextlib.contextmanager
def _no_progress(_: str) -> Iterator[None]:
    yield None


def _check_run_config(out: Path, config: DemoConfig, seed: int) -> None:
    """Pin ``config`` and ``seed`` in ``<out>/demo_config.json``; refuse a folder pinned to others or not a run."""
    path = out / "demo_config.json"
    wanted = {"config": config_to_dict(config), "seed": seed}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != wanted:
            raise ValueError(
                f"{out} holds a demo run with other settings ({path}: preset {saved.get('config', {}).get('name')!r}, "
                f"seed {saved.get('seed')}); rerun with the same --preset/--seed to resume, or choose a new --out"
            )
        return
    if out.exists() and any(p.name != "steps" for p in out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no demo run (no demo_config.json); choose a new or empty --out")
    atomic_write_text(path, json.dumps(wanted, indent=2) + "\n")


def run_demo(
    out: str | Path,
    *,
    preset: str | DemoConfig = "tiny",
    device: str = "auto",
    seed: int = 0,
    progress_factory: ProgressFactory | None = None,
) -> DemoResult:
    """Run (or resume) the whole demo in ``out``; see the module docstring.

    Args:
        out: run folder (created).
        preset: a :data:`DEMO_PRESETS` name or a :class:`DemoConfig`.
        device: ``auto`` | ``cpu`` | ``cuda``.
        seed: run seed (phantom, every training, generation).
        progress_factory: ``factory(description)`` → context manager yielding a progress callback for each loop.

    Returns:
        Every step's record (ran or skipped), the evaluation table's rows and this call's wall seconds.

    Raises:
        ValueError: ``out`` holds another run or unrelated files; bad preset or seed.
        DemoError: a step failed (its marker is not written; rerun to resume from it).
    """
    from synbt_factory.device import resolve_device

    t_start = time.perf_counter()
    config = preset if isinstance(preset, DemoConfig) else demo_preset(preset)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    dev = str(resolve_device(device))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_run_config(out, config, seed)
    run = DemoRun(out, config, device=dev, seed=seed, progress_factory=progress_factory or _no_progress)
    outcomes = _runner(out).run_all(demo_steps(run))
    records = [
        StepRecord(
            name=o.name,
            seconds=o.seconds,
            skipped=o.skipped,
            outputs={k: out / v for k, v in o.marker["outputs"].items()},
            info=o.marker.get("info", {}),
        )
        for o in outcomes
    ]
    rows = table_rows(out, config)
    return DemoResult(out=out, steps=records, table_rows=rows, wall_seconds=time.perf_counter() - t_start)
