"""``synbt segment ...``: train, evaluate and score tumor segmenters."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from cli._console import aliased, check_writable, console, fail, name_flags, progress_bar, setup_logging, warn
from cli._presets import AUTO, choose_preset, preset_help, run_plan

__all__ = ["app", "segment_eval", "segment_score", "segment_train"]

app = typer.Typer(
    help="Segmentation: train on real + synthetic cases, evaluate, score predictions.", no_args_is_help=True
)


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def _metrics_table(title: str, rows: list[dict[str, Any]], summary: dict[str, Any], *, mama_mia: bool) -> Any:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("case", style="cyan")
    table.add_column("DSC", justify="right")
    table.add_column("95HD (mm)", justify="right")
    table.add_column("MSD (mm)", justify="right")
    if mama_mia:
        table.add_column("NormHD", justify="right")
    for r in rows:
        cells = [str(r["case_id"]), _fmt(r["dice"], 4), _fmt(r["hd95"], 2), _fmt(r["msd"], 2)]
        if mama_mia:
            cells.append(_fmt(r.get("mama_mia_norm_hd"), 4))
        table.add_row(*cells)
    m = summary["metrics"]
    footer = [
        "mean ± std",
        f"{_fmt(m['dice']['mean'], 4)} ± {_fmt(m['dice']['std'], 4)}",
        f"{_fmt(m['hd95']['mean'], 2)} ± {_fmt(m['hd95']['std'], 2)}",
        f"{_fmt(m['msd']['mean'], 2)} ± {_fmt(m['msd']['std'], 2)}",
    ]
    if mama_mia:
        footer.append(f"{_fmt(m['mama_mia_norm_hd']['mean'], 4)}")
    table.add_section()
    table.add_row(*footer, style="bold")
    return table


# SegTrainConfig's field names (and those of its model/data parts) → the flags that set them
_TRAIN_FLAGS = {
    "name": "--model",
    "preset": "--preset",
    "patch_size": "--crop",
    "model.patch_size": "--crop",
    "crop": "--crop",
    "data.crop": "--crop",
    "mix": "--mix",
    "data.mix": "--mix",
    "synthetic": "--synthetic",
    "onthefly_fraction": "--onthefly-fraction",
    "data.onthefly_fraction": "--onthefly-fraction",
    "onthefly": "--onthefly",
    "samples_per_epoch": "--samples-per-epoch",
    "real": "--data",
    "epochs": "--epochs",
    "max_steps": "--steps",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "val_every_epochs": "--val-every",
    "max_val_cases": "--max-val-cases",
    "seed": "--seed",
    "num_workers": "--workers",
}


def _warn_about_store_kinds(real: str, synthetic: str | None) -> None:
    """A synthetic store as --data (or a prepared one as --synthetic) trains on the wrong cases: say so."""
    from synbt_factory.store.outputs import store_kind_at

    if store_kind_at(real) == "synthetic":
        warn(
            f"--data {real} is a synthetic store (synbt generate); real cases come from a prepared store "
            "(synbt data prepare), and synthetic ones go in --synthetic"
        )
    if synthetic is not None and store_kind_at(synthetic) == "prepared":
        warn(f"--synthetic {synthetic} is a prepared store of real cases; synthetic cases come from synbt generate")


def _crop_that_fits(real: str, *, divisor: int) -> tuple[int, ...]:
    """The default training crop: the paper's, cut to the volumes of the prepared store ``real`` (logged when cut)."""
    from synbt_factory.data.mixing import PAPER_CROP, crop_for_store
    from synbt_factory.store import CaseStore, StoreError

    try:
        size = crop_for_store(CaseStore.open(real), divisor=divisor)
    except (StoreError, OSError, ValueError, TypeError):
        return PAPER_CROP  # the trainer names the store's problem
    if size != PAPER_CROP:
        console.print(
            f"training crop {' '.join(map(str, size))}: the prepared volumes are smaller than the paper's "
            f"{' '.join(map(str, PAPER_CROP))} (--crop sets it)"
        )
    return size


@app.command("train")
def segment_train(
    model: str = typer.Option("unet", "--model", help="Segmenter: unet, dynunet (nnU-Net-style) or swinunetr."),
    data: str | None = typer.Option(
        None, "--data", show_default=False, help="[required] Prepared store of real cases (synbt data prepare)."
    ),
    real: str | None = typer.Option(None, "--real", hidden=True, help="Older name of --data."),
    synthetic: str | None = typer.Option(
        None, "--synthetic", help="Generated store of synthetic cases (synbt generate)."
    ),
    mix: float | None = typer.Option(
        None, "--mix", help="Fraction of training samples drawn from --synthetic (default 0.5 with --synthetic)."
    ),
    onthefly: str | None = typer.Option(
        None, "--onthefly", help="Insert synthetic tumors on the fly into real samples: 'syntumor'."
    ),
    onthefly_fraction: float = typer.Option(
        0.5, "--onthefly-fraction", help="Fraction of real samples given an on-the-fly tumor."
    ),
    out: Path = typer.Option(Path("runs/seg"), "--out", help="Run folder (final.pt, best.pt, last.pt, metrics.jsonl)."),
    patch: int | None = typer.Option(
        None, "--patch", help="Cubic training crop edge in voxels (e.g. 64 for the paper's patch-* rows)."
    ),
    crop: tuple[int, int, int] | None = typer.Option(
        None,
        "--crop",
        help="Training crop X Y Z in voxels (default: the paper's 192 192 128, cut to the prepared volumes' size).",
    ),
    window: tuple[int, int, int] | None = typer.Option(
        None, "--window", help="Validation sliding window X Y Z (default: the crop)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Stop after this many optimizer steps.", min=1),
    epochs: int = typer.Option(300, "--epochs", help="Epochs (the paper trains 300).", min=1),
    samples_per_epoch: int | None = typer.Option(
        None, "--samples-per-epoch", help="Samples per epoch (default: number of real training cases).", min=1
    ),
    batch_size: int = typer.Option(1, "--batch-size", help="Mini-batch size (paper: 1).", min=1),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate (paper: 1e-4)."),
    preset: str = typer.Option(
        AUTO, "--preset", help=preset_help("segment train", "Network size: tiny (tests, CPU), small, paper (GPU).")
    ),
    val_every: int = typer.Option(1, "--val-every", help="Validate and checkpoint every N epochs.", min=1),
    max_val_cases: int | None = typer.Option(None, "--max-val-cases", help="Validate on at most N cases.", min=0),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes.", min=0),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from last.pt."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Run seed (initialisation, crops, augmentation, mixing).", min=0),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Train a tumor segmenter on real cases, optionally mixed with synthetic ones.

    Dice + cross-entropy, Adam, random crops (tumor-centred half of the time), flips, rotations,
    intensity scaling/shifting, a random post-contrast phase; validation Dice on whole volumes
    (sliding window, first post-contrast phase) picks best.pt.
    """
    setup_logging(verbose)
    from synbt_factory.checkpoint import CheckpointError
    from synbt_factory.data.mixing import MixConfig
    from synbt_factory.device import resolve_device
    from synbt_factory.models.segmenters import SegmenterConfig
    from synbt_factory.progress import StepClock
    from synbt_factory.store import StoreError
    from synbt_factory.training.segmentation import SegTrainConfig, train_segmenter

    real = aliased(data, real, "--data", "--real", required=False)
    mix_value = mix if mix is not None else (0.5 if synthetic else 0.0)
    problems = []  # every usage problem in one line
    if real is None:
        problems.append("missing option --data (the prepared store of real cases)")
    if patch is not None and crop is not None:
        problems.append("give either --patch or --crop, not both")
    if onthefly is not None and onthefly != "syntumor":
        problems.append(f"--onthefly must be 'syntumor', got {onthefly!r}")
    if mix_value > 0 and not synthetic:
        problems.append(f"--mix {mix_value} needs --synthetic STORE (a store from synbt generate)")
    if problems:
        fail("; ".join(problems))
    preset = choose_preset("segment train", preset, device)
    if patch is not None:
        size: tuple[int, ...] = (patch, patch, patch)
    elif crop is not None:
        size = tuple(crop)
    else:
        size = _crop_that_fits(real, divisor=32 if model == "swinunetr" else 16)
    try:
        config = SegTrainConfig(
            model=SegmenterConfig(name=model, preset=preset, patch_size=size),  # type: ignore[arg-type]
            data=MixConfig(
                crop=size,  # type: ignore[arg-type]
                mix=mix_value,
                onthefly_fraction=onthefly_fraction if onthefly else 0.0,
                samples_per_epoch=samples_per_epoch,
            ),
            real=real,
            synthetic=synthetic,
            onthefly=onthefly,
            epochs=epochs,
            max_steps=steps,
            batch_size=batch_size,
            lr=lr,
            val_every_epochs=val_every,
            val_window=tuple(window) if window else None,  # type: ignore[arg-type]
            max_val_cases=max_val_cases,
            seed=seed,
            num_workers=workers,
        )
    except ValueError as exc:
        fail(name_flags(str(exc), _TRAIN_FLAGS))
    _warn_about_store_kinds(real, synthetic)
    check_writable(out, "--out")
    try:
        with progress_bar(f"train {model}", total=None) as update:
            # announced by the trainer's first report, which comes before step 1 and knows the total steps
            clock = StepClock(
                run_plan("segment train", f"segment train ({model})", preset, steps or 0, str(resolve_device(device))),
                update,
            )
            result = train_segmenter(config, out, device=device, resume=resume, progress=clock)
    except (StoreError, CheckpointError, FileExistsError, RuntimeError, ValueError) as exc:
        fail(str(exc))
    console.print(
        f"[green]trained {model}[/] for {result.steps} steps ({result.epochs_done} epochs); best validation Dice "
        f"{_fmt(result.best_val_dice, 4)}; checkpoints {result.best_checkpoint} and {result.last_checkpoint}"
    )


@app.command("eval")
def segment_eval(
    ckpt: Path = typer.Option(..., "--ckpt", help="Segmenter checkpoint (best.pt of synbt segment train)."),
    data: str = typer.Option(..., "--data", help="Prepared store to evaluate on."),
    split: str = typer.Option("test", "--split", help="Cases to evaluate: test, val or train."),
    window: tuple[int, int, int] | None = typer.Option(
        None, "--window", help="Sliding window X Y Z (default: the training crop)."
    ),
    overlap: float = typer.Option(0.25, "--overlap", help="Sliding-window overlap fraction."),
    sw_batch_size: int = typer.Option(
        2, "--sw-batch-size", help="Windows per forward pass (>= 2 is faster on CPU).", min=1
    ),
    max_cases: int | None = typer.Option(None, "--max-cases", help="Evaluate at most N cases.", min=1),
    out: Path | None = typer.Option(
        None,
        "--out",
        help=("Folder for metrics.csv, summary.json and predictions (default: eval_SPLIT next to --ckpt)."),
    ),
    save_nifti: bool = typer.Option(
        False, "--save-nifti", help="Write predictions as NIfTI (prepared grid, and original grid with --dataset)."
    ),
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        help="The MAMA-MIA folder --data was prepared from: with --save-nifti, predictions are "
        "also written on each case's original grid.",
    ),
    mama_mia_score: bool = typer.Option(
        False, "--mama-mia-score", help="Also compute the MAMA-MIA challenge score (DSC, HD95/150)."
    ),
    empty_penalty: str = typer.Option(
        "diagonal", "--empty-penalty", help="Distances when one mask is empty: diagonal (image diagonal, mm) or nan."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Segment the cases of a prepared store and report Dice, 95HD and MSD (MedPy, mm) per case."""
    setup_logging(verbose)
    from synbt_factory.checkpoint import CheckpointError
    from synbt_factory.evaluate.segmentation_eval import EvalConfig, evaluate_segmenter
    from synbt_factory.store import StoreError

    if out is None:
        out = ckpt.parent / f"eval_{split}"
    check_writable(out, "--out")
    if dataset is not None and not dataset.is_dir():
        fail(f"--dataset {dataset} is not a folder; give the MAMA-MIA folder --data was prepared from")
    try:
        config = EvalConfig(
            split=split,
            window=tuple(window) if window else None,
            overlap=overlap,  # type: ignore[arg-type]
            sw_batch_size=sw_batch_size,
            empty_penalty=empty_penalty,
            mama_mia=mama_mia_score,
            save_nifti=save_nifti,
            max_cases=max_cases,
        )
        with progress_bar(f"eval {split}", total=None) as update:
            result = evaluate_segmenter(
                ckpt, data, config=config, out_dir=out, device=device, progress=update, dataset=dataset
            )
    except (StoreError, CheckpointError, ValueError) as exc:
        fail(str(exc))
    console.print(
        _metrics_table(
            f"{ckpt} on {data} ({result.summary['split']})", result.rows, result.summary, mama_mia=mama_mia_score
        )
    )
    if mama_mia_score:
        console.print(f"MAMA-MIA performance score: {_fmt(result.summary['mama_mia_score'], 4)}")
    healthy = _healthy_note(result.rows)
    if healthy:
        console.print(f"[yellow]note:[/] {healthy}")
    console.print(f"wrote {result.csv_path} and {result.summary_path}")


def _healthy_note(rows: list[dict[str, Any]]) -> str | None:
    """What the means are made of when some scored cases have no tumor (Dice 0 / HD95 = the image diagonal
    there as soon as anything is predicted, which reads like a failure)."""
    healthy = [r for r in rows if int(r.get("truth_voxels") or 0) == 0]
    if not healthy:
        return None
    false_alarms = sum(int(r.get("pred_voxels") or 0) > 0 for r in healthy)
    return (
        f"{len(healthy)} of {len(rows)} scored case(s) have no tumor: Dice is 1 there when nothing is "
        f"predicted and 0 otherwise, with HD95 and MSD set to the image diagonal ({false_alarms} such false "
        "alarm(s)); the means above include them. Score a split with tumors for segmentation quality"
    )


@app.command("score")
def segment_score(
    pred: Path = typer.Option(..., "--pred", help="Folder of predicted masks <ID>.nii.gz (any model)."),
    truth: Path = typer.Option(
        ..., "--truth", help="Folder of ground-truth masks <ID>.nii.gz (e.g. segmentations/expert)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: {cases: [...], mean: {...}} with distances in mm."),
    mama_mia_score: bool = typer.Option(False, "--mama-mia-score", help="Also compute the MAMA-MIA challenge score."),
    empty_penalty: str = typer.Option(
        "diagonal", "--empty-penalty", help="Distances when one mask is empty: diagonal or nan."
    ),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Score NIfTI predictions against ground truth (files matched by case id, case-insensitively).

    Spacing comes from the truth headers; a prediction in another grid (shape or affine) is an
    error naming the file. Files without a partner are listed.
    """
    setup_logging(verbose)
    from synbt_factory.data.nifti import NiftiReadError
    from synbt_factory.evaluate.score import ScoreError, score_predictions

    try:
        result = score_predictions(pred, truth, empty_penalty=empty_penalty, mama_mia=mama_mia_score)
    except (ScoreError, NiftiReadError, ValueError) as exc:
        fail(str(exc))

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    if as_json:
        keys = ["case_id", "dice", "hd95", "msd"] + (["mama_mia_dsc", "mama_mia_norm_hd"] if mama_mia_score else [])
        payload: dict[str, Any] = {
            "cases": [{k: clean(r[k]) for k in keys} for r in result.rows],
            "mean": {k: clean(v["mean"]) for k, v in result.summary["metrics"].items()},
            "std": {k: clean(v["std"]) for k, v in result.summary["metrics"].items()},
            "unmatched_predictions": result.summary["unmatched_predictions"],
            "unmatched_truths": result.summary["unmatched_truths"],
        }
        if mama_mia_score:
            payload["mama_mia_score"] = clean(result.summary["mama_mia_score"])
        typer.echo(json.dumps(payload, indent=2))
        return
    console.print(_metrics_table(f"{pred} vs {truth}", result.rows, result.summary, mama_mia=mama_mia_score))
    if mama_mia_score:
        console.print(f"MAMA-MIA performance score: {_fmt(result.summary['mama_mia_score'], 4)}")
    for p in result.unmatched_predictions:
        console.print(f"[yellow]no truth for[/] {p}")
    for p in result.unmatched_truths:
        console.print(f"[yellow]no prediction for[/] {p}")
