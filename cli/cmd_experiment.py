"""``synbt experiment evidence``: does synthetic data help? (``experiment table1`` lives in cmd_segment.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli._console import check_writable, console, fail, progress_bar, setup_logging


def experiment_evidence(
    config: Path = typer.Option(Path("configs/evidence_cpu.json"), "--config",
                                help="Experiment config (JSON or TOML); missing keys keep their defaults."),
    out: Path = typer.Option(Path("runs/evidence"), "--out",
                             help="Run folder; a rerun resumes it (finished steps and runs are kept)."),
    device: str | None = typer.Option(None, "--device", help="Override the config's device: auto, cpu or cuda."),
    parallel: int | None = typer.Option(None, "--parallel", min=1,
                                        help="Segmenter runs trained at once (one thread each); default: config."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Train segmenters on real cases only and + SynTumor / + copy-paste / + SynBT, and test whether they help.

    Two real-data sizes, several seeds, the same budget, crops and test cases in every arm; tested on the own
    phantom family (>= 100 cases) and on the external site-B family. Writes evidence.md (tables with 95 % CIs,
    ΔDice against real-only with a paired Wilcoxon test), evidence.json, dice_vs_size.png and the learning
    curve that sets the budget. The CPU config took 123 min on 2 cores (six arms, 60 runs).
    """
    setup_logging(verbose)
    from synbt_factory.config import replace
    from synbt_factory.experiments.evidence import EvidenceError, load_evidence_config, run_evidence

    try:
        cfg = load_evidence_config(config)
        changes = {k: v for k, v in (("device", device), ("parallel_runs", parallel)) if v is not None}
        if changes:
            cfg = replace(cfg, **changes)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        fail(f"--config {config}: {exc}")
    check_writable(out, "--out")
    try:
        result = run_evidence(cfg, out, progress=progress_bar)
    except EvidenceError as exc:
        fail(str(exc))
    console.print(result.files["tables"].read_text())
    console.print("Open these:")
    for name, path in result.files.items():
        console.print(f"  {name}: {path}")
