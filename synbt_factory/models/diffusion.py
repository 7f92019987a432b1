"""Mask-conditioned latent denoiser (SynBT paper Sec. 2.2, Eq. 1–2) and its conditioning.

The denoiser ε_θ(z_t, t, Z_cond) is MONAI's :class:`~monai.networks.nets.DiffusionModelUNet`
on the channel concatenation ``cat(z_t, Z_masked, down(M))``: 8 noisy latent channels, 8
channels of the latent of the volume with the tumor removed, 1 channel of the tumor mask on
the latent grid (17 in, 8 out, as in the DiffTumor UNet the paper cites). Training uses MONAI's
:class:`~monai.networks.schedulers.DDPMScheduler` (T = 1000, Eq. 1), sampling its
:class:`~monai.networks.schedulers.DDIMScheduler` (10 steps).

What "tumor removed" means here (:func:`remove_region`): the tumor mask is dilated by
``mask_dilation`` voxels (Chebyshev, so partial-volume rim voxels go too) and every voxel of
that hole is replaced by a smooth fill of the surrounding tissue (push-pull pyramid
interpolation, :func:`smooth_fill`) — or by zeros with ``fill="zeros"``. The smooth fill is the
default because (i) the VQ-VAE encoder then sees a plausible image instead of an air-valued
cube inside the breast, a pattern it never met in training, so ``Z_masked`` stays in its code
distribution; (ii) the local brightness of the surrounding tissue (fat vs. dense tissue,
enhancement level) reaches the latent cells of the hole, which the tumor's appearance depends
on; (iii) where the hole is, is still stated exactly by the mask channel. The same function
runs at training and at sampling time, so both see identical conditioning.

:func:`load_diffusion` rebuilds a trained denoiser from its checkpoint. This module imports nothing
from ``store/``, ``training/``, ``data/`` or ``cli/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn

from synbt_factory.checkpoint import load_checkpoint, rebuilding_from
from synbt_factory.config import config_from_dict
from synbt_factory.models.autoencoder import LatentAutoencoder, LatentNorm
from synbt_factory.models.cpu_conv import use_cpu_inference_path

__all__ = [
    "ema_weights",
    "CHECKPOINT_KIND",
    "DiffusionConfig",
    "LoadedDiffusion",
    "load_diffusion",
    "DIFFUSION_PRESETS",
    "diffusion_preset",
    "MaskConditionedDenoiser",
    "make_train_scheduler",
    "make_ddim_scheduler",
    "dilate",
    "smooth_fill",
    "remove_region",
    "downsample_mask",
    "encode_normalised",
    "build_condition",
    "null_condition",
    "guided_noise",
]

log = logging.getLogger(__name__)

#: ``kind`` of every diffusion checkpoint (:func:`synbt_factory.checkpoint.save_checkpoint`).
CHECKPOINT_KIND = "diffusion"

_FILLS = ("smooth", "zeros")
_MASK_DOWN = ("mean", "max")
_LATENT_SCALES = ("std", "codebook")
_SCHEDULES = ("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine")


@dataclass(frozen=True, kw_only=True)
class DiffusionConfig:
    """Denoiser architecture, noise schedule and conditioning (all saved in the checkpoint).

    Args:
        latent_channels: channels of the VQ-VAE latent (8).
        channels: UNet feature channels per level; the latent crop must be a multiple of
            ``2 ** (len(channels) - 1)`` per axis (:attr:`spatial_divisor`).
        attention_levels: self-attention per level (use it only at coarse levels: tokens = voxels).
        num_res_blocks: residual blocks per level.
        norm_num_groups: GroupNorm groups; must divide every entry of ``channels``.
        num_head_channels: channels per attention head.
        num_train_timesteps: T of the forward process (Eq. 1), 1000 in the paper.
        schedule: MONAI noise schedule name (``linear_beta`` = DDPM's β_t, Eq. 1).
        beta_start, beta_end: β_1 and β_T of the schedule (ignored by ``cosine``).
        mask_dilation: voxels (image grid, Chebyshev) by which the tumor mask is grown before the
            region is removed from the conditioning volume.
        fill: what replaces the removed region: ``"smooth"`` (push-pull fill of the surroundings)
            or ``"zeros"``.
        mask_down: ``down(M)``: ``"mean"`` (tumor fraction of each latent cell, keeps sub-cell shape)
            or ``"max"`` (1 where any voxel of the cell is tumor).
        latent_scale: how latents are normalised for the diffusion model: ``"codebook"`` (the codebook's
            range → [-1, 1]) or ``"std"`` (zero mean, unit variance over the training latents,
            :meth:`~synbt_factory.models.autoencoder.LatentNorm.standardised`). With ``"codebook"`` the
            latents' spread is about 0.1, so most of the noise schedule carries little signal; yet at CPU
            budgets (2.5k–5k steps on the phantom) ``"std"`` models gave weaker placed tumors (post/pre
            1.29–1.33 vs 1.47–1.59), so ``"codebook"`` stays the default.
    """

    latent_channels: int = 8
    channels: tuple[int, ...] = (24, 48, 96, 192)
    attention_levels: tuple[bool, ...] = (False, False, True, True)
    num_res_blocks: int = 2
    norm_num_groups: int = 8
    num_head_channels: int = 24
    num_train_timesteps: int = 1000
    schedule: str = "linear_beta"
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    mask_dilation: int = 2
    fill: str = "smooth"
    mask_down: str = "mean"
    latent_scale: str = "codebook"

    def __post_init__(self) -> None:
        if self.latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {self.latent_channels}")
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {self.channels}")
        if len(self.attention_levels) != len(self.channels):
            raise ValueError(
                f"attention_levels must have one entry per level ({len(self.channels)}), got {self.attention_levels}"
            )
        if self.norm_num_groups < 1 or any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(
                f"norm_num_groups must divide every channel count {self.channels}, got {self.norm_num_groups}"
            )
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")
        if self.num_head_channels < 1 or any(
            a and c % self.num_head_channels for a, c in zip(self.attention_levels, self.channels, strict=True)
        ):
            raise ValueError(
                f"num_head_channels must divide the channels of every attention level, got {self.num_head_channels}"
            )
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(_SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(
                f"beta_start/beta_end must satisfy 0 < start < end < 1, got {self.beta_start}, {self.beta_end}"
            )
        if self.mask_dilation < 0:
            raise ValueError(f"mask_dilation must be >= 0, got {self.mask_dilation}")
        if self.fill not in _FILLS:
            raise ValueError(f"fill must be one of {', '.join(_FILLS)}, got {self.fill!r}")
        if self.mask_down not in _MASK_DOWN:
            raise ValueError(f"mask_down must be one of {', '.join(_MASK_DOWN)}, got {self.mask_down!r}")
        if self.latent_scale not in _LATENT_SCALES:
            raise ValueError(f"latent_scale must be one of {', '.join(_LATENT_SCALES)}, got {self.latent_scale!r}")

    @property
    def in_channels(self) -> int:
        """Denoiser input channels: z_t (C) + Z_masked (C) + down(M) (1) = 2C + 1 (17)."""
        return 2 * self.latent_channels + 1

    @property
    def cond_channels(self) -> int:
        """Channels of Z_cond = cat(Z_masked, down(M)): C + 1."""
        return self.latent_channels + 1

    @property
    def spatial_divisor(self) -> int:
        """Every latent spatial size fed to the UNet must be a multiple of this."""
        return 2 ** (len(self.channels) - 1)


#: ``tiny``: tests and demos (seconds on CPU). ``small``: a laptop run. ``paper``: the UNet of
#: DiffTumor (Chen et al. 2024, ref. [3] of the paper; its public config: ``dim=24``,
#: ``dim_mults=(1,2,4,8)``, 17 input and 8 output channels), rebuilt from MONAI blocks with
#: self-attention at the two coarsest levels (8×12×12 and 4×6×6 tokens for a 32×48×48 latent).
DIFFUSION_PRESETS: dict[str, DiffusionConfig] = {
    "tiny": DiffusionConfig(
        channels=(8, 16), attention_levels=(False, False), num_res_blocks=1, norm_num_groups=4, num_head_channels=8
    ),
    "small": DiffusionConfig(
        channels=(32, 64, 64),
        attention_levels=(False, False, True),
        num_res_blocks=1,
        norm_num_groups=8,
        num_head_channels=32,
    ),
    "paper": DiffusionConfig(),
}


def diffusion_preset(name: str) -> DiffusionConfig:
    """The named :data:`DIFFUSION_PRESETS` entry."""
    try:
        return DIFFUSION_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown diffusion preset {name!r}; choose one of {', '.join(DIFFUSION_PRESETS)}") from None


class MaskConditionedDenoiser(nn.Module):
    """ε_θ(z_t, t, Z_cond) of Eq. 2: MONAI ``DiffusionModelUNet`` on ``cat(z_t, Z_cond)``.

    Args:
        config: architecture and conditioning.
        flash_attention: use ``torch.nn.functional.scaled_dot_product_attention`` in the attention
            blocks (same weights either way).

    Attributes:
        config: the :class:`DiffusionConfig`.
        unet: the MONAI network (in ``2C + 1`` channels, out ``C``).
        memory_format: layout the UNet's input is put in (``torch.contiguous_format``, or
            ``torch.channels_last_3d`` after :meth:`use_cpu_inference_path`).
    """

    def __init__(self, config: DiffusionConfig, *, flash_attention: bool = True) -> None:
        super().__init__()
        self.config = config
        self.unet = DiffusionModelUNet(
            spatial_dims=3,
            in_channels=config.in_channels,
            out_channels=config.latent_channels,
            num_res_blocks=config.num_res_blocks,
            channels=config.channels,
            attention_levels=config.attention_levels,
            norm_num_groups=config.norm_num_groups,
            num_head_channels=config.num_head_channels,
            use_flash_attention=flash_attention and any(config.attention_levels),
        )
        self.memory_format = torch.contiguous_format

    def use_cpu_inference_path(self) -> MaskConditionedDenoiser:
        """Run every convolution through oneDNN in channels-last layout (:mod:`~synbt_factory.models.cpu_conv`).

        At batch 1 PyTorch's default sends most 3-D convolutions to its slow im2col path; this path made a
        batch-1 call of the paper denoiser 1.6–2.4× faster (``bench/diffusion_bench.py``). It is also batch-invariant
        bit for bit (its linear and GroupNorm layers run one case at a time), which lets the CPU sampler call the
        denoiser on a whole batch of cases. Same weights and function: outputs agree with the default path to
        float rounding (tested). In place; returns ``self``.
        """
        if use_cpu_inference_path(self):
            self.memory_format = torch.channels_last_3d
        return self

    def forward(self, z_t: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predicted noise.

        Args:
            z_t: (B, C, x, y, z) noisy normalised latent.
            timesteps: (B,) integer diffusion steps in [0, T).
            cond: (B, C + 1, x, y, z) = cat(Z_masked, down(M)).

        Returns:
            (B, C, x, y, z) ε prediction, contiguous whatever :attr:`memory_format` is.
        """
        if z_t.shape[1] != self.config.latent_channels or cond.shape[1] != self.config.cond_channels:
            raise ValueError(
                f"expected z_t with {self.config.latent_channels} and cond with {self.config.cond_channels} channels, "
                f"got {tuple(z_t.shape)} and {tuple(cond.shape)}"
            )
        if z_t.shape[2:] != cond.shape[2:]:
            raise ValueError(f"z_t and cond must share spatial size, got {tuple(z_t.shape)} and {tuple(cond.shape)}")
        d = self.config.spatial_divisor
        if any(s % d for s in z_t.shape[2:]):
            raise ValueError(f"latent spatial size {tuple(z_t.shape[2:])} must be a multiple of {d} per axis")
        x = torch.cat([z_t, cond.to(z_t.dtype)], dim=1).contiguous(memory_format=self.memory_format)
        return self.unet(x, timesteps).contiguous()


# ---------------------------------------------------------------------------- schedulers
def _schedule_args(config: DiffusionConfig) -> dict[str, float]:
    return {} if config.schedule == "cosine" else {"beta_start": config.beta_start, "beta_end": config.beta_end}


def make_train_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    """MONAI DDPM scheduler of the forward process q(z_t | z_{t-1}) (Eq. 1) for training."""
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps, schedule=config.schedule, **_schedule_args(config)
    )


def make_ddim_scheduler(
    config: DiffusionConfig, steps: int, *, clip_sample: bool = True, clip_range: tuple[float, float] = (-1.0, 1.0)
) -> DDIMScheduler:
    """MONAI DDIM scheduler with ``steps`` inference steps and "trailing" spacing.

    MONAI's ``step`` moves from ``t`` to ``t - T // steps`` while ``set_timesteps`` spaces the
    timesteps by ``linspace(T - 1 - offset, 0, steps)``; ``steps_offset = T // steps - 1`` makes the
    two agree exactly when ``steps`` divides T (timesteps 999, 899, …, 99 for T=1000, 10 steps): every
    model call then sees a sample at the noise level it is told. With ``clip_sample`` the predicted z₀
    is clipped to ``clip_range`` (:attr:`~synbt_factory.models.autoencoder.LatentNorm.clip`).
    """
    t_total = config.num_train_timesteps
    if not 1 <= steps <= t_total:
        raise ValueError(f"steps must be in 1..{t_total}, got {steps}")
    if t_total % steps:
        log.warning("DDIM steps %d does not divide T=%d: timesteps and step targets differ slightly", steps, t_total)
    sched = DDIMScheduler(
        num_train_timesteps=t_total,
        schedule=config.schedule,
        clip_sample=clip_sample,
        set_alpha_to_one=True,
        steps_offset=t_total // steps - 1,
        clip_sample_min=clip_range[0],
        clip_sample_max=clip_range[1],
        **_schedule_args(config),
    )
    sched.set_timesteps(steps)
    return sched


# ---------------------------------------------------------------------------- conditioning
def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation by a (2r+1)³ cube (Chebyshev ball): (B, 1, X, Y, Z) bool → same shape bool."""
    if radius <= 0:
        return mask.bool()
    x = mask.float()
    return F.max_pool3d(x, kernel_size=2 * radius + 1, stride=1, padding=radius) > 0


def smooth_fill(x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Fill ``hole`` voxels from their surroundings by push-pull pyramid interpolation.

    Known voxels are averaged down a 2× pyramid (weighted by how much of each coarse cell is
    known) until every coarse cell is covered, then the coarse estimate is upsampled
    (trilinear) and used wherever the finer level has no data. Known voxels are returned exactly.

    Args:
        x: (B, C, X, Y, Z) image.
        hole: (B, 1, X, Y, Z) bool, True where values are to be replaced.

    Returns:
        (B, C, X, Y, Z) with holes filled (zeros where a case has no known voxel at all).
    """
    known = (~hole.bool()).to(x.dtype)
    filled = _push_pull(x * known, known)
    return torch.where(hole.bool(), filled, x)


def _push_pull(xw: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Recursive step of :func:`smooth_fill`: ``xw`` = values × weights, ``w`` in [0, 1]."""
    value = xw / w.clamp_min(1e-12)
    if bool((w > 0).all()) or max(xw.shape[2:]) <= 1:
        return torch.where(w > 0, value, torch.zeros_like(value))
    xw_c = F.avg_pool3d(xw, kernel_size=2, stride=2, ceil_mode=True)
    w_c = F.avg_pool3d(w, kernel_size=2, stride=2, ceil_mode=True)
    coarse = _push_pull(xw_c, w_c)
    up = F.interpolate(coarse, size=xw.shape[2:], mode="trilinear", align_corners=False)
    return w * value + (1.0 - w) * up


def remove_region(
    images: torch.Tensor, masks: torch.Tensor, *, dilation: int, fill: str = "smooth"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The "masked input volume (i.e., tumor removed)" of Sec. 2.2.

    Args:
        images: (B, C, X, Y, Z) float image.
        masks: (B, X, Y, Z) or (B, 1, X, Y, Z) tumor mask (nonzero = tumor).
        dilation: Chebyshev radius in voxels by which the mask grows before removal.
        fill: ``"smooth"`` (:func:`smooth_fill`) or ``"zeros"``.

    Returns:
        (images with the hole filled (B, C, X, Y, Z), hole (B, 1, X, Y, Z) bool).
    """
    if fill not in _FILLS:
        raise ValueError(f"fill must be one of {', '.join(_FILLS)}, got {fill!r}")
    m = masks if masks.dim() == 5 else masks.unsqueeze(1)
    hole = dilate(m > 0, dilation)
    if fill == "zeros":
        return images.masked_fill(hole, 0.0), hole
    return smooth_fill(images, hole), hole


def downsample_mask(masks: torch.Tensor, factor: int, mode: str = "mean") -> torch.Tensor:
    """``down(M)``: (B, X, Y, Z) or (B, 1, X, Y, Z) mask → (B, 1, X/f, Y/f, Z/f) float in [0, 1]."""
    if mode not in _MASK_DOWN:
        raise ValueError(f"mode must be one of {', '.join(_MASK_DOWN)}, got {mode!r}")
    m = (masks if masks.dim() == 5 else masks.unsqueeze(1)).gt(0).float()
    if any(s % factor for s in m.shape[2:]):
        raise ValueError(f"mask size {tuple(m.shape[2:])} must be a multiple of the latent factor {factor}")
    pool = F.avg_pool3d if mode == "mean" else F.max_pool3d
    return pool(m, kernel_size=factor, stride=factor)


def encode_normalised(autoencoder: LatentAutoencoder, norm: LatentNorm, images: torch.Tensor) -> torch.Tensor:
    """Normalised quantised latent: (B, C_in, X, Y, Z) → (B, C, X/f, Y/f, Z/f) = norm(Q(E(x)))."""
    return norm.normalise(autoencoder.quantize(autoencoder.encode(images)))


def build_condition(
    autoencoder: LatentAutoencoder,
    norm: LatentNorm,
    images: torch.Tensor,
    masks: torch.Tensor,
    config: DiffusionConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target latent and condition of one batch, in one encoder call of 2B volumes.

    Args:
        images: (B, 2, X, Y, Z) prepared image (X, Y, Z multiples of the latent factor).
        masks: (B, X, Y, Z) tumor mask.

    Returns:
        ``z0`` (B, C, x, y, z): normalised latent of the whole volume (the diffusion target / known
        background), and ``cond`` (B, C + 1, x, y, z) = cat(Z_masked, down(M)).
    """
    removed, _ = remove_region(images, masks, dilation=config.mask_dilation, fill=config.fill)
    both = encode_normalised(autoencoder, norm, torch.cat([images, removed.to(images.dtype)], dim=0))
    b = images.shape[0]
    z0, z_masked = both[:b], both[b:]
    down = downsample_mask(masks, autoencoder.downsample_factor, config.mask_down).to(z_masked.dtype)
    if down.shape[2:] != z_masked.shape[2:]:
        raise ValueError(f"down(M) {tuple(down.shape[2:])} does not match the latent grid {tuple(z_masked.shape[2:])}")
    return z0, torch.cat([z_masked, down], dim=1)


def null_condition(cond: torch.Tensor) -> torch.Tensor:
    """The condition without the mask: ``cat(Z_masked, 0)``, (B, C + 1, x, y, z) → same shape.

    The tumor-removed latent stays; only the mask channel is zeroed. Under it the denoiser no longer
    knows the tumor's shape, only that a region was removed: on the phantom recipe it then fills the
    hole with a fainter, shapeless lesion (post/pre 1.52 inside placed masks, 1.85 with the mask). It is
    the reference that :func:`guided_noise` extrapolates away from. It is met in training wherever a
    crop holds no tumor (mask channel 0), so the denoiser must train on crops smaller than the volume.
    """
    return torch.cat([cond[:, :-1], torch.zeros_like(cond[:, -1:])], dim=1)


def guided_noise(
    denoiser: nn.Module, z_t: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor, scale: float
) -> torch.Tensor:
    """Mask-guided noise prediction: ε_∅ + s · (ε_M − ε_∅) (classifier-free guidance, Ho & Salimans 2022).

    ε_M = ε_θ(z_t, t, Z_cond) is the paper's prediction (Eq. 2); ε_∅ uses :func:`null_condition`.
    ``scale`` = 1 is the paper's sampler and makes one denoiser call; any other scale makes one call
    on the doubled batch ``cat(conditional, null)``, so each case's two predictions come from the
    same call whatever else is in the batch. Not part of the paper: an option for denoisers whose
    tumors come out fainter than real ones (see ``bench/realism_bench.py``).

    Args:
        denoiser: ε_θ, called as ``denoiser(z_t, timesteps, cond)``.
        z_t: (B, C, x, y, z); timesteps: (B,); cond: (B, C + 1, x, y, z).
        scale: guidance scale s (≥ 0).

    Returns:
        (B, C, x, y, z) guided ε.
    """
    if scale == 1.0:
        return denoiser(z_t, timesteps, cond)
    both = denoiser(torch.cat([z_t, z_t]), torch.cat([timesteps, timesteps]), torch.cat([cond, null_condition(cond)]))
    eps_mask, eps_null = both.chunk(2)
    return eps_null + scale * (eps_mask - eps_null)


# ---------------------------------------------------------------------------- loading
class LoadedDiffusion(NamedTuple):
    """A trained denoiser rebuilt from its checkpoint (unpacks as ``model, config, norm, vqvae_sha256``).

    Attributes:
        model: the denoiser in eval mode, gradients off, on the requested device.
        config: the architecture and conditioning it was trained with.
        norm: the latent normalisation it was trained with.
        vqvae_sha256: sha256 of the VQ-VAE checkpoint its latents came from ("" when not recorded).
    """

    model: MaskConditionedDenoiser
    config: DiffusionConfig
    norm: LatentNorm
    vqvae_sha256: str


def ema_weights(ema_state: dict[str, Any]) -> dict[str, Any]:
    """``AveragedModel`` state → the wrapped module's state (drops ``n_averaged``, strips ``module.``)."""
    return {k[len("module.") :]: v for k, v in ema_state.items() if k.startswith("module.")}


def load_diffusion(path: Path, device: str | torch.device = "cpu", *, weights: str = "ema") -> LoadedDiffusion:
    """Rebuild a trained denoiser for sampling (eval mode, gradients off; on CPU with
    :meth:`MaskConditionedDenoiser.use_cpu_inference_path`).

    Args:
        path: a diffusion checkpoint (``final.pt``, ``last.pt`` or ``step_<N>.pt``).
        device: where the model goes.
        weights: ``"ema"`` (the averaged weights, for sampling) or ``"model"`` (the raw ones).

    Returns:
        :class:`LoadedDiffusion` ``(model, config, norm, vqvae_sha256)``.

    Raises:
        ValueError: ``weights`` is neither ``"ema"`` nor ``"model"``.
        CheckpointError: missing, corrupt, not a diffusion checkpoint, or its config and weights cannot rebuild
            the denoiser.
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    ckpt = load_checkpoint(Path(path), kind=CHECKPOINT_KIND, map_location="cpu")
    with rebuilding_from(path, "denoiser"):
        config = config_from_dict(DiffusionConfig, ckpt["config"])
        model = MaskConditionedDenoiser(config)
        state = ema_weights(ckpt["ema"]) if weights == "ema" else ckpt["model"]
        model.load_state_dict(state)
        norm = LatentNorm(**ckpt["latent_norm"])
    model.to(device).eval()
    if next(model.parameters()).device.type == "cpu":
        model.use_cpu_inference_path()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedDiffusion(model, config, norm, str(ckpt.get("vqvae_sha256", "")))
