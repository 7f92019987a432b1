"""Two-stage training of the patch-to-volume VQ-VAE (paper Sec. 2.1, Fig. 1, Sec. 3).

* ``stage="patch"``: random 64³ patches of prepared cases (pre + a random post-contrast phase),
  the whole VQ-VAE trained with L1 + commitment (EMA codebook) + adversarial (MONAI
  ``PatchDiscriminator``, delayed start) + optional perceptual loss; batch 8, lr 1e-4.
* ``stage="volume"``: from a patch checkpoint, encoder and codebook frozen (no gradients, EMA off),
  whole volumes (or large crops) encoded patch-wise, quantised, decoded in one pass; only the
  decoder is fine-tuned; batch 1, lr 1e-5.

Run folder (:class:`~synbt_factory.training.runs.RunFolder`): ``step_<N>.pt``, ``last.pt``,
``final.pt``, ``metrics.jsonl`` / ``.csv`` and ``config.json``. Checkpoints hold the model config,
stage, latent normalisation, optimisers, discriminator, step and RNG states, so ``resume=True``
continues exactly where an interrupted run stopped; a resumed run may change only
:data:`RESUMABLE_CHANGES`. Weights are initialised from the run seed's ``vqvae-init`` stream and the
loop runs under its ``vqvae-<stage>-loop`` stream (:func:`~synbt_factory.training.runs.seeded_torch`).
:func:`~synbt_factory.models.vqvae.load_vqvae` rebuilds a trained model.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator
from torch import nn

from synbt_factory.checkpoint import load_checkpoint, rebuilding_from
from synbt_factory.config import config_from_dict, config_to_dict
from synbt_factory.data.volumes import PreparedVolumes, sample_patch_batch, sample_volume_batch, select_cases
from synbt_factory.models.quantizer import restart_dead_codes
from synbt_factory.models.vqvae import (
    CHECKPOINT_KIND,
    PatchVolumeVQVAE,
    VQVAEConfig,
    vqvae_preset,
)
from synbt_factory.progress import ProgressFn
from synbt_factory.rng import case_generator, torch_generator
from synbt_factory.store import CaseStore
from synbt_factory.training.runs import (
    RunFolder,
    TrainResult,
    capture_rng_state,
    restore_rng_state,
    seeded_torch,
    to_float_metrics,
)

__all__ = [
    "VQVAETrainConfig",
    "RESUMABLE_CHANGES",
    "train_presets",
    "train_vqvae",
    "build_discriminator",
    "build_perceptual_loss",
    "train_config_from_dict",
    "model_config_from_dict",
    "CHECKPOINT_KIND",
]

log = logging.getLogger(__name__)

STAGES = ("patch", "volume")
#: Train-config fields a resumed run may change (everything else, and the seed, must match its checkpoint).
RESUMABLE_CHANGES = frozenset({"steps", "save_every", "keep_last", "log_every"})
PERCEPTUAL_NETWORKS = ("resnet50",)


@dataclass(frozen=True, kw_only=True)
class VQVAETrainConfig:
    """One training stage of the VQ-VAE (paper values in the ``paper`` preset).

    Args:
        stage: ``"patch"`` (everything trains on random patches) or ``"volume"`` (decoder only, whole volumes).
        steps: total optimiser steps of this stage.
        batch_size: samples per step (paper: 8 patches / 1 volume).
        lr: generator (VQ-VAE) Adam learning rate (paper: 1e-4 / 1e-5).
        disc_lr: discriminator learning rate (``None``: same as ``lr``).
        adam_betas: Adam betas of both optimisers.
        l1_weight: weight of the L1 reconstruction loss.
        quant_weight: weight of MONAI's commitment loss (patch stage; the codebook itself learns by EMA).
        dead_code_threshold: patch stage: codes whose EMA cluster size falls below this are re-seeded
            from the batch's encoder outputs after each step (0 disables; see
            :func:`synbt_factory.models.quantizer.restart_dead_codes`; not in the paper).
        adv_weight: weight of the adversarial generator loss (0.01).
        adv_start_step: first (0-based) step with the adversarial terms (paper: 200,000 in the patch stage).
        adv_criterion: ``"hinge"``, ``"least_squares"`` or ``"bce"`` (MONAI ``PatchAdversarialLoss``).
        disc_channels: first-layer channels of the ``PatchDiscriminator``.
        disc_layers: its strided layers.
        perceptual: add MONAI's ``PerceptualLoss`` (needs ``perceptual_weights_path``; off by default).
        perceptual_weight: its weight (0.001).
        perceptual_network: backbone; ``"resnet50"`` (torchvision weights file, 2.5-D slices per channel).
        perceptual_weights_path: local weights file for the backbone (nothing is downloaded).
        perceptual_slice_ratio: fraction of slices per axis used by the 2.5-D perceptual loss.
        volume_crop: volume stage only: random crop (X, Y, Z) instead of the whole volume (``None``).
        tumor_patch_fraction: patch stage: fraction of patches drawn to contain a tumor voxel (0 = the
            paper's uniform patches; small datasets need some, or no code learns enhancing tissue).
        tumor_loss_weight: extra L1 weight on tumor voxels, either stage (0 = the paper's plain L1). Whole-volume
            L1 is dominated by background, and the volume stage otherwise trades tumor enhancement for it.
        patch_batch: volume stage: patches per encoder call (memory knob).
        grad_clip: max gradient norm for the VQ-VAE parameters (``None``: no clipping).
        save_every: checkpoint every N steps (and at the end).
        keep_last: ``step_<N>.pt`` files kept besides ``last.pt`` / ``final.pt``.
        log_every: metric-log line every N steps.
        splits: ``split`` values of the training cases (prepared stores mark "train" / "test" / null).
        case_ids: explicit training cases instead of ``splits``.
    """

    stage: str = "patch"
    steps: int = 250_000
    batch_size: int = 8
    lr: float = 1e-4
    disc_lr: float | None = None
    adam_betas: tuple[float, float] = (0.9, 0.999)
    l1_weight: float = 1.0
    quant_weight: float = 1.0
    dead_code_threshold: float = 0.01
    adv_weight: float = 0.01
    adv_start_step: int = 200_000
    adv_criterion: str = "hinge"
    disc_channels: int = 32
    disc_layers: int = 3
    perceptual: bool = False
    perceptual_weight: float = 0.001
    perceptual_network: str = "resnet50"
    perceptual_weights_path: str | None = None
    perceptual_slice_ratio: float = 0.25
    volume_crop: tuple[int, int, int] | None = None
    tumor_patch_fraction: float = 0.0
    tumor_loss_weight: float = 0.0
    patch_batch: int = 4
    grad_clip: float | None = None
    save_every: int = 5000
    keep_last: int = 3
    log_every: int = 50
    splits: tuple[str | None, ...] = ("train", None)
    case_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        for name in (
            "steps",
            "batch_size",
            "save_every",
            "keep_last",
            "log_every",
            "patch_batch",
            "disc_channels",
            "disc_layers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "disc_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name in (
            "l1_weight",
            "quant_weight",
            "adv_weight",
            "perceptual_weight",
            "dead_code_threshold",
            "tumor_loss_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.adv_start_step < 0:
            raise ValueError(f"adv_start_step must be >= 0, got {self.adv_start_step}")
        if self.adv_criterion not in ("hinge", "least_squares", "bce"):
            raise ValueError(f"adv_criterion must be 'hinge', 'least_squares' or 'bce', got {self.adv_criterion!r}")
        if self.perceptual_network not in PERCEPTUAL_NETWORKS:
            raise ValueError(
                f"perceptual_network must be one of {PERCEPTUAL_NETWORKS}, got {self.perceptual_network!r}"
            )
        if self.perceptual and not self.perceptual_weights_path:
            raise ValueError(
                "perceptual=True needs perceptual_weights_path: MONAI's PerceptualLoss would download weights, "
                "which synbt never does; pass a local torchvision ResNet-50 state-dict file or leave perceptual off"
            )
        if not 0 < self.perceptual_slice_ratio <= 1:
            raise ValueError(f"perceptual_slice_ratio must be in (0, 1], got {self.perceptual_slice_ratio}")
        if self.volume_crop is not None and (len(self.volume_crop) != 3 or min(self.volume_crop) < 1):
            raise ValueError(f"volume_crop must be three positive ints or None, got {self.volume_crop}")
        if self.stage == "volume" and self.volume_crop is None and self.batch_size != 1:
            raise ValueError("whole-volume training (volume_crop None) needs batch_size 1")
        if not 0.0 <= self.tumor_patch_fraction <= 1.0:
            raise ValueError(f"tumor_patch_fraction must be in [0, 1], got {self.tumor_patch_fraction}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two values in [0, 1), got {self.adam_betas}")


_TRAIN_PRESETS: dict[str, dict[str, VQVAETrainConfig]] = {
    "tiny": {
        "patch": VQVAETrainConfig(
            stage="patch",
            steps=20,
            batch_size=2,
            adv_start_step=10,
            disc_channels=8,
            disc_layers=2,
            save_every=10,
            log_every=1,
        ),
        "volume": VQVAETrainConfig(
            stage="volume",
            steps=10,
            batch_size=1,
            lr=1e-4,
            adv_start_step=0,
            disc_channels=8,
            disc_layers=2,
            volume_crop=(32, 32, 32),
            save_every=5,
            log_every=1,
        ),
    },
    # the README's CPU recipe (tiny phantom): lr 1e-3 and tumor-focused patches so the codebook learns enhancing
    # tissue within 30k steps; the volume stage fine-tunes the decoder on whole volumes with tumor-weighted L1
    "cpu": {
        "patch": VQVAETrainConfig(
            stage="patch",
            steps=30_000,
            batch_size=2,
            lr=1e-3,
            adv_start_step=100_000,
            disc_channels=8,
            disc_layers=2,
            tumor_patch_fraction=0.5,
            save_every=2000,
            log_every=50,
        ),
        "volume": VQVAETrainConfig(
            stage="volume",
            steps=500,
            batch_size=1,
            lr=1e-4,
            adv_weight=0.0,
            adv_start_step=0,
            disc_channels=8,
            disc_layers=2,
            volume_crop=None,
            tumor_loss_weight=300.0,
            save_every=250,
            log_every=25,
        ),
    },
    "small": {
        "patch": VQVAETrainConfig(
            stage="patch", steps=2000, batch_size=4, adv_start_step=1000, disc_channels=16, save_every=500, log_every=10
        ),
        "volume": VQVAETrainConfig(
            stage="volume",
            steps=500,
            batch_size=1,
            lr=1e-5,
            adv_start_step=0,
            disc_channels=16,
            volume_crop=(96, 96, 64),
            save_every=250,
            log_every=10,
        ),
    },
    "paper": {
        "patch": VQVAETrainConfig(stage="patch", steps=250_000, batch_size=8, lr=1e-4, adv_start_step=200_000),
        "volume": VQVAETrainConfig(stage="volume", steps=100_000, batch_size=1, lr=1e-5, adv_start_step=0),
    },
}


def train_presets(name: str, stage: str) -> tuple[VQVAEConfig, VQVAETrainConfig]:
    """Model and training config of a named preset (``tiny``, ``small``, ``paper``) for one stage.

    The paper gives batch sizes, learning rates, the 200k-step discriminator start and 100k volume
    steps; the 250k patch steps and the discriminator size are our choices.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if name not in _TRAIN_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(_TRAIN_PRESETS)}")
    return vqvae_preset(name), _TRAIN_PRESETS[name][stage]


# ---------------------------------------------------------------------------- builders
def build_discriminator(cfg: VQVAETrainConfig, in_channels: int) -> PatchDiscriminator:
    """MONAI ``PatchDiscriminator`` (3-D, BatchNorm, LeakyReLU) on ``in_channels`` images."""
    return PatchDiscriminator(
        spatial_dims=3,
        channels=cfg.disc_channels,
        in_channels=in_channels,
        out_channels=1,
        num_layers_d=cfg.disc_layers,
    )


class _ChannelwisePerceptual(nn.Module):
    """MONAI ``PerceptualLoss`` (2.5-D) applied to each image channel separately and averaged."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = [self.loss(pred[:, c : c + 1].float(), target[:, c : c + 1].float()) for c in range(pred.shape[1])]
        return torch.stack(terms).mean()


def build_perceptual_loss(cfg: VQVAETrainConfig) -> nn.Module | None:
    """MONAI ``PerceptualLoss`` from a local weights file, or ``None`` when ``cfg.perceptual`` is off.

    Raises:
        FileNotFoundError: the weights file does not exist.
        RuntimeError: torchvision (needed by the ResNet-50 backbone) is not installed.
    """
    if not cfg.perceptual:
        return None
    path = Path(str(cfg.perceptual_weights_path))
    if not path.is_file():
        raise FileNotFoundError(f"perceptual weights file {path} does not exist; pass a local ResNet-50 state dict")
    try:
        import torchvision  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "the perceptual loss needs torchvision (pip install torchvision); or leave perceptual off"
        ) from exc
    from monai.losses import PerceptualLoss

    loss = PerceptualLoss(
        spatial_dims=3,
        network_type=cfg.perceptual_network,
        is_fake_3d=True,
        fake_3d_ratio=cfg.perceptual_slice_ratio,
        pretrained=True,
        pretrained_path=str(path),
    )
    return _ChannelwisePerceptual(loss)


def _init_model(config: VQVAEConfig, cfg: VQVAETrainConfig, seed: int) -> tuple[PatchVolumeVQVAE, PatchDiscriminator]:
    """Fresh VQ-VAE and discriminator with weights drawn from the run seed's ``vqvae-init`` stream."""
    with seeded_torch(seed, "vqvae-init"):
        model = PatchVolumeVQVAE(config)
        disc = build_discriminator(cfg, config.in_channels)
    return model, disc


# ---------------------------------------------------------------------------- the loop
def reconstruction_l1(
    recon: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None, tumor_weight: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(plain L1, tumor-weighted L1 or ``None``) of a reconstruction.

    The weighted term is mean((1 + ``tumor_weight``·M) · |x̂ − x|) over every voxel and channel, i.e. the
    plain L1 plus ``tumor_weight`` times the tumor voxels' share; with weight 0 or no mask it is ``None``.

    Args:
        recon, x: (B, C, X, Y, Z).
        mask: (B, X, Y, Z) tumor mask (nonzero = tumor), or ``None``.
    """
    err = (recon.float() - x.float()).abs()
    l1 = err.mean()
    if mask is None or tumor_weight <= 0:
        return l1, None
    weights = 1.0 + tumor_weight * (mask > 0).to(err.dtype)[:, None]
    return l1, (weights * err).mean()


class _Stage:
    """Losses and optimiser steps of one stage (kept small; the loop lives in :func:`train_vqvae`)."""

    def __init__(
        self,
        model: PatchVolumeVQVAE,
        disc: PatchDiscriminator,
        cfg: VQVAETrainConfig,
        perceptual: nn.Module | None,
        restart_generator: torch.Generator,
    ) -> None:
        self.model, self.disc, self.cfg, self.perceptual = model, disc, cfg, perceptual
        self.restart_generator = restart_generator
        self.adv_loss = PatchAdversarialLoss(criterion=cfg.adv_criterion)
        params = (
            model.decoder_parameters() if cfg.stage == "volume" else [p for p in model.parameters() if p.requires_grad]
        )
        self.gen_params = params
        self.opt_g = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.adam_betas)
        self.opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr or cfg.lr, betas=cfg.adam_betas)

    def step(self, x: torch.Tensor, step_index: int, mask: torch.Tensor | None = None) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        model.train()
        self.disc.train()
        metrics: dict[str, Any] = {}
        if cfg.stage == "patch":
            z = model.net.encode(x)
            z_q, q_loss = model.net.quantize(z)
            recon = model.net.decode(z_q)
            metrics["commit"] = q_loss.detach()
            metrics["perplexity"] = float(model.net.quantizer.perplexity)
        else:
            with torch.no_grad():
                z_q = model.quantize(model.encode(x, patch_batch=cfg.patch_batch))
            recon = model.decode(z_q)
            q_loss = recon.new_zeros(())
        l1, weighted = reconstruction_l1(recon, x, mask, cfg.tumor_loss_weight)
        loss = cfg.l1_weight * (weighted if weighted is not None else l1) + cfg.quant_weight * q_loss
        metrics["l1"] = l1.detach()
        if weighted is not None:
            metrics["l1_tumor_weighted"] = weighted.detach()
        if self.perceptual is not None:
            p_loss = self.perceptual(recon, x)
            loss = loss + cfg.perceptual_weight * p_loss
            metrics["perceptual"] = p_loss.detach()
        adv_on = step_index >= cfg.adv_start_step and cfg.adv_weight > 0
        if adv_on:
            logits_fake = self.disc(recon.contiguous().float())[-1]
            g_adv = self.adv_loss(logits_fake, target_is_real=True, for_discriminator=False)
            loss = loss + cfg.adv_weight * g_adv
            metrics["g_adv"] = g_adv.detach()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.gen_params, cfg.grad_clip)
        self.opt_g.step()
        metrics["loss"] = loss.detach()
        if adv_on:
            self.opt_d.zero_grad(set_to_none=True)
            logits_fake = self.disc(recon.detach().contiguous().float())[-1]
            logits_real = self.disc(x.contiguous().float())[-1]
            d_loss = 0.5 * (
                self.adv_loss(logits_fake, target_is_real=False, for_discriminator=True)
                + self.adv_loss(logits_real, target_is_real=True, for_discriminator=True)
            )
            (cfg.adv_weight * d_loss).backward()
            self.opt_d.step()
            metrics["d_loss"] = d_loss.detach()
        if cfg.stage == "patch" and cfg.dead_code_threshold > 0:
            metrics["restarted_codes"] = restart_dead_codes(
                model.net.quantizer.quantizer, z, threshold=cfg.dead_code_threshold, generator=self.restart_generator
            )
        return to_float_metrics(metrics)


def _sample(
    volumes: PreparedVolumes, rng: np.random.Generator, cfg: VQVAETrainConfig, model_cfg: VQVAEConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """(images (B, 2, ...), tumor masks (B, ...) when ``tumor_loss_weight`` > 0 else ``None``)."""
    masks: list[np.ndarray] | None = [] if cfg.tumor_loss_weight > 0 else None
    if cfg.stage == "patch":
        size = (model_cfg.patch_size,) * 3
        images = sample_patch_batch(
            volumes, rng, batch_size=cfg.batch_size, size=size, tumor_fraction=cfg.tumor_patch_fraction, masks_out=masks
        )
    else:
        images = sample_volume_batch(
            volumes,
            rng,
            batch_size=cfg.batch_size,
            crop=cfg.volume_crop,
            multiple=model_cfg.downsample_factor,
            masks_out=masks,
        )
    return images, (np.stack(masks) if masks is not None else None)


def train_vqvae(
    data: Path | str,
    out: Path,
    *,
    train_config: VQVAETrainConfig,
    model_config: VQVAEConfig | None = None,
    init: Path | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train one VQ-VAE stage on a prepared store, checkpointing into ``out``.

    Args:
        data: prepared store (``synbt data prepare``).
        out: run folder: ``step_<N>.pt``, ``last.pt``, ``final.pt``, ``metrics.jsonl`` / ``.csv``, ``config.json``.
        train_config: the stage and its hyper-parameters.
        model_config: architecture for a fresh patch stage (ignored when ``init`` or a resumed checkpoint gives one).
        init: the checkpoint whose weights the run starts from, and its architecture. Volume stage: the patch-stage
            checkpoint (required). Patch stage: optional, a warm start (fine-tune a trained VQ-VAE on new data).
        resume: continue from ``out/last.pt`` (model, optimisers, discriminator, step, RNG states);
            starts fresh when there is none. Without it an existing ``last.pt`` is an error.
        device: torch device.
        seed: run seed (data sampling stream, weight init, torch RNG).
        progress: ``(done, total, metrics)`` after every step.

    Returns:
        :class:`TrainResult` with the final checkpoint path and last metrics.

    Raises:
        FileExistsError: ``out`` holds a run and ``resume`` is off.
        ResumeConfigError: the resumed run's stage config or seed changed outside :data:`RESUMABLE_CHANGES`.
        ValueError: a volume stage without ``init``, or a checkpoint of the other stage.
    """
    cfg = train_config
    run = RunFolder(out, CHECKPOINT_KIND)
    out = run.path
    device = torch.device(device)
    store = CaseStore.open(data)
    ckpt = run.open(resume=resume)
    if ckpt is not None:
        if ckpt.get("stage") != cfg.stage:
            raise ValueError(f"{run.last} is a {ckpt.get('stage')!r}-stage checkpoint, this run is {cfg.stage!r}")
        run.check_resume(
            {**ckpt.get("train_config", {}), "seed": ckpt.get("seed")},
            {**config_to_dict(cfg), "seed": seed},
            allowed=RESUMABLE_CHANGES,
        )

    # ---- model config and weights
    init_ckpt = None
    given_config = model_config
    if ckpt is not None:
        with rebuilding_from(run.last, "VQ-VAE config"):
            model_config = config_from_dict(VQVAEConfig, ckpt["config"])
    elif init is not None or cfg.stage == "volume":
        if init is None:
            raise ValueError("the volume stage needs init=<patch-stage checkpoint>")
        init_ckpt = load_checkpoint(Path(init), kind=CHECKPOINT_KIND)
        log.info("%s stage starts from the weights of %s (step %s)", cfg.stage, init, init_ckpt.get("step", "?"))
        with rebuilding_from(init, "VQ-VAE config"):
            model_config = config_from_dict(VQVAEConfig, init_ckpt["config"])
    model_config = model_config or VQVAEConfig()
    if given_config is not None and given_config != model_config:
        log.warning(
            "model config given for this run is ignored: the architecture comes from the %s checkpoint",
            "resumed" if ckpt is not None else "init",
        )
    model, disc = _init_model(model_config, cfg, seed)
    if init_ckpt is not None:
        with rebuilding_from(init, "VQ-VAE weights"):
            model.load_state_dict(init_ckpt["model"])
            disc_state = init_ckpt.get("discriminator")
            if disc_state is not None and _same_disc(init_ckpt, cfg):
                disc.load_state_dict(disc_state)
            else:
                log.info("discriminator starts fresh (patch checkpoint has none or a different size)")
    if cfg.stage == "volume":
        model.freeze_encoder_and_codebook()
    model.to(device)
    disc.to(device)
    restart_gen = torch_generator(seed, 0, "vqvae-code-restart", device=device)
    stage = _Stage(model, disc, cfg, build_perceptual_loss(cfg), restart_gen)
    if stage.perceptual is not None:
        stage.perceptual.to(device)

    # ---- data and RNG
    case_ids = select_cases(store, splits=cfg.splits, case_ids=cfg.case_ids)
    volumes = PreparedVolumes(store, case_ids)
    rng = case_generator(seed, 0, f"vqvae-{cfg.stage}-sampler")
    start_step = 0
    metrics: dict[str, float] = {}
    with seeded_torch(seed, f"vqvae-{cfg.stage}-loop", device):
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            disc.load_state_dict(ckpt["discriminator"])
            stage.opt_g.load_state_dict(ckpt["optimizer_g"])
            stage.opt_d.load_state_dict(ckpt["optimizer_d"])
            restore_rng_state(ckpt["rng"], {"sampler": rng})
            restart_gen.set_state(ckpt["restart_generator"])
            start_step = int(ckpt["step"])
            metrics = dict(ckpt.get("metrics", {}))
            log.info("resuming %s stage at step %d", cfg.stage, start_step)
        metric_log = run.start_log(start_step if ckpt is not None else None)
        run.write_config(
            {
                "model": config_to_dict(model_config),
                "train": config_to_dict(cfg),
                "data": str(data),
                "init": str(init) if init else None,
                "seed": seed,
            }
        )
        log.info(
            "VQ-VAE %s stage: %d training cases, steps %d..%d on %s",
            cfg.stage,
            len(case_ids),
            start_step,
            cfg.steps,
            device,
        )

        def payload(step: int) -> dict[str, Any]:
            return {
                "stage": cfg.stage,
                "step": step,
                "model": model.state_dict(),
                "discriminator": disc.state_dict(),
                "optimizer_g": stage.opt_g.state_dict(),
                "optimizer_d": stage.opt_d.state_dict(),
                "rng": capture_rng_state({"sampler": rng}),
                "restart_generator": restart_gen.get_state(),
                "latent_norm": dataclasses.asdict(model.latent_norm()),
                "train_config": config_to_dict(cfg),
                "seed": seed,
                "data": str(data),
                "init": str(init) if init is not None else (ckpt or {}).get("init", ""),
                "case_ids": list(case_ids),
                "metrics": metrics,
            }

        def _train_step(step_index: int) -> dict[str, float]:
            nonlocal metrics
            images, masks = _sample(volumes, rng, cfg, model_config)
            x = torch.from_numpy(images).to(device)
            mask = torch.from_numpy(masks).to(device) if masks is not None else None
            metrics = stage.step(x, step_index, mask)
            return metrics

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


def _same_disc(init_ckpt: dict[str, Any], cfg: VQVAETrainConfig) -> bool:
    other = init_ckpt.get("train_config", {})
    return other.get("disc_channels") == cfg.disc_channels and other.get("disc_layers") == cfg.disc_layers


def train_config_from_dict(data: dict[str, Any], base: VQVAETrainConfig) -> VQVAETrainConfig:
    """``base`` with the entries of ``data`` replaced (validated; unknown keys raise ``ValueError``)."""
    merged = {**config_to_dict(base), **data}
    return config_from_dict(VQVAETrainConfig, merged)


def model_config_from_dict(data: dict[str, Any], base: VQVAEConfig) -> VQVAEConfig:
    """``base`` with the entries of ``data`` replaced (validated; unknown keys raise ``ValueError``)."""
    merged = {**config_to_dict(base), **data}
    return config_from_dict(VQVAEConfig, merged)
