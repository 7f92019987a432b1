"""``synbt experiment evidence``: does synthetic data make a segmenter better? A powered, paired experiment.

Design (every arm shares everything but its synthetic store):

* **Two test families.** *Own*: a phantom draw (site A) that no generator has seen, shuffled once into a
  training pool, validation cases (learning curve only) and ≥ 100 test cases. *External*: phantom site B
  (other anatomy, kinetics, acquisition, tumor sizes and shapes, stored orientation), never trained on.
* **Real-data sizes.** Nested: the scarce size's cases are the first cases of the larger size's.
* **Arms.** ``real`` (real cases only) and real + one synthetic store at ``mix``: ``syntumor`` (analytical
  texture), ``copypaste`` (real tumors pasted with their own voxels) and ``synbt`` (latent diffusion). The three
  stores of a size share backgrounds and placed masks (same generation seed), so they differ in texture only.
  Backgrounds, the tumor bank and the tissue model use that size's real training cases only.
* **Seeds and budget.** Every arm trains with the same seeds, the same number of steps (justified by the
  learning curve of the ``budget`` step) and the same network; each run is scored on every test case.
* **Statistics** (:mod:`synbt_factory.evaluate.evidence_stats`): per arm, mean Dice / HD95 / MSD (MedPy) with
  bootstrap CIs over cases and seeds; ΔDice against real-only, paired by seed and case, with a Wilcoxon test.

Run folder::

    evidence_config.json          the pinned configuration (a folder resumes only with the same settings)
    steps/<name>.done.json        finished steps (data, split, stores, tissue, banks, synthetic stores, budget)
    data/                         phantom families, prepared and per-size stores, banks, synthetic stores
    budget/learning_curve.{json,png}
    runs/real<size>/<arm>/seed<k>/ training folder, cases.csv, done.json
    evidence.md / evidence.json / evidence_cases.csv / dice_vs_size.png    the result

Everything resumes: a rerun skips finished steps and runs, and continues unfinished trainings from ``last.pt``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from synbt_factory.config import config_to_dict
from synbt_factory.experiments.case_subsets import CaseSplit
from synbt_factory.experiments.evidence_config import EvidenceConfig, arm_is_guided, arm_spreads_sizes
from synbt_factory.experiments.evidence_data import (
    EvidencePaths,
    case_split,
    make_bank,
    make_family,
    make_real_stores,
    make_synthetic_store,
    make_tissue_maps,
    realism_headline,
)
from synbt_factory.experiments.evidence_runs import RunJob, read_run_rows, run_job
from synbt_factory.experiments.steps import Step, StepRunner, flat_marker
from synbt_factory.experiments.tables import render_realism_table
from synbt_factory.io import atomic_write_json
from synbt_factory.progress import ProgressFn, report

__all__ = ["EvidenceError", "EvidenceResult", "run_evidence", "load_evidence_config", "RESUMABLE_CHANGES"]

log = logging.getLogger(__name__)

#: settings a run folder may change between calls (they add runs, change how fast, or whether generation stops
#: at a failed quality gate; never a written case or a result)
RESUMABLE_CHANGES = frozenset({"parallel_runs", "device", "n_boot", "seeds", "arms", "quality_gate"})

#: settings only some arms use: they may change while the pinned config trains none of those arms
ARM_SETTINGS: dict[str, Callable[[str], bool]] = {"synbt_guidance": arm_is_guided, "size_spread": arm_spreads_sizes}

#: ``factory(description)`` → a context manager yielding one loop's progress callback (or None)
ProgressFactory = Callable[[str], Any]


class EvidenceError(RuntimeError):
    """The experiment could not finish; finished steps and runs are kept, a rerun resumes."""


@dataclass
class EvidenceResult:
    """Where the result lies and how long it took."""

    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    headline: list[str] = field(default_factory=list)


def _pin_config(config: EvidenceConfig, out: Path) -> None:
    path = out / "evidence_config.json"
    current = config_to_dict(config)
    if path.is_file():
        saved = json.loads(path.read_text())
        unused = {k for k, uses in ARM_SETTINGS.items() if not any(uses(a) for a in saved.get("arms", ()))}
        differ = sorted(
            k
            for k in set(saved) | set(current)
            if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES | unused
        )
        if differ:
            raise EvidenceError(
                f"{out} was run with other settings ({', '.join(differ)} differ); "
                "use another --out, or the same config file"
            )
    atomic_write_json(path, current)


def _pool(workers: int) -> ProcessPoolExecutor:
    # spawn: forked children of a process that already ran torch's thread pool can hang
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _run_all(jobs: list[RunJob], workers: int, progress: ProgressFn | None) -> dict[str, dict[str, Any]]:
    """Run every job (workers processes at once, in order); raises :class:`EvidenceError` naming failed runs."""
    done: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    todo = [j for j in jobs if not (Path(j.out) / "done.json").is_file()]
    for job in jobs:
        if job not in todo:
            done[job.out] = json.loads((Path(job.out) / "done.json").read_text())
    report(progress, len(done), len(jobs), {})
    if todo and workers == 1:
        for job in todo:
            try:
                done[job.out] = run_job(job)
            except Exception as exc:  # noqa: BLE001 - every run is tried; failures are named together below
                failed[job.out] = f"{type(exc).__name__}: {exc}"
            report(progress, len(done) + len(failed), len(jobs), {})
    elif todo:
        with _pool(min(workers, len(todo))) as pool:
            futures = {pool.submit(run_job, job): job for job in todo}
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    done[job.out] = fut.result()
                except Exception as exc:  # noqa: BLE001
                    failed[job.out] = f"{type(exc).__name__}: {exc}"
                report(progress, len(done) + len(failed), len(jobs), {})
    if failed:
        first, reason = next(iter(failed.items()))
        raise EvidenceError(
            f"{len(failed)} of {len(jobs)} runs failed, e.g. {first}: {reason}; "
            "finished runs are kept, rerun the same command to retry"
        )
    return done


def _test_sets(paths: EvidencePaths, split_ids: dict[str, list[str]]) -> dict[str, tuple[str, tuple[str, ...]]]:
    from synbt_factory.store import CaseStore

    external = CaseStore.open(paths.prepared("external")).case_ids()
    return {
        "own": (str(paths.prepared("own")), tuple(split_ids["test"])),
        "external": (str(paths.prepared("external")), tuple(external)),
    }


def run_evidence(config: EvidenceConfig, out: str | Path, *, progress: ProgressFactory | None = None) -> EvidenceResult:
    """Run (or resume) the experiment into ``out``; see the module docstring.

    Args:
        config: the experiment.
        out: run folder.
        progress: ``progress(description)`` → context manager yielding a ``(done, total, metrics)`` callback.

    Raises:
        EvidenceError: a step or some runs failed (finished work is kept), or ``out`` holds another config.
    """
    import contextlib

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _pin_config(config, out)
    paths = EvidencePaths(out)
    runner = StepRunner(out, marker=flat_marker, error=_step_error, passthrough=(EvidenceError,))
    t_start = time.perf_counter()

    def bar(description: str) -> Any:
        return progress(description) if progress is not None else contextlib.nullcontext(None)

    runner.run_all(_family_steps(config, paths, bar))
    split_ids = json.loads(paths.split.read_text())
    split = case_split(config, paths)
    if list(split.test) != split_ids["test"]:
        raise EvidenceError(f"{paths.split} does not match the own family's cases; use a new --out")
    markers = {o.name: o.marker for o in runner.run_all(_store_steps(config, paths, split, bar))}
    seg_steps = int(markers["budget"]["chosen_steps"])

    test_sets = _test_sets(paths, split_ids)
    jobs = [
        RunJob(
            config=config,
            size=size,
            arm=arm,
            seed=seed,
            real=str(paths.real(size)),
            synthetic=None if arm == "real" else str(paths.synthetic(arm, size)),
            out=str(paths.run(size, arm, seed)),
            test_sets=test_sets,
            steps=seg_steps,
            val_every=config.budget_every,
        )
        for seed in config.seeds
        for size in config.sizes
        for arm in config.arms
    ]
    t_runs = time.perf_counter()
    todo = sum(not (Path(j.out) / "done.json").is_file() for j in jobs)
    with bar(f"segmenters ({len(jobs)} runs)") as cb:
        run_markers = _run_all(jobs, config.parallel_runs, cb)
    runs_wall = time.perf_counter() - t_runs
    if todo:
        _record_call(paths.out, runs=todo, runs_wall=runs_wall, parallel=config.parallel_runs)

    result = _analyse(config, paths, jobs, run_markers, seg_steps)
    result.seconds["this_call_wall"] = round(time.perf_counter() - t_start, 1)
    result.seconds["runs_wall_this_call"] = round(runs_wall, 1)
    return result


def _step_error(step: str, reason: str) -> EvidenceError:
    """The error of a failed step (the runner chains the step's own exception to it)."""
    return EvidenceError(f"step {step} failed: {reason}; finished steps are kept, rerun the same command to resume")


def _with_progress(
    bar: Callable[[str], Any], description: str, fn: Callable[..., dict[str, Any]], *args: Any
) -> dict[str, Any]:
    """``fn(*args, progress)`` under the progress bar ``description``."""
    with bar(description) as cb:
        return fn(*args, cb)


def _family_steps(config: EvidenceConfig, paths: EvidencePaths, bar: Callable[[str], Any]) -> list[Step]:
    """The phantom families, then the own family's case split (written to ``split.json``)."""

    def split_step() -> dict[str, Any]:
        split = case_split(config, paths)
        atomic_write_json(paths.split, split.to_dict())
        return {"train_pool": len(split.train_pool), "val": len(split.val), "test": len(split.test)}

    steps: list[Step] = [
        (
            f"{family}_family",
            partial(_with_progress, bar, f"{family} phantom family", make_family, config, paths, family),
        )
        for family in ("own", "external")
    ]
    steps.append(("split", split_step))
    return steps


def _store_steps(
    config: EvidenceConfig, paths: EvidencePaths, split: CaseSplit, bar: Callable[[str], Any]
) -> list[Step]:
    """Real stores, the segmenter budget, tissue maps, then per size its bank and synthetic stores with realism."""
    steps: list[Step] = [
        ("real_stores", partial(make_real_stores, config, paths, split)),
        ("budget", partial(_budget, config, paths, bar)),
        ("tissue", partial(_with_progress, bar, "tissue model", make_tissue_maps, config, paths)),
    ]
    steps += [(f"bank_{size}", partial(make_bank, config, paths, size)) for size in config.sizes]
    for size in config.sizes:
        for arm in config.synthetic_arms:
            steps.append(
                (
                    f"synthetic_{arm}_{size}",
                    partial(
                        _with_progress,
                        bar,
                        f"generate {arm} ({size} real cases)",
                        make_synthetic_store,
                        config,
                        paths,
                        arm,
                        size,
                    ),
                )
            )
            steps.append((f"realism_{arm}_{size}", partial(realism_headline, config, paths, arm, size)))
    return steps


def _record_call(out: Path, *, runs: int, runs_wall: float, parallel: int) -> None:
    """Append this call's segmenter phase to ``run_calls.json``: the run's wall time when it took several calls."""
    path = out / "run_calls.json"
    calls = json.loads(path.read_text()) if path.is_file() else []
    calls.append(
        {
            "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "runs_trained": runs,
            "runs_wall_seconds": round(runs_wall, 1),
            "parallel_runs": parallel,
        }
    )
    atomic_write_json(path, calls)


def _budget(config: EvidenceConfig, paths: EvidencePaths, bar: Callable[[str], Any]) -> dict[str, Any]:
    """Learning curves: real-only runs of every size, seed 0, validated every ``budget_every`` steps."""
    from synbt_factory.experiments.learning_curve import choose_budget, plot_learning_curves

    jobs = [
        RunJob(
            config=config,
            size=size,
            arm="real",
            seed=config.seeds[0],
            real=str(paths.real(size)),
            synthetic=None,
            out=str(paths.budget(size)),
            test_sets={},
            steps=config.budget_steps,
            val_every=config.budget_every,
            learning_curve=True,
        )
        for size in config.sizes
    ]
    with bar(f"learning curves ({len(jobs)} runs of {config.budget_steps} steps)") as cb:
        markers = _run_all(jobs, config.parallel_runs, cb)
    curves = {str(job.size): markers[job.out]["val_curve"] for job in jobs}
    suggestion = choose_budget(curves)
    chosen = config.seg_steps if config.seg_steps is not None else suggestion
    data = {
        "curves": curves,
        "suggested_steps": suggestion,
        "chosen_steps": chosen,
        "rule": "latest step where a size's 3-point-mean validation Dice is within 0.02 of its best",
        "seconds_per_run": {str(j.size): markers[j.out]["total_seconds"] for j in jobs},
    }
    atomic_write_json(paths.out / "budget" / "learning_curve.json", data)
    plot_learning_curves(curves, paths.out / "budget" / "learning_curve.png", chosen=chosen)
    if suggestion > chosen:
        log.warning("the learning curve still rises until step %d, beyond seg_steps %d", suggestion, chosen)
    return {"suggested_steps": suggestion, "chosen_steps": chosen}


def _analyse(
    config: EvidenceConfig, paths: EvidencePaths, jobs: list[RunJob], markers: dict[str, dict[str, Any]], seg_steps: int
) -> EvidenceResult:
    """Tables, JSON, figure and per-case CSV of every finished run."""
    import csv
    import io

    import numpy as np

    from synbt_factory.evaluate.evidence_figures import plot_dice_vs_size
    from synbt_factory.evaluate.evidence_stats import evidence_markdown, evidence_summary
    from synbt_factory.experiments.evidence_runs import CASE_COLUMNS
    from synbt_factory.io import atomic_write_text

    rows = [row for job in jobs for row in read_run_rows(Path(job.out) / "cases.csv")]
    rng_seed = [config.split_seed, 0xB007]
    summary = evidence_summary(rows, rng=np.random.default_rng(rng_seed), n_boot=config.n_boot)
    tables = evidence_markdown(summary)

    step_markers = StepRunner(paths.out).finished()
    step_seconds = {name: marker.get("seconds", 0.0) for name, marker in step_markers.items()}
    run_seconds: dict[str, float] = {}
    for job in jobs:
        run_seconds[job.arm] = run_seconds.get(job.arm, 0.0) + float(markers[job.out]["total_seconds"])
    calls_path = paths.out / "run_calls.json"
    calls = json.loads(calls_path.read_text()) if calls_path.is_file() else []
    runs_wall = sum(float(c["runs_wall_seconds"]) for c in calls)
    timing = {
        "whole_run_wall_seconds (steps + segmenter phases)": round(sum(step_seconds.values()) + runs_wall, 1),
        "segmenter_phase_calls": calls,
        "steps_wall_seconds": step_seconds,
        "run_seconds_by_arm (sum over runs, one thread each)": {k: round(v, 1) for k, v in run_seconds.items()},
        "runs": len(jobs),
        "parallel_runs": config.parallel_runs,
        "mean_seconds_per_run": round(sum(run_seconds.values()) / len(jobs), 1),
    }
    realism = {
        name.removeprefix("realism_"): marker for name, marker in step_markers.items() if name.startswith("realism_")
    }
    files = {
        "tables": atomic_write_text(
            paths.out / "evidence.md", _markdown(config, tables, timing, seg_steps, render_realism_table(realism))
        ),
        "summary": atomic_write_json(
            paths.out / "evidence.json",
            {
                "config": config_to_dict(config),
                "seg_steps": seg_steps,
                "summary": summary,
                "realism": realism,
                "timing": timing,
            },
        ),
        "figure": plot_dice_vs_size(summary, paths.out / "dice_vs_size.png", test_sets=("own", "external")),
    }
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CASE_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    files["cases"] = atomic_write_text(paths.out / "evidence_cases.csv", buffer.getvalue())
    files["learning_curve"] = paths.out / "budget" / "learning_curve.png"
    return EvidenceResult(
        out=paths.out,
        files={k: Path(v) for k, v in files.items()},
        seconds={"steps_total": round(sum(step_seconds.values()), 1)},
    )


def _markdown(config: EvidenceConfig, tables: str, timing: dict[str, Any], seg_steps: int, realism: str) -> str:
    lines = [
        f"# Evidence: does synthetic data help? ({config.name})",
        "",
        f"Segmenter {config.seg_model} ({config.seg_preset}), crop {'×'.join(map(str, config.seg_crop))}, "
        f"{seg_steps} steps (the learning curve's budget, budget/learning_curve.png) × batch "
        f"{config.seg_batch_size}, lr {config.seg_lr}, mix {config.mix}; "
        f"seeds {', '.join(map(str, config.seeds))}; real training cases {', '.join(map(str, config.sizes))}; "
        f"{config.n_synthetic} synthetic cases per store.",
        "",
        tables,
        "",
        "## Realism of the synthetic stores (`synbt store report`, demo targets; `data/realism/`)",
        "",
        realism,
        "",
        "## Time",
        "",
        "```",
        json.dumps(timing, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def load_evidence_config(path: str | Path) -> EvidenceConfig:
    """Read a JSON/TOML config file (keys: :class:`EvidenceConfig` fields; missing keys keep defaults)."""
    from synbt_factory.config import load_config_file

    return load_config_file(EvidenceConfig, Path(path))
