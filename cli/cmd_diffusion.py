"""``synbt train diffusion`` and ``synbt generate-one``: the mask-conditioned latent diffusion model."""

from __future__ import annotations

from pathlib import Path

import typer

from cli._console import aliased, check_writable, console, fail, name_flags, progress_bar, setup_logging
from cli._presets import AUTO, choose_preset, preset_help, run_plan


def _parse_axes(text: str) -> tuple[int, ...]:
    """'0,2' → (0, 2); '' or 'none' → () (the config's validation names bad axes)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        fail(f"--flip-axes must be image axes like 0,2 (0 = X, 1 = Y, 2 = Z) or none, got {text!r}")


# DiffusionTrainConfig's field names → the flags that set them, for its validation errors
_TRAIN_FLAGS = {"steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "crop": "--crop",
                "mask_loss_weight": "--mask-loss-weight", "flip_axes": "--flip-axes", "latent_scale": "--latent-scale"}


def train_diffusion(
    vqvae: Path = typer.Option(..., "--vqvae", help=(
        "Trained VQ-VAE checkpoint (synbt train vqvae); its encoder and codebook make the latents."
    )),
    data: str = typer.Option(..., "--data", help=(
        "Prepared store (synbt data prepare); its tumor-present training cases are used."
    )),
    out: Path = typer.Option(Path("runs/diffusion"), "--out", help=(
        "Run folder: checkpoints (step_N.pt, last.pt, final.pt), metrics.jsonl/.csv, config.json, latents/."
    )),
    preset: str = typer.Option(AUTO, "--preset", help=preset_help(
        "train diffusion", "tiny: tests, seconds; cpu: the CPU recipe (8 8 8 crops, 2500 steps); small: 20k steps; "
        "paper: DiffTumor-size UNet, 500k steps."
    )),
    steps: int | None = typer.Option(None, "--steps", help="Optimiser steps (default: the preset's; paper 500000)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help=(
        "Latent crops per step (default: the preset's)."
    )),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (paper: 1e-4)."),
    crop: tuple[int, int, int] | None = typer.Option(None, "--crop", help=(
        "Latent crop X Y Z in latent voxels (default: the preset's; paper 48 48 32). Crops smaller than the "
        "latent also show the denoiser tissue without a tumor, which sampling with --guidance needs; on the "
        "phantom (latent 16 16 12) the recipe uses 8 8 8: placed tumors post/pre 1.85 vs 1.79 with whole-latent "
        "crops."
    )),
    mask_loss_weight: float | None = typer.Option(None, "--mask-loss-weight", help=(
        "Extra loss weight on latent cells with tumor (0 = plain MSE)."
    )),
    flip_axes: str | None = typer.Option(None, "--flip-axes", help=(
        "Also train on every case mirrored along these image axes, e.g. 0,2 (left-right and superior-inferior: "
        "four versions per case; paper: none). The mirrored volumes are encoded, so every version is a latent "
        "the VQ-VAE really produces. More tumors for a denoiser trained on a few dozen cases; on the phantom "
        "recipe it helped re-synthesis at real masks a little, not placed tumors."
    )),
    latent_scale: str | None = typer.Option(None, "--latent-scale", help=(
        "Latent normalisation: codebook (the codebook's range to [-1, 1]; default) or std (zero mean, unit "
        "variance over the training latents, as in latent diffusion)."
    )),
    resume: bool = typer.Option(False, "--resume", help=(
        "Continue the run in --out from last.pt (model, EMA, optimiser, step, RNG)."
    )),
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
    from synbt_factory.progress import StepClock
    from synbt_factory.store import StoreError
    from synbt_factory.training.diffusion import diffusion_train_preset, train_diffusion_from_store

    preset = choose_preset("train diffusion", preset, device)
    try:
        model_config, train_config = diffusion_train_preset(preset)
        changes = {k: v for k, v in {"steps": steps, "batch_size": batch_size, "lr": lr,
                                     "mask_loss_weight": mask_loss_weight}.items() if v is not None}
        if crop is not None:
            changes["crop"] = tuple(int(v) for v in crop)
        if flip_axes is not None:
            changes["flip_axes"] = _parse_axes(flip_axes)
        train_config = dataclasses.replace(train_config, **changes)
        if latent_scale is not None:
            model_config = dataclasses.replace(model_config, latent_scale=latent_scale)
        dev = resolve_device(device)
    except (ValueError, RuntimeError) as exc:
        fail(name_flags(str(exc), _TRAIN_FLAGS))
    if not vqvae.is_file():
        fail(f"VQ-VAE checkpoint {vqvae} does not exist; train one with 'synbt train vqvae' or fix --vqvae")
    try:
        check_checkpoint_file(vqvae)
    except CheckpointError as exc:
        fail(f"--vqvae: {exc}")
    check_writable(out, "--out")
    try:
        with progress_bar("diffusion (encode cases, then train)") as update:
            clock = StepClock(run_plan("train diffusion", "train diffusion", preset, train_config.steps, str(dev)),
                              update)
            clock.announce()
            result = train_diffusion_from_store(vqvae, data, out, model_config=model_config, train_config=train_config,
                                                resume=resume, device=dev, seed=seed, progress=clock,
                                                encode_progress=update)
    except FileExistsError as exc:
        fail(f"{exc} (add --resume to continue it)")
    except (CheckpointError, StoreError, FileNotFoundError) as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"{exc}")
    loss = result.metrics.get("loss")
    console.print(f"[green]trained[/] {result.steps} steps → {result.final_checkpoint}"
                  + (f" (last loss {loss:.4f})" if loss is not None else ""))
    console.print(f"try it: synbt generate-one --case {data}::<CASE_ID> --mask MASK.nii.gz --vqvae {vqvae} "
                  f"--diffusion {result.final_checkpoint} --out synthetic.nii.gz")


def generate_one(
    case: str = typer.Option(..., "--case", help=(
        "A prepared case as STORE.zarr::CASE_ID, or a NIfTI folder holding <ID>_0000 (pre) and <ID>_0001 "
        "(post) on the prepared grid (e.g. from 'synbt store export')."
    )),
    mask: Path = typer.Option(..., "--mask", help=(
        "Tumor mask NIfTI on the same grid as the case (shape and affine); nonzero = tumor."
    )),
    vqvae: Path = typer.Option(..., "--vqvae", help="VQ-VAE checkpoint (synbt train vqvae)."),
    diffusion: Path = typer.Option(..., "--diffusion", help="Diffusion checkpoint (synbt train diffusion)."),
    out: Path = typer.Option(..., "--out", help=(
        "Output 4-D NIfTI (X, Y, Z, 2): volume 0 pre-contrast, 1 post-contrast, with the synthetic tumor."
    )),
    sample_steps: int | None = typer.Option(None, "--sample-steps", min=1,
                                            help="DDIM sampling steps (paper: 10).  [default: 10]"),
    steps: int | None = typer.Option(None, "--steps", hidden=True, min=1, help="Older name of --sample-steps."),
    eta: float = typer.Option(1.0, "--eta", help=(
        "DDIM eta: 0 deterministic given the seed's initial noise, 1 DDPM-like (default: keeps more enhancement)."
    )),
    guidance: float = typer.Option(1.0, "--guidance", help=(
        "Mask guidance scale: 1 = the paper's sampler; above 1 pushes the tumor away from what "
        "the denoiser predicts without the mask (classifier-free guidance; twice the denoiser work per step). Needs a "
        "denoiser trained on latent crops smaller than the volume, so that some hold no tumor (the recipe's "
        "--crop 8 8 8). On the phantom recipe 1.5 brings placed tumors' post/pre to that of real ones."
    )),
    mode: str = typer.Option("window", "--mode", help=(
        "window: diffuse and decode a latent window around the mask; whole: the whole latent (paper)."
    )),
    seed: int = typer.Option(0, "--seed", help="Seed of this case's noise (stream 'ddim', case index 0)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Insert one synthetic tumor into one case: latent DDIM inpainting inside --mask, blended into the real image.

    Voxels farther than a margin from the mask (printed at the end) are exactly the input voxels.
    """
    setup_logging(verbose)
    steps = aliased(sample_steps, steps, "--sample-steps", "--steps", required=False) or 10
    import numpy as np
    import torch

    from synbt_factory.checkpoint import CheckpointError, file_sha256
    from synbt_factory.data.nifti import NiftiReadError, read_full
    from synbt_factory.device import resolve_device
    from synbt_factory.rng import torch_generator
    from synbt_factory.store import StoreError
    from synbt_factory.synthesis.sampler import InpaintingSampler, SamplerConfig
    from synbt_factory.training.diffusion import load_diffusion
    from synbt_factory.training.vqvae import load_vqvae

    try:
        config = SamplerConfig(steps=steps, eta=eta, guidance=guidance, mode=mode)
        dev = resolve_device(device)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    try:
        image, affine, label = _read_case(case)
    except (StoreError, NiftiReadError, FileNotFoundError, KeyError, ValueError) as exc:
        fail(str(exc))
    try:
        mask_data, mask_geometry = read_full(mask)
    except (NiftiReadError, FileNotFoundError) as exc:
        fail(f"cannot read --mask {mask}: {exc}")
    if tuple(mask_data.shape[:3]) != tuple(image.shape[1:]) or mask_data.ndim != 3:
        fail(f"mask {mask} has shape {tuple(mask_data.shape)}, case {label} has {tuple(image.shape[1:])}: "
             "the mask must be on the prepared case's grid (resample it first)")
    if not np.allclose(mask_geometry.affine, affine, atol=1e-3):
        fail(f"mask {mask} has another affine than case {label}: the mask must be on the prepared case's grid "
             f"(mask affine {np.round(mask_geometry.affine, 3).tolist()}, case {np.round(affine, 3).tolist()})")
    if not np.any(mask_data > 0):
        fail(f"mask {mask} is empty: nothing to synthesise")
    check_writable(out, "--out", folder=False)
    try:
        autoencoder, _, _ = load_vqvae(vqvae, dev)
        denoiser, _, norm, vq_sha = load_diffusion(diffusion, dev)
    except (CheckpointError, FileNotFoundError) as exc:
        fail(str(exc))
    if vq_sha and vq_sha != file_sha256(vqvae):
        console.print(f"[yellow]warning:[/] {diffusion} was trained on latents of another VQ-VAE checkpoint; fine "
                      "for a volume-stage fine-tune of the same patch model (same encoder, codebook), wrong otherwise")
    try:
        sampler = InpaintingSampler(autoencoder, denoiser, norm, config)
        images = torch.from_numpy(image)[None]
        masks = torch.from_numpy((mask_data > 0).astype(np.uint8))[None]
        with progress_bar("DDIM", total=steps) as update:
            result = sampler.sample(images, masks, [torch_generator(seed, 0, "ddim")], progress=update)
    except (ValueError, RuntimeError) as exc:
        fail(f"sampling failed for case {label}: {exc}")
    _write_4d(out, result[0].float().numpy(), affine)
    t = sampler.last_timings
    console.print(f"[green]wrote[/] {out}: case {label}, {int(masks.sum())} tumor voxels, voxels ≥ {sampler.margin} "
                  f"(Euclidean) from the mask unchanged; encode {t['encode']:.2f}s, denoise {t['denoise']:.2f}s, "
                  f"decode {t['decode']:.2f}s")


def _read_case(case: str):
    """(image (2, X, Y, Z) float32, affine 4×4, label) from ``STORE::CASE_ID`` or a NIfTI folder."""
    import numpy as np

    from synbt_factory.data.nifti import read_full, same_geometry

    if "::" in case:
        from synbt_factory.store import CaseStore

        location, case_id = case.rsplit("::", 1)
        store = CaseStore.open(location)
        if case_id not in store:
            raise KeyError(f"case {case_id!r} is not a complete case of {location} (have e.g. {store.case_ids()[:5]})")
        arrays, attrs = store.read_case(case_id, ("image",))
        return arrays["image"].astype(np.float32), np.asarray(attrs["affine"], dtype=np.float64), case_id
    folder = Path(case)
    if not folder.is_dir():
        raise FileNotFoundError(f"--case {case} is neither STORE::CASE_ID nor a folder")
    files = {}
    for phase in ("0000", "0001"):
        found = sorted(p for p in folder.iterdir() if p.name.lower().endswith((f"_{phase}.nii.gz", f"_{phase}.nii")))
        if len(found) != 1:
            raise FileNotFoundError(f"{folder} must hold exactly one *_{phase}.nii.gz (found {len(found)})")
        files[phase] = found[0]
    pre, g_pre = read_full(files["0000"])
    post, g_post = read_full(files["0001"])
    if not same_geometry(g_pre, g_post):
        raise ValueError(f"{files['0000'].name} and {files['0001'].name} are on different grids")
    return np.stack([pre, post]).astype(np.float32), g_pre.affine, folder.name


def _write_4d(path: Path, image, affine) -> None:
    """(2, X, Y, Z) → 4-D NIfTI (X, Y, Z, 2), written to a temporary name and renamed."""
    import os

    import nibabel as nib
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.moveaxis(image, 0, -1).astype(np.float32), affine)
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=2)
    tmp = path.with_name(path.name + ".partial.nii.gz")
    nib.save(img, str(tmp))
    os.replace(tmp, path)
