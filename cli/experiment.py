"""``synbt experiment ...``: does synthetic data help (``evidence``); the paper's Table 1 (``table1``)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli._console import check_writable, console, fail, progress_bar, setup_logging

__all__ = ["app", "experiment_evidence", "experiment_table1"]

app = typer.Typer(help="Experiments: does synthetic data help (evidence); the paper's Table 1.", no_args_is_help=True)


@app.command("evidence")
def experiment_evidence(
    config: Path = typer.Option(
        Path("configs/evidence_cpu.json"),
        "--config",
        help="Experiment config (JSON or TOML); missing keys keep their defaults.",
    ),
    out: Path = typer.Option(
        Path("runs/evidence"), "--out", help="Run folder; a rerun resumes it (finished steps and runs are kept)."
    ),
    device: str | None = typer.Option(None, "--device", help="Override the config's device: auto, cpu or cuda."),
    parallel: int | None = typer.Option(
        None, "--parallel", min=1, help="Segmenter runs trained at once (one thread each); default: config."
    ),
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


@app.command("table1")
def experiment_table1(
    config: Path = typer.Option(..., "--config", help="Table 1 config (JSON or TOML), e.g. configs/table1_cpu.json."),
    out: Path = typer.Option(..., "--out", help="Output folder (table1.md, table1.json, table1_cases.csv, runs)."),
    device: str | None = typer.Option(None, "--device", help="Override the config's device: auto, cpu or cuda."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Reproduce the paper's Table 1: patch vs volume training, real only vs + SynTumor vs + SynBT.

    Each arm trains a segmenter and evaluates it on the test split; finished arms are reused when
    the command is run again; arms whose synthetic store is missing are skipped with a note.
    """
    setup_logging(verbose)
    from synbt_factory.checkpoint import CheckpointError
    from synbt_factory.config import load_config_file, replace
    from synbt_factory.experiments.table1 import Table1Config, table1
    from synbt_factory.store import StoreError

    try:
        cfg = load_config_file(Table1Config, config)
        if device is not None:
            cfg = replace(cfg, device=device)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        fail(f"{config}: {exc}")
    check_writable(out, "--out")
    try:
        with progress_bar("table1 arms", total=len(cfg.models) * len(cfg.arms)) as update:
            result = table1(cfg, out, progress=update)
    except (StoreError, CheckpointError, RuntimeError, ValueError) as exc:
        fail(str(exc))
    console.print(result.markdown_path.read_text())
    console.print(f"wrote {result.markdown_path}, {result.json_path} and {result.cases_csv_path}")
