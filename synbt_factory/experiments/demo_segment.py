"""The demo's segmentation steps: one U-Net per arm (real only, real + a synthetic store), then the table.

Each step is a function of a :class:`~synbt_factory.experiments.demo_run.DemoRun` returning ``(outputs, info)``.
"""

from __future__ import annotations

from synbt_factory.experiments.demo_run import DemoRun, StepResult
from synbt_factory.experiments.demo_table import table_rows, write_eval_table

__all__ = ["step_eval_table", "step_segment"]


def step_segment(run: DemoRun, arm: str) -> StepResult:
    """Train a U-Net on real (+ synthetic) cases and score it on the test split."""
    from synbt_factory.evaluate.segmentation_eval import EvalConfig, evaluate_segmenter
    from synbt_factory.training.segmentation import train_segmenter

    train_cfg = run.segment_config(arm)
    root = f"segment/{arm}"
    with run.progress(f"segmenter ({arm})") as bar:
        trained = train_segmenter(train_cfg, run.path(f"{root}/train"), device=run.device, resume=True, progress=bar)
    with run.progress(f"evaluate ({arm})") as bar:
        ev = evaluate_segmenter(
            trained.best_checkpoint,
            run.prepared,
            config=EvalConfig(split="test"),
            out_dir=run.path(f"{root}/eval"),
            device=run.device,
            progress=bar,
        )
    dice = ev.summary["metrics"]["dice"]
    return (
        {
            "checkpoint": str(trained.best_checkpoint.relative_to(run.out)),
            "metrics": f"{root}/eval/metrics.csv",
            "summary": f"{root}/eval/summary.json",
        },
        {
            "steps": trained.steps,
            "test_cases": ev.summary["n_cases"],
            "dice_mean": dice["mean"],
            "best_val_dice": trained.best_val_dice,
            "headline": f"test Dice {dice['mean']:.3f} ({ev.summary['n_cases']} cases), {trained.steps} steps",
        },
    )


def step_eval_table(run: DemoRun) -> StepResult:
    """The paper's Table 1 layout for the demo arms: Markdown, CSV and JSON."""
    rows = table_rows(run.out, run.config)
    write_eval_table(run.out, rows, run.config, seed=run.seed)
    return (
        {"markdown": "eval_table.md", "csv": "eval_table.csv", "json": "eval_table.json"},
        {"arms": [r["arm"] for r in rows], "headline": f"{len(rows)} arms"},
    )
