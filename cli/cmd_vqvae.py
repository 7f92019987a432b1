"""``synbt train vqvae`` and ``synbt eval vqvae``: the patch-to-volume VQ-VAE (paper Sec. 2.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cli._console import check_writable, console, fail, name_flags, progress_bar, setup_logging
from cli._presets import AUTO, choose_preset, preset_help, run_plan

__all__ = ["train_vqvae", "eval_vqvae"]


def _load_overrides(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model, train) overrides from a JSON/TOML file: ``{"model": {...}, "train": {...}}`` or flat keys."""
    import dataclasses
    import json

    from synbt_factory.models.vqvae import VQVAEConfig
    from synbt_factory.training.vqvae import VQVAETrainConfig

    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.suffix == ".toml":
        import tomllib

        data = tomllib.loads(path.read_text())
    else:
        data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a table/object")
    if set(data) <= {"model", "train"}:
        return dict(data.get("model", {})), dict(data.get("train", {}))
    model_keys = {f.name for f in dataclasses.fields(VQVAEConfig)}
    train_keys = {f.name for f in dataclasses.fields(VQVAETrainConfig)}
    unknown = sorted(set(data) - model_keys - train_keys)
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) {', '.join(unknown)} (neither VQVAEConfig nor VQVAETrainConfig fields)"
        )
    return {k: v for k, v in data.items() if k in model_keys}, {k: v for k, v in data.items() if k in train_keys}


# VQVAETrainConfig's field names → the flags that set them, for its validation errors
_TRAIN_FLAGS = {"steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "stage": "--stage",
                "tumor_patch_fraction": "--tumor-patches", "tumor_loss_weight": "--tumor-loss-weight"}


def train_vqvae(
    data: Path = typer.Option(..., "--data", help="Prepared store (synbt data prepare), e.g. datasets/prepared.zarr."),
    out: Path = typer.Option(
        Path("runs/vqvae"), "--out", help="Run folder for checkpoints, metrics.jsonl/.csv and config.json."
    ),
    stage: str = typer.Option(
        "patch",
        "--stage",
        help="patch: train everything on random patches; volume: fine-tune the decoder on whole volumes.",
    ),
    init: Path | None = typer.Option(
        None, "--init", help="Patch-stage checkpoint to start the volume stage from (required for --stage volume)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Optimiser steps (overrides the preset)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Samples per step (paper: 8 patches / 1 volume)."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (paper: 1e-4 patch / 1e-5 volume)."),
    tumor_patches: float | None = typer.Option(
        None,
        "--tumor-patches",
        min=0.0,
        max=1.0,
        help="Patch stage: fraction of patches drawn to contain a tumor voxel (paper: 0, uniform). Tumors fill "
        "<1 % of an MRI; on a few dozen cases some tumor patches help the codebook learn enhancing tissue.",
    ),
    tumor_loss_weight: float | None = typer.Option(
        None,
        "--tumor-loss-weight",
        min=0.0,
        help="Extra L1 weight on tumor voxels (paper: 0). Whole-volume L1 is dominated by background; without it "
        "the volume stage trades tumor enhancement for background detail.",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="JSON/TOML overrides: {model: {...VQVAEConfig}, train: {...VQVAETrainConfig}} or flat keys; e.g. "
             "{\"train\": {\"perceptual\": true, \"perceptual_weights_path\": \"resnet50.pth\"}} turns on the "
             "perceptual loss with a local weights file.",
    ),
    preset: str = typer.Option(AUTO, "--preset", help=preset_help(
        "train vqvae", "tiny: seconds, tests; cpu: the CPU recipe; small: a laptop; paper: the published sizes."
    )),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from OUT/last.pt (model, optimisers, step, RNG states)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]."),
    seed: int = typer.Option(0, "--seed", help="Run seed (sampling, initialisation)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Train the patch-to-volume VQ-VAE: first --stage patch, then --stage volume --init PATCH/final.pt."""
    setup_logging(verbose)
    from synbt_factory.checkpoint import CheckpointError
    from synbt_factory.config import replace
    from synbt_factory.device import resolve_device
    from synbt_factory.progress import StepClock
    from synbt_factory.store import StoreError
    from synbt_factory.training.vqvae import (
        model_config_from_dict,
        train_config_from_dict,
        train_presets,
    )
    from synbt_factory.training.vqvae import train_vqvae as run_training

    check_writable(out, "--out")
    if stage == "volume" and init is None and not resume:
        fail("--stage volume needs --init <patch-stage final.pt> (from synbt train vqvae --stage patch)")
    preset = choose_preset("train vqvae", preset, device)
    try:
        model_cfg, train_cfg = train_presets(preset, stage)
        model_over: dict[str, Any] = {}
        if config is not None:
            model_over, train_over = _load_overrides(config)
            model_cfg = model_config_from_dict(model_over, model_cfg)
            train_cfg = train_config_from_dict({**train_over, "stage": stage}, train_cfg)
        flags = {
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "tumor_patch_fraction": tumor_patches,
            "tumor_loss_weight": tumor_loss_weight,
        }
        changes = {k: v for k, v in flags.items() if v is not None}
        if changes:
            train_cfg = replace(train_cfg, **changes)
        dev = resolve_device(device)
        with progress_bar(f"VQ-VAE {stage} stage", total=train_cfg.steps) as bar:
            progress = StepClock(run_plan("train vqvae", f"train vqvae ({stage} stage)", preset, train_cfg.steps,
                                          str(dev)), bar)
            progress.announce()
            result = run_training(
                data,
                out,
                train_config=train_cfg,
                init=init,
                resume=resume,
                model_config=model_cfg if stage == "patch" or model_over else None,
                device=dev,
                seed=seed,
                progress=progress,
            )
    except (CheckpointError, StoreError) as exc:
        fail(str(exc))
    except FileExistsError as exc:
        fail(f"{exc} (add --resume to continue it)")
    except KeyError as exc:
        fail(f"KeyError: {exc}")
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(name_flags(f"{exc}", _TRAIN_FLAGS))
    metrics = "  ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
    console.print(f"[green]done[/]: {result.final_checkpoint} after {result.steps} steps  {metrics}")


def eval_vqvae(
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="VQ-VAE checkpoint to evaluate (normally the volume stage's final.pt)."
    ),
    data: Path = typer.Option(..., "--data", help="Prepared store holding the held-out cases."),
    out: Path = typer.Option(
        Path("runs/vqvae_eval"), "--out", help="Folder for vqvae_metrics.json and vqvae_reconstruction.png."
    ),
    patch_ckpt: Path | None = typer.Option(
        None, "--patch-ckpt", help="Patch-stage checkpoint for the patch-only comparison (Fig. 4a middle column)."
    ),
    split: str = typer.Option("test", "--split", help="Cases whose split attribute equals this."),
    cases: str | None = typer.Option(None, "--cases", help="Comma-separated case ids instead of --split."),
    max_cases: int | None = typer.Option(None, "--max-cases", help="Evaluate at most this many cases."),
    tiled: bool = typer.Option(
        False, "--tiled", help="Decode with overlapping latent tiles (bounded memory) instead of one pass."
    ),
    tile: int = typer.Option(16, "--tile", help="Latent tile edge for --tiled."),
    overlap: float = typer.Option(0.5, "--overlap", help="Tile overlap fraction for --tiled."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """PSNR/SSIM per channel, codebook usage and grid-artifact score on held-out cases, plus a Fig. 4a-style PNG."""
    setup_logging(verbose)
    from synbt_factory.checkpoint import CheckpointError
    from synbt_factory.device import resolve_device
    from synbt_factory.evaluate.vqvae_eval import VQVAEEvalConfig, evaluate_vqvae
    from synbt_factory.store import StoreError

    check_writable(out, "--out")
    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        fail(str(exc))
    try:
        cfg = VQVAEEvalConfig(
            splits=(split,),
            case_ids=tuple(c.strip() for c in cases.split(",") if c.strip()) if cases else None,
            max_cases=max_cases,
            tiled=tiled,
            tile=tile,
            overlap=overlap,
        )
        with progress_bar("VQ-VAE evaluation") as progress:
            summary = evaluate_vqvae(ckpt, data, out, patch_ckpt=patch_ckpt, config=cfg, device=dev, progress=progress)
    except (CheckpointError, StoreError) as exc:
        fail(str(exc))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(f"{type(exc).__name__}: {exc}")
    mean = summary["mean"]
    console.print(f"[bold]{summary['num_cases']} case(s)[/], decode {summary['decode']}")
    for key, value in mean.items():
        console.print(f"  {key:28s} {value:.4f}")
    cb = summary["codebook"]
    console.print(f"  codebook perplexity {cb['perplexity']:.1f}, used {cb['used_fraction']:.1%}")
    console.print(f"written: {out / 'vqvae_metrics.json'}, {out / 'vqvae_reconstruction.png'}")
