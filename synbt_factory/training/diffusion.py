"""Training of the mask-conditioned latent diffusion model (paper Sec. 2.2, Eq. 1–2; Sec. 3).

Noise-prediction objective: for a latent crop z₀ with condition Z_cond, draw t ~ U{0..T-1} and
ε ~ N(0, I), form z_t = √ᾱ_t z₀ + √(1-ᾱ_t) ε (Eq. 1 in closed form, MONAI ``DDPMScheduler``) and
minimise ‖ε − ε_θ(z_t, t, Z_cond)‖², optionally weighted ``1 + mask_loss_weight`` on latent
cells with tumor. Adam at lr 1e-4 (paper), EMA of the weights, bf16 autocast on CUDA.

Run folder (:class:`~synbt_factory.training.runs.RunFolder`): ``step_<N>.pt``, ``last.pt``,
``final.pt``, ``metrics.jsonl`` / ``.csv``, ``config.json`` (and ``latents/``). Checkpoints hold the
model, EMA, optimiser, step, RNG states (crop sampler, noise generator), the
:class:`~synbt_factory.models.diffusion.DiffusionConfig`, the train config, the latent
normalisation and the sha256 of the VQ-VAE checkpoint the latents came from, so a resumed run
continues bit-for-bit (it may change only :data:`RESUMABLE_CHANGES`) and
:func:`~synbt_factory.models.diffusion.load_diffusion` rebuilds the model with no guesswork. Weights
are initialised from the run seed's ``diffusion-init`` stream, crops and noise come from its
``diffusion-crops`` / ``diffusion-noise`` generators, and the loop runs under its ``diffusion-loop``
stream (:func:`~synbt_factory.training.runs.seeded_torch`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synbt_factory.checkpoint import file_sha256, load_checkpoint, rebuilding_from
from synbt_factory.config import config_from_dict, config_to_dict
from synbt_factory.data.latents import (
    LatentCase,
    effective_crop,
    latent_statistics,
    precompute_latents,
    renormalise,
    sample_crop_batch,
    select_tumor_cases,
)
from synbt_factory.models.autoencoder import LatentNorm
from synbt_factory.models.diffusion import (
    CHECKPOINT_KIND,
    DiffusionConfig,
    MaskConditionedDenoiser,
    diffusion_preset,
    ema_weights,
    make_train_scheduler,
)
from synbt_factory.models.vqvae import load_vqvae
from synbt_factory.progress import ProgressFn
from synbt_factory.rng import case_generator, torch_generator
from synbt_factory.training.runs import (
    RunFolder,
    TrainResult,
    capture_rng_state,
    make_ema,
    restore_rng_state,
    seeded_torch,
)

__all__ = [
    "DiffusionTrainConfig",
    "diffusion_train_preset",
    "train_diffusion",
    "train_diffusion_from_store",
    "CHECKPOINT_KIND",
    "RESUMABLE_CHANGES",
]

log = logging.getLogger(__name__)

#: Train-config fields a resumed run may change (everything else, and the seed, must match its checkpoint).
RESUMABLE_CHANGES = frozenset({"steps", "save_every", "keep_last", "log_every"})


@dataclass(frozen=True, kw_only=True)
class DiffusionTrainConfig:
    """Hyper-parameters of a diffusion run (defaults: the paper's where it gives them).

    Args:
        steps: optimiser steps (500,000 in the paper).
        batch_size: latent crops per step.
        lr: Adam learning rate (1e-4 in the paper).
        adam_betas: Adam β₁, β₂.
        crop: latent crop (x, y, z) in latent voxels; clipped to the smallest case and rounded down to
            the denoiser's size multiple. (48, 48, 32) = the paper's 192×192×128 field of view.
        tumor_crop_fraction: probability that a crop is placed to contain the tumor (else uniform).
        mask_loss_weight: extra loss weight on latent cells with tumor (0 = plain MSE).
        flip_axes: image axes (X, Y, Z = 0, 1, 2) along which every training case is also encoded mirrored, in
            every combination: (0, 2) gives four versions per case (the paper: none). On a few dozen cases the
            denoiser learns the training tumors' surroundings: re-synthesised at their own masks, training
            tumors kept more enhancement than held-out ones (post/pre 1.99 vs 1.77 on the phantom recipe);
            (0, 2) raised the held-out figure to 1.82 but left placed tumors as they were.
        ema_decay: decay of the weight EMA used for sampling.
        grad_clip: max gradient norm (0 = no clipping).
        bf16: bf16 autocast of the denoiser on CUDA (ignored on CPU).
        save_every: checkpoint every this many steps (and at the end).
        log_every: metric log line every this many steps (and at the end).
        keep_last: ``step_<N>.pt`` files kept.
        splits: prepared-store splits to train on.
        case_ids: exactly these cases instead of ``splits`` (empty = use splits).
    """

    steps: int = 500_000
    batch_size: int = 2
    lr: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    crop: tuple[int, int, int] = (48, 48, 32)
    tumor_crop_fraction: float = 0.8
    mask_loss_weight: float = 0.0
    flip_axes: tuple[int, ...] = ()
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    bf16: bool = True
    save_every: int = 5000
    log_every: int = 50
    keep_last: int = 3
    splits: tuple[str, ...] = ("train",)
    case_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "save_every", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two values in [0, 1), got {self.adam_betas}")
        if len(self.crop) != 3 or any(c < 1 for c in self.crop):
            raise ValueError(f"crop must be three positive latent sizes, got {self.crop}")
        if not 0.0 <= self.tumor_crop_fraction <= 1.0:
            raise ValueError(f"tumor_crop_fraction must be in [0, 1], got {self.tumor_crop_fraction}")
        if self.mask_loss_weight < 0:
            raise ValueError(f"mask_loss_weight must be >= 0, got {self.mask_loss_weight}")
        if len(set(self.flip_axes)) != len(self.flip_axes) or not set(self.flip_axes) <= {0, 1, 2}:
            raise ValueError(f"flip_axes must be distinct image axes 0, 1, 2, got {self.flip_axes}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0, got {self.grad_clip}")
        if not self.splits and not self.case_ids:
            raise ValueError("splits must not be empty when case_ids is empty")


_TRAIN_PRESETS: dict[str, DiffusionTrainConfig] = {
    "tiny": DiffusionTrainConfig(
        steps=300, batch_size=2, crop=(16, 16, 16), ema_decay=0.99, save_every=100, log_every=10
    ),
    "small": DiffusionTrainConfig(steps=20_000, batch_size=4, crop=(32, 32, 32), save_every=1000, log_every=50),
    # the README's CPU recipe: 8×8×8 latent crops (a fifth hold no tumor, where the mask-free condition is learnt)
    "cpu": DiffusionTrainConfig(
        steps=2500, batch_size=16, crop=(8, 8, 8), mask_loss_weight=4.0, save_every=500, log_every=50
    ),
    "paper": DiffusionTrainConfig(),
}


def diffusion_train_preset(name: str) -> tuple[DiffusionConfig, DiffusionTrainConfig]:
    """(model config, train config) of a named preset: ``tiny``, ``cpu`` (the ``small`` denoiser), ``small`` or
    ``paper``."""
    if name not in _TRAIN_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(_TRAIN_PRESETS)}")
    return diffusion_preset("small" if name == "cpu" else name), _TRAIN_PRESETS[name]


# ---------------------------------------------------------------------------- the loop
def _init_model(config: DiffusionConfig, seed: int) -> MaskConditionedDenoiser:
    """A fresh denoiser with weights drawn from the run seed's ``diffusion-init`` stream."""
    with seeded_torch(seed, "diffusion-init"):
        return MaskConditionedDenoiser(config)


def _loss(
    pred: torch.Tensor, noise: torch.Tensor, cond: torch.Tensor, weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted ε-MSE; metrics ``mse`` (plain) and ``mse_tumor`` (tumor cells, when the batch has any)."""
    se = (pred.float() - noise).pow(2)
    tumor = (cond[:, -1:] > 0).to(se.dtype)
    loss = (se * (1.0 + weight * tumor)).mean() if weight > 0 else se.mean()
    metrics = {"mse": float(se.mean().detach())}
    n_tumor = float(tumor.sum())
    if n_tumor > 0:
        metrics["mse_tumor"] = float((se * tumor).sum().detach()) / (n_tumor * se.shape[1])
    return loss, metrics


def train_diffusion(
    latents: Sequence[LatentCase],
    out: Path,
    *,
    model_config: DiffusionConfig,
    train_config: DiffusionTrainConfig,
    latent_norm: LatentNorm,
    vqvae_sha256: str,
    init_weights: dict[str, torch.Tensor] | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    run_info: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train the denoiser on precomputed latents, checkpointing into ``out``.

    Args:
        latents: cases from :func:`~synbt_factory.data.latents.precompute_latents`.
        out: run folder: ``step_<N>.pt``, ``last.pt``, ``final.pt``, ``metrics.jsonl`` / ``.csv``, ``config.json``.
        model_config: architecture (a resumed run must use its checkpoint's; a different one is an error).
        train_config: hyper-parameters.
        latent_norm: normalisation the latents were made with (saved for sampling).
        vqvae_sha256: sha256 of the autoencoder checkpoint (saved; the sampler checks it).
        init_weights: a warm start: denoiser weights (of ``model_config``) to start from instead of a fresh init;
            the EMA starts from them too. Ignored by a resumed run.
        resume: continue from ``out/last.pt`` (model, EMA, optimiser, step, RNG states); starts fresh
            when there is none. Without it an existing ``last.pt`` is an error.
        seed: run seed (weight init, crop sampling, noise and timesteps).
        run_info: extra JSON-ready entries for ``config.json`` and the checkpoint (data path ...).
        progress: ``(done, total, metrics)`` after every step.

    Returns:
        :class:`TrainResult` with the final checkpoint path and last metrics.

    Raises:
        FileExistsError: ``out`` holds a run and ``resume`` is off.
        ResumeConfigError: the resumed run's train config or seed changed outside :data:`RESUMABLE_CHANGES`.
        ValueError: no latents, latents of another channel count, or a resumed run with another model config
            or another VQ-VAE.
    """
    cfg = train_config
    run = RunFolder(out, CHECKPOINT_KIND)
    out = run.path
    device = torch.device(device)
    if not latents:
        raise ValueError("latents must not be empty")
    ckpt = run.open(resume=resume)
    if ckpt is not None:
        saved = config_from_dict(DiffusionConfig, ckpt["config"])
        if saved != model_config:
            raise ValueError(f"{run.last} was trained with another model config; resume with the same preset")
        if ckpt.get("vqvae_sha256") != vqvae_sha256:
            raise ValueError(
                f"{run.last} was trained on latents of another VQ-VAE checkpoint "
                f"(sha256 {str(ckpt.get('vqvae_sha256'))[:12]}…, now {vqvae_sha256[:12]}…)"
            )
        run.check_resume(
            {**ckpt.get("train_config", {}), "seed": ckpt.get("seed")},
            {**config_to_dict(cfg), "seed": seed},
            allowed=RESUMABLE_CHANGES,
        )
    channels = {int(c.z0.shape[0]) for c in latents}
    if channels != {model_config.latent_channels}:
        raise ValueError(f"latents have {sorted(channels)} channels, the model expects {model_config.latent_channels}")
    crop = effective_crop(latents, cfg.crop, model_config.spatial_divisor)

    model = _init_model(model_config, seed)
    if init_weights is not None and ckpt is None:
        model.load_state_dict(init_weights)
    model.to(device)
    ema = make_ema(model, cfg.ema_decay)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.adam_betas)
    scheduler = make_train_scheduler(model_config)
    rng = case_generator(seed, 0, "diffusion-crops")
    noise_gen = torch_generator(seed, 0, "diffusion-noise")
    use_bf16 = cfg.bf16 and device.type == "cuda"
    info = dict(run_info or {})
    start_step, metrics = 0, {}
    with seeded_torch(seed, "diffusion-loop", device):
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            ema.load_state_dict(ckpt["ema"])
            optimizer.load_state_dict(ckpt["optimizer"])
            restore_rng_state(ckpt["rng"], {"crops": rng})
            noise_gen.set_state(ckpt["noise_generator"])
            start_step, metrics = int(ckpt["step"]), dict(ckpt.get("metrics", {}))
            log.info("resuming diffusion training at step %d", start_step)
        metric_log = run.start_log(start_step if ckpt is not None else None)
        run.write_config(
            {
                "model": config_to_dict(model_config),
                "train": config_to_dict(cfg),
                "seed": seed,
                "latent_norm": dataclasses.asdict(latent_norm),
                "vqvae_sha256": vqvae_sha256,
                "crop": list(crop),
                "case_ids": [c.case_id for c in latents],
                **info,
            }
        )
        log.info("diffusion: %d cases, crop %s, steps %d..%d on %s", len(latents), crop, start_step, cfg.steps, device)

        def payload(step: int) -> dict[str, Any]:
            return {
                "step": step,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": capture_rng_state({"crops": rng}),
                "noise_generator": noise_gen.get_state(),
                "latent_norm": dataclasses.asdict(latent_norm),
                "vqvae_sha256": vqvae_sha256,
                "train_config": config_to_dict(cfg),
                "seed": seed,
                "case_ids": [c.case_id for c in latents],
                "metrics": metrics,
                **{k: v for k, v in info.items() if isinstance(v, (str, int, float))},
            }

        def _train_step(step_index: int) -> dict[str, float]:
            nonlocal metrics
            z0, cond = sample_crop_batch(
                latents, rng, batch_size=cfg.batch_size, crop=crop, tumor_fraction=cfg.tumor_crop_fraction
            )
            timesteps = torch.randint(0, model_config.num_train_timesteps, (cfg.batch_size,), generator=noise_gen)
            noise = torch.randn(z0.shape, generator=noise_gen)
            z0, cond, noise, timesteps = z0.to(device), cond.to(device), noise.to(device), timesteps.to(device)
            z_t = scheduler.add_noise(original_samples=z0, noise=noise, timesteps=timesteps)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                pred = model(z_t, timesteps, cond)
            loss, metrics = _loss(pred, noise, cond, cfg.mask_loss_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            optimizer.step()
            ema.update_parameters(model)
            metrics["loss"] = float(loss.detach())
            return metrics

        model.train()
        return run.train(
            _train_step,
            payload,
            cfg,
            start=start_step,
            resumed=ckpt is not None,
            config=config_to_dict(model_config),
            metric_log=metric_log,
            progress=progress,
            last_metrics=lambda: metrics,
        )


def train_diffusion_from_store(
    vqvae: Path,
    data: Path | str,
    out: Path,
    *,
    model_config: DiffusionConfig,
    train_config: DiffusionTrainConfig,
    init: Path | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: ProgressFn | None = None,
    encode_progress: ProgressFn | None = None,
) -> TrainResult:
    """Encode the tumor-present cases of a prepared store with a trained VQ-VAE, then train.

    Latents are cached in ``out/latents/<case_id>.npz`` (reused by a resumed run). With ``resume``
    and an existing ``out/last.pt`` the model config is taken from that checkpoint.

    Args:
        vqvae: VQ-VAE checkpoint (``synbt train vqvae``); its sha256 goes into every diffusion checkpoint.
        data: prepared store (``synbt data prepare``).
        out: run folder (see :func:`train_diffusion`).
        model_config: architecture of a fresh run (``init``'s architecture replaces it).
        train_config: hyper-parameters.
        init: a warm start: a diffusion checkpoint whose (averaged) weights and architecture the run starts from,
            e.g. the shipped denoiser; it may have been trained on another VQ-VAE's latents.
        resume: continue ``out/last.pt`` (see :func:`train_diffusion`).
        device: torch device.
        seed: run seed.
        progress: ``(done, total, metrics)`` after every training step.
        encode_progress: ``(done, total, {})`` per encoded case.

    Raises:
        FileExistsError: ``out`` holds a run and ``resume`` is off.
        ResumeConfigError: a resumed run's train config or seed changed outside :data:`RESUMABLE_CHANGES`.
    """
    from synbt_factory.store import CaseStore

    run = RunFolder(out, CHECKPOINT_KIND)
    out = run.path
    device = torch.device(device)
    saved_norm = None
    last = run.open(resume=resume)
    if last is not None:  # checked here too, so that a changed config fails before the cases are encoded
        run.check_resume(
            {**last.get("train_config", {}), "seed": last.get("seed")},
            {**config_to_dict(train_config), "seed": seed},
            allowed=RESUMABLE_CHANGES,
        )
        saved = config_from_dict(DiffusionConfig, last["config"])
        if saved != model_config:
            log.warning("resuming %s: the model config comes from its checkpoint, not from the preset given", out)
        model_config, saved_norm = saved, LatentNorm(**last["latent_norm"])
    init_weights = None
    if init is not None and last is None:
        init_ckpt = load_checkpoint(Path(init), kind=CHECKPOINT_KIND)
        with rebuilding_from(init, "denoiser config"):
            init_config = config_from_dict(DiffusionConfig, init_ckpt["config"])
        if init_config != model_config:
            log.info("the architecture comes from the --init checkpoint %s, not from the preset", init)
        model_config = init_config
        state = init_ckpt.get("ema")
        init_weights = ema_weights(state) if state is not None else init_ckpt["model"]
        log.info("diffusion starts from the weights of %s (step %s)", init, init_ckpt.get("step", "?"))
    sha = file_sha256(Path(vqvae))
    autoencoder, norm, _ = load_vqvae(Path(vqvae), device)
    if autoencoder.latent_channels != model_config.latent_channels:
        raise ValueError(
            f"VQ-VAE {vqvae} has {autoencoder.latent_channels} latent channels, "
            f"the diffusion config {model_config.latent_channels}"
        )
    store = CaseStore.open(data)
    case_ids = select_tumor_cases(store, splits=train_config.splits, case_ids=train_config.case_ids or None)
    latents = precompute_latents(
        store,
        case_ids,
        autoencoder,
        norm,
        model_config,
        autoencoder_id=sha,
        device=device,
        cache_dir=out / "latents",
        flip_axes=train_config.flip_axes,
        progress=encode_progress,
    )
    del autoencoder
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if saved_norm is not None:  # a resumed run keeps the normalisation it started with
        target = saved_norm
    elif model_config.latent_scale == "std":
        target = norm.standardised(*latent_statistics(latents))
    else:
        target = norm
    log.info(
        "latent normalisation: shift %.4g, scale %.4g, codebook range %.3g..%.3g",
        target.shift,
        target.scale,
        *target.clip,
    )
    latents, norm = renormalise(latents, norm, target), target
    return train_diffusion(
        latents,
        out,
        model_config=model_config,
        train_config=train_config,
        latent_norm=norm,
        vqvae_sha256=sha,
        init_weights=init_weights,
        resume=resume,
        device=device,
        seed=seed,
        run_info={"data": str(data), "vqvae": str(vqvae), "init": str(init) if init is not None else ""},
        progress=progress,
    )
