"""The demo's data steps: phantom cases, the prepared store, tissue maps in it, and the tumor bank.

Each step is a function of a :class:`~synbt_factory.experiments.demo_run.DemoRun` returning ``(outputs, info)``.
"""

from __future__ import annotations

import logging
from typing import Any

from synbt_factory.experiments.demo_checks import tissue_agreement
from synbt_factory.experiments.demo_run import DemoRun, StepResult

__all__ = ["step_bank", "step_phantom", "step_prepare", "step_tissue"]

log = logging.getLogger(__name__)


def step_phantom(run: DemoRun) -> StepResult:
    """Procedural phantom in MAMA-MIA layout, and a PNG of a few of its cases."""
    from synbt_factory.phantom import write_phantom, write_preview

    cfg = run.config
    with run.progress("phantom cases") as bar:
        ids = write_phantom(
            run.path("phantom"),
            n=cfg.n_cases,
            seed=run.seed,
            size=cfg.phantom_size,
            healthy_fraction=cfg.healthy_fraction,
            workers=cfg.workers,
            progress=bar,
        )
    write_preview(run.path("phantom"), run.path("phantom/phantom_preview.png"), max_cases=cfg.preview_cases)
    return (
        {"dataset": "phantom", "preview": "phantom/phantom_preview.png"},
        {"cases": len(ids), "headline": f"{len(ids)} cases ({cfg.phantom_size})"},
    )


def step_prepare(run: DemoRun) -> StepResult:
    """1 mm RAS crops normalised by the pre-contrast 99.5th percentile (resumable)."""
    from synbt_factory.data.prepare import PrepareConfig, prepare_dataset

    with run.progress("prepare") as bar:
        result = prepare_dataset(
            run.path("phantom"),
            run.prepared,
            config=PrepareConfig(fov_mm=tuple(int(f) for f in run.config.fov_mm)),  # type: ignore[arg-type]
            workers=run.config.workers,
            progress=bar,
        )
    if result.failed:
        listed = "; ".join(f"{k}: {v}" for k, v in sorted(result.failed.items()))
        raise RuntimeError(f"{len(result.failed)} phantom case(s) could not be prepared: {listed}")
    n = len(result.prepared) + len(result.skipped)
    return (
        {"prepared": "prepared.zarr"},
        {"prepared": len(result.prepared), "skipped": len(result.skipped), "headline": f"{n} cases"},
    )


def step_tissue(run: DemoRun) -> StepResult:
    """Tissue model trained on images synthesised from label maps; its FGT/breast maps go into the store."""
    from synbt_factory.tissue.infer import add_tissue_to_store
    from synbt_factory.tissue.train import train_tissue

    cfg = run.tissue_config()
    with run.progress("tissue model") as bar:
        result = train_tissue(run.prepared, run.path("tissue"), cfg, device=run.device, resume=True, progress=bar)
    with run.progress("tissue maps → prepared store") as bar:
        written = add_tissue_to_store(result.best_path, run.prepared, bar, device=run.device)
    fractions = list(written["fgt_fraction"].values())
    info: dict[str, Any] = {
        "steps": result.steps,
        "cases_written": written["written"],
        "cases_skipped": written["skipped"],
    }
    if result.best_val_dice is not None:
        info["val_dice_fgt"] = float(result.best_val_dice)
    if fractions:
        info["mean_fgt_fraction"] = float(sum(fractions) / len(fractions))
    info.update(tissue_agreement(run.prepared))
    if "breast_dice_vs_labels" in info:
        info["headline"] = (
            f"breast Dice {info['breast_dice_vs_labels']:.2f}, "
            f"FGT Dice {info['fgt_dice_vs_labels']:.2f} vs phantom labels"
        )
        if info["breast_dice_vs_labels"] < 0.5:
            log.warning(
                "the tissue model's breast maps agree poorly with the phantom's labels (mean Dice %.2f): "
                "placement reads them, so synthetic tumors may land outside the breast (see previews/compare.png)",
                info["breast_dice_vs_labels"],
            )
    return {"checkpoint": str(result.best_path.relative_to(run.out))}, info


def step_bank(run: DemoRun) -> StepResult:
    """Tumor-mask templates from the training cases' expert masks."""
    from synbt_factory.synthesis.bank import build_bank

    with run.progress("tumor bank") as bar:
        bank = build_bank(run.prepared, run.bank, splits=("train",), overwrite=True, progress=bar)
    return {"bank": "bank.zarr"}, {"templates": len(bank), "headline": f"{len(bank)} templates"}
