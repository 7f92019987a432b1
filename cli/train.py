"""``synbt train ...``: train the generators.

``train vqvae``: the patch-to-volume VQ-VAE (paper Sec. 2.1); ``train diffusion``: the mask-conditioned latent
diffusion model (Sec. 2.2); ``train tissue``: the fibroglandular-tissue model that decides where tumors go
(Sec. 3.1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cli._console import aliased, check_writable, console, fail, name_flags, progress_bar, setup_logging
from cli._presets import AUTO, choose_preset, preset_help, run_plan

__all__ = ["app", "train_diffusion", "train_tissue", "train_vqvae"]

app = typer.Typer(
    help="Train the generators: VQ-VAE (patch, volume), latent diffusion, tissue model.", no_args_is_help=True
)

# VQVAETrainConfig's field names → the flags that set them, for its validation errors
_VQVAE_FLAGS = {
    "steps": "--steps",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "stage": "--stage",
    "tumor_patch_fraction": "--tumor-patches",
    "tumor_loss_weight": "--tumor-loss-weight",
}


@app.command("vqvae")
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
    init: str | None = typer.Option(
        None,
        "--init",
        help="Checkpoint to start from, or pretrained:phantom_tiny for the weights shipped with synbt. Volume stage: "
        "the patch stage's final.pt (required). Patch stage: optional warm start, a short fine-tune instead of "
        "training from random weights (the architecture comes from the checkpoint); give it a lower --lr than the "
        "preset's (e.g. 1e-4), which is meant for random weights and undoes a trained codebook in a few hundred "
        "steps.",
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
        '{"train": {"perceptual": true, "perceptual_weights_path": "resnet50.pth"}} turns on the '
        "perceptual loss with a local weights file.",
    ),
    preset: str = typer.Option(
        AUTO,
        "--preset",
        help=preset_help(
            "train vqvae", "tiny: seconds, tests; cpu: the CPU recipe; small: a laptop; paper: the published sizes."
        ),
    ),
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
    from synbt_factory.config import load_config_sections, replace
    from synbt_factory.device import resolve_device
    from synbt_factory.models.vqvae import VQVAEConfig
    from synbt_factory.pretrained import init_checkpoint
    from synbt_factory.progress import StepClock
    from synbt_factory.store import StoreError
    from synbt_factory.training.vqvae import (
        VQVAETrainConfig,
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
        init_path = init_checkpoint(init, "vqvae_patch") if init is not None else None
    except CheckpointError as exc:
        fail(f"--init: {exc}")
    try:
        model_cfg, train_cfg = train_presets(preset, stage)
        model_over: dict[str, Any] = {}
        if config is not None:
            overrides = load_config_sections(config, {"model": VQVAEConfig, "train": VQVAETrainConfig})
            model_over, train_over = overrides["model"], overrides["train"]
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
            progress = StepClock(
                run_plan("train vqvae", f"train vqvae ({stage} stage)", preset, train_cfg.steps, str(dev)), bar
            )
            progress.announce()
            result = run_training(
                data,
                out,
                train_config=train_cfg,
                init=init_path,
                resume=resume,
                model_config=model_cfg if (stage == "patch" and init_path is None) or model_over else None,
                device=dev,
                seed=seed,
                progress=progress,
            )
    except (CheckpointError, StoreError) as exc:
        fail(str(exc))
    except FileExistsError as exc:
        fail(str(exc))
    except KeyError as exc:
        fail(f"KeyError: {exc}")
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(name_flags(f"{exc}", _VQVAE_FLAGS))
    metrics = "  ".join(f"{k}={v:.4g}" for k, v in result.metrics.items())
    console.print(f"[green]done[/]: {result.final_checkpoint} after {result.steps} steps  {metrics}")


def _parse_axes(text: str) -> tuple[int, ...]:
    """'0,2' → (0, 2); '' or 'none' → () (the config's validation names bad axes)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        fail(f"--flip-axes must be image axes like 0,2 (0 = X, 1 = Y, 2 = Z) or none, got {text!r}")


# DiffusionTrainConfig's field names → the flags that set them, for its validation errors
_DIFFUSION_FLAGS = {
    "steps": "--steps",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "crop": "--crop",
    "mask_loss_weight": "--mask-loss-weight",
    "flip_axes": "--flip-axes",
    "latent_scale": "--latent-scale",
}


@app.command("diffusion")
def train_diffusion(
    vqvae: Path = typer.Option(
        ...,
        "--vqvae",
        help=("Trained VQ-VAE checkpoint (synbt train vqvae); its encoder and codebook make the latents."),
    ),
    data: str = typer.Option(
        ..., "--data", help=("Prepared store (synbt data prepare); its tumor-present training cases are used.")
    ),
    out: Path = typer.Option(
        Path("runs/diffusion"),
        "--out",
        help=("Run folder: checkpoints (step_N.pt, last.pt, final.pt), metrics.jsonl/.csv, config.json, latents/."),
    ),
    preset: str = typer.Option(
        AUTO,
        "--preset",
        help=preset_help(
            "train diffusion",
            "tiny: tests, seconds; cpu: the CPU recipe (8 8 8 crops, 2500 steps); small: 20k steps; "
            "paper: DiffTumor-size UNet, 500k steps.",
        ),
    ),
    steps: int | None = typer.Option(None, "--steps", help="Optimiser steps (default: the preset's; paper 500000)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help=("Latent crops per step (default: the preset's).")
    ),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (paper: 1e-4)."),
    crop: tuple[int, int, int] | None = typer.Option(
        None,
        "--crop",
        help=(
            "Latent crop X Y Z in latent voxels (default: the preset's; paper 48 48 32). Crops smaller than the "
            "latent also show the denoiser tissue without a tumor, which sampling with --guidance needs; on the "
            "phantom (latent 16 16 12) the recipe uses 8 8 8: placed tumors post/pre 1.85 vs 1.79 with whole-latent "
            "crops."
        ),
    ),
    mask_loss_weight: float | None = typer.Option(
        None, "--mask-loss-weight", help=("Extra loss weight on latent cells with tumor (0 = plain MSE).")
    ),
    flip_axes: str | None = typer.Option(
        None,
        "--flip-axes",
        help=(
            "Also train on every case mirrored along these image axes, e.g. 0,2 (left-right and superior-inferior: "
            "four versions per case; paper: none). The mirrored volumes are encoded, so every version is a latent "
            "the VQ-VAE really produces. More tumors for a denoiser trained on a few dozen cases; on the phantom "
            "recipe it helped re-synthesis at real masks a little, not placed tumors."
        ),
    ),
    latent_scale: str | None = typer.Option(
        None,
        "--latent-scale",
        help=(
            "Latent normalisation: codebook (the codebook's range to [-1, 1]; default) or std (zero mean, unit "
            "variance over the training latents, as in latent diffusion)."
        ),
    ),
    init: str | None = typer.Option(
        None,
        "--init",
        help="Warm start: a diffusion checkpoint to start from, or pretrained:phantom_tiny for the denoiser shipped "
        "with synbt; a short fine-tune instead of training from random weights (the architecture comes from the "
        "checkpoint; it may have been trained on another VQ-VAE's latents). Fine-tune at a lower --lr than the "
        "preset's, e.g. 2e-5.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help=("Continue the run in --out from last.pt (model, EMA, optimiser, step, RNG).")
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Run seed: weight init, crop sampling, noise and timesteps."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Train the mask-conditioned latent diffusion model (paper Sec. 2.2).

    Every tumor-present training case is encoded once with the frozen VQ-VAE (target: latent of the
    whole volume; condition: latent of the volume with the dilated tumor removed, plus the mask on the
    latent grid); then the denoiser trains on latent crops (most containing the tumor) with the
    noise-prediction loss. Kill it at any time and rerun with --resume.
    """
    setup_logging(verbose)
    import dataclasses

    from synbt_factory.checkpoint import CheckpointError, check_checkpoint_file
    from synbt_factory.device import resolve_device
    from synbt_factory.pretrained import init_checkpoint
    from synbt_factory.progress import StepClock
    from synbt_factory.store import StoreError
    from synbt_factory.training.diffusion import diffusion_train_preset, train_diffusion_from_store

    preset = choose_preset("train diffusion", preset, device)
    try:
        model_config, train_config = diffusion_train_preset(preset)
        changes = {
            k: v
            for k, v in {
                "steps": steps,
                "batch_size": batch_size,
                "lr": lr,
                "mask_loss_weight": mask_loss_weight,
            }.items()
            if v is not None
        }
        if crop is not None:
            changes["crop"] = tuple(int(v) for v in crop)
        if flip_axes is not None:
            changes["flip_axes"] = _parse_axes(flip_axes)
        train_config = dataclasses.replace(train_config, **changes)
        if latent_scale is not None:
            model_config = dataclasses.replace(model_config, latent_scale=latent_scale)
        dev = resolve_device(device)
    except (ValueError, RuntimeError) as exc:
        fail(name_flags(str(exc), _DIFFUSION_FLAGS))
    if not vqvae.is_file():
        fail(f"VQ-VAE checkpoint {vqvae} does not exist; train one with 'synbt train vqvae' or fix --vqvae")
    try:
        check_checkpoint_file(vqvae)
    except CheckpointError as exc:
        fail(f"--vqvae: {exc}")
    check_writable(out, "--out")
    try:
        init_path = init_checkpoint(init, "diffusion") if init is not None else None
        if init_path is not None and not init_path.is_file():
            fail(f"--init: {init_path} does not exist; pass a diffusion final.pt or pretrained:phantom_tiny")
        if init_path is not None:
            check_checkpoint_file(init_path)
    except CheckpointError as exc:
        fail(f"--init: {exc}")
    try:
        with progress_bar("diffusion (encode cases, then train)") as update:
            clock = StepClock(
                run_plan("train diffusion", "train diffusion", preset, train_config.steps, str(dev)), update
            )
            clock.announce()
            result = train_diffusion_from_store(
                vqvae,
                data,
                out,
                model_config=model_config,
                train_config=train_config,
                init=init_path,
                resume=resume,
                device=dev,
                seed=seed,
                progress=clock,
                encode_progress=update,
            )
    except FileExistsError as exc:
        fail(str(exc))
    except (CheckpointError, StoreError, FileNotFoundError) as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"{exc}")
    loss = result.metrics.get("loss")
    console.print(
        f"[green]trained[/] {result.steps} steps → {result.final_checkpoint}"
        + (f" (last loss {loss:.4f})" if loss is not None else "")
    )
    console.print(
        f"try it: synbt generate-one --case {data}::<CASE_ID> --mask MASK.nii.gz --vqvae {vqvae} "
        f"--diffusion {result.final_checkpoint} --out synthetic.nii.gz"
    )


# TissueTrainConfig's field names → the flags that set them, for its validation errors
_TISSUE_FLAGS = {
    "steps": "--steps",
    "batch_size": "--batch-size",
    "patch": "--patch",
    "roi": "--patch",
    "workers": "--workers",
    "seed": "--seed",
}


@app.command("tissue")
def train_tissue(
    data: str | None = typer.Option(
        None,
        "--data",
        show_default=False,
        help="[required] Prepared store with tissue/breast arrays, or a dataset folder "
        "with tissue/labels/<ID>.nii.gz and tissue/breast/<ID>.nii.gz.",
    ),
    labels: str | None = typer.Option(None, "--labels", hidden=True, help="Older name of --data."),
    out: Path = typer.Option(
        Path("runs/tissue"), "--out", help="Run folder (final.pt, best.pt, last.pt, metrics.jsonl)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (preset default if omitted).", min=1),
    preset: str = typer.Option(
        AUTO,
        "--preset",
        help=preset_help(
            "train tissue", "tiny: 32³ patches, 60 steps; cpu: 32³ patches, 600 steps; small: 96³ patches."
        ),
    ),
    val: str | None = typer.Option(
        None,
        "--val",
        help="Prepared store with real images + tissue labels to validate on (default: held-out cases of --data).",
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Patches per step.", min=1),
    patch: int | None = typer.Option(
        None, "--patch", min=8, help="Training patch and inference window edge (multiple of 8 for 'small')."
    ),
    clusters: str = typer.Option(
        "image", "--clusters", help="k-means features outside the breast: image (real structure) or position."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=0, help="Synthesis worker processes (results do not depend on it)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    seed: int = typer.Option(0, "--seed", help="Run seed.", min=0),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from last.pt."),
    no_resume: bool = typer.Option(
        False, "--no-resume", hidden=True, help="Older flag: a run starts fresh unless --resume is given."
    ),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Train the fibroglandular-tissue model on images synthesised from label maps only
    (SynthSeg idea, paper Sec. 3.1): random Gaussian-mixture contrast per label, k-means
    clusters (2–8) outside the breast, bias field, blur, noise. Real images only shape the
    k-means clusters (--clusters image; their intensities never reach the network) and validate."""
    setup_logging(verbose)
    from synbt_factory.checkpoint import CheckpointError
    from synbt_factory.device import resolve_device
    from synbt_factory.progress import StepClock
    from synbt_factory.store import StoreError
    from synbt_factory.tissue.config import TissueTrainConfig
    from synbt_factory.tissue.train import train_tissue as run

    labels = aliased(data, labels, "--data", "--labels")
    if resume and no_resume:
        fail("give --resume or --no-resume, not both")
    preset = choose_preset("train tissue", preset, device)

    changes: dict = {"seed": seed}
    if steps is not None:
        changes["steps"] = steps
    if batch_size is not None:
        changes["batch_size"] = batch_size
    if workers is not None:
        changes["workers"] = workers
    if patch is not None:
        changes.update(patch=patch, roi=patch)
    try:
        from synbt_factory.tissue.synth import TissueSynthConfig

        changes["synth"] = TissueSynthConfig(cluster_features=clusters)
        config = TissueTrainConfig.preset(preset, **changes)
    except ValueError as exc:
        fail(name_flags(str(exc), _TISSUE_FLAGS))
    check_writable(out, "--out")
    try:
        with progress_bar("tissue", total=config.steps) as update:
            clock = StepClock(
                run_plan("train tissue", "train tissue", preset, config.steps, str(resolve_device(device))), update
            )
            clock.announce()
            result = run(labels, out, config, val=val, device=device, resume=resume, progress=clock)
    except FileExistsError as exc:
        fail(str(exc))
    except (StoreError, CheckpointError, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(f"{exc}")
    best = "n/a" if result.best_val_dice is None else f"{result.best_val_dice:.3f}"
    model = result.final_path or result.best_path
    console.print(
        f"[green]tissue model[/] {model} after {result.steps} steps (best validation: {result.best_path}, "
        f"FGT Dice {best})"
    )
