"""Tumor segmenters of the paper's Table 1, built from MONAI: U-Net, nnU-Net (DynUNet), SwinUNETR.

Inputs are (B, 2, X, Y, Z) float (pre-contrast, post-contrast); outputs are (B, 2, X, Y, Z) logits
(background, tumor). Spatial sizes fed to a network must be multiples of
:func:`spatial_divisor` (training crops and sliding-window sizes are checked against it).

Presets (``tiny`` for tests, ``small`` for CPU runs, ``paper`` for GPU):

* ``unet`` — ``monai.networks.nets.UNet`` with residual units; ``paper`` is MONAI's standard 3D
  U-Net (channels 16-32-64-128-256, strides 2-2-2-2, 2 residual units).
* ``dynunet`` — ``monai.networks.nets.DynUNet`` with nnU-Net-style kernels and strides planned
  from the training patch size and voxel spacing (:func:`plan_dynunet`); filters 32·2^i capped at
  320 for ``paper`` as in nnU-Net. Deep supervision is off (a single output head).
* ``swinunetr`` — ``monai.networks.nets.SwinUNETR``; ``paper`` uses feature size 48.

:func:`predict_volume` segments a whole volume by sliding-window inference. This module imports nothing
from ``store/``, ``training/``, ``data/`` or ``cli/``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "SEGMENTER_NAMES",
    "PRESETS",
    "SegmenterConfig",
    "DynUNetPlan",
    "plan_dynunet",
    "build_segmenter",
    "spatial_divisor",
    "check_spatial_size",
    "count_parameters",
    "predict_volume",
]

SEGMENTER_NAMES: tuple[str, ...] = ("unet", "dynunet", "swinunetr")
PRESETS: tuple[str, ...] = ("tiny", "small", "paper")

#: Display names used in tables (the paper calls DynUNet "nnUNet").
DISPLAY_NAMES = {"unet": "UNet", "dynunet": "nnUNet", "swinunetr": "SwinUNETR"}

_UNET = {
    "tiny": {"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1},
    "small": {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 2},
    "paper": {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2},
}
_DYNUNET = {
    "tiny": {"base": 8, "cap": 64, "max_downsamplings": 2},
    "small": {"base": 16, "cap": 160, "max_downsamplings": 4},
    "paper": {"base": 32, "cap": 320, "max_downsamplings": 5},
}
_SWIN = {
    "tiny": {"feature_size": 12, "depths": (1, 1, 1, 1)},
    "small": {"feature_size": 24, "depths": (2, 2, 2, 2)},
    "paper": {"feature_size": 48, "depths": (2, 2, 2, 2)},
}


@dataclass(frozen=True, kw_only=True)
class SegmenterConfig:
    """Everything needed to rebuild a segmenter (stored in its checkpoints).

    Args:
        name: ``"unet"``, ``"dynunet"`` or ``"swinunetr"``.
        preset: ``"tiny"``, ``"small"`` or ``"paper"`` (widths/depths; see the module docstring).
        in_channels: input channels (2: pre- and post-contrast).
        out_channels: output classes (2: background, tumor).
        patch_size: training crop (X, Y, Z) in voxels; plans DynUNet's kernels and strides.
        spacing: voxel size (X, Y, Z) in mm; plans DynUNet's anisotropic kernels.
        channels: optional width override — UNet ``channels`` or DynUNet ``filters`` (one per
            level); for SwinUNETR a single value overriding ``feature_size`` (multiple of 12).
        gradient_checkpointing: SwinUNETR activation checkpointing (saves GPU memory).
    """

    name: str = "unet"
    preset: str = "small"
    in_channels: int = 2
    out_channels: int = 2
    patch_size: tuple[int, int, int] = (192, 192, 128)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channels: tuple[int, ...] | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.name not in SEGMENTER_NAMES:
            raise ValueError(f"name must be one of {SEGMENTER_NAMES}, got {self.name!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        if self.out_channels < 2:
            raise ValueError(f"out_channels must be >= 2 (softmax classes), got {self.out_channels}")
        if len(self.patch_size) != 3 or any(int(s) < 8 for s in self.patch_size):
            raise ValueError(f"patch_size must be three sizes >= 8 voxels, got {self.patch_size}")
        if len(self.spacing) != 3 or any(not (float(s) > 0) for s in self.spacing):
            raise ValueError(f"spacing must be three positive mm values, got {self.spacing}")
        if self.channels is not None:
            if not self.channels or any(int(c) < 1 for c in self.channels):
                raise ValueError(f"channels must be positive integers, got {self.channels}")
            if self.name == "swinunetr" and (len(self.channels) != 1 or self.channels[0] % 12):
                raise ValueError(
                    f"channels for swinunetr is (feature_size,) with a multiple of 12, got {self.channels}"
                )
            if self.name == "unet" and len(self.channels) < 2:
                raise ValueError(f"channels for unet needs >= 2 levels, got {self.channels}")

    @property
    def display_name(self) -> str:
        return DISPLAY_NAMES[self.name]


@dataclass(frozen=True)
class DynUNetPlan:
    """nnU-Net-style topology: one kernel and stride per level (the first stride is 1)."""

    kernels: tuple[tuple[int, int, int], ...]
    strides: tuple[tuple[int, int, int], ...]
    filters: tuple[int, ...]

    @property
    def divisor(self) -> tuple[int, int, int]:
        return tuple(math.prod(s[a] for s in self.strides) for a in range(3))  # type: ignore[return-value]


def plan_dynunet(
    patch_size: Sequence[int],
    spacing: Sequence[float],
    *,
    max_downsamplings: int = 5,
    base_filters: int = 32,
    max_filters: int = 320,
) -> DynUNetPlan:
    """Plan DynUNet kernels and strides the nnU-Net way.

    An axis is downsampled (stride 2) while its spacing is at most twice the finest current spacing,
    its feature map is at least 8 voxels and even; its kernel is 3 when its spacing is at most twice
    the finest, else 1 (in-plane-only convolutions for thick slices). Levels stop when no axis can
    be downsampled or after ``max_downsamplings``. Filters double per level from ``base_filters``,
    capped at ``max_filters``.

    Args:
        patch_size: (X, Y, Z) training crop in voxels.
        spacing: (X, Y, Z) voxel size in mm.
    """
    sizes = [int(s) for s in patch_size]
    spacings = [float(s) for s in spacing]
    kernels: list[tuple[int, int, int]] = []
    strides: list[tuple[int, int, int]] = [(1, 1, 1)]
    for _ in range(max_downsamplings):
        finest = min(spacings)
        ratio = [s / finest for s in spacings]
        stride = tuple(2 if r <= 2 and n >= 8 and n % 2 == 0 else 1 for r, n in zip(ratio, sizes, strict=False))
        kernel = tuple(3 if r <= 2 else 1 for r in ratio)
        if all(s == 1 for s in stride):
            break
        kernels.append(kernel)  # type: ignore[arg-type]
        strides.append(stride)  # type: ignore[arg-type]
        sizes = [n // s for n, s in zip(sizes, stride, strict=False)]
        spacings = [sp * s for sp, s in zip(spacings, stride, strict=False)]
    kernels.append((3, 3, 3))
    if len(strides) < 2:
        raise ValueError(f"patch_size {tuple(patch_size)} is too small to downsample; use >= 8 voxels per axis")
    filters = tuple(min(base_filters * 2**i, max_filters) for i in range(len(strides)))
    return DynUNetPlan(kernels=tuple(kernels), strides=tuple(strides), filters=filters)


def _dynunet_plan(config: SegmenterConfig) -> DynUNetPlan:
    preset = _DYNUNET[config.preset]
    plan = plan_dynunet(
        config.patch_size,
        config.spacing,
        max_downsamplings=preset["max_downsamplings"],
        base_filters=preset["base"],
        max_filters=preset["cap"],
    )
    if config.channels is not None:
        if len(config.channels) != len(plan.strides):
            raise ValueError(
                f"channels has {len(config.channels)} levels but the DynUNet plan for patch {config.patch_size} "
                f"has {len(plan.strides)}; give {len(plan.strides)} filter counts or leave channels unset"
            )
        plan = DynUNetPlan(kernels=plan.kernels, strides=plan.strides, filters=tuple(int(c) for c in config.channels))
    return plan


def spatial_divisor(config: SegmenterConfig) -> tuple[int, int, int]:
    """Every input spatial size must be a multiple of these (X, Y, Z) values."""
    if config.name == "unet":
        levels = len(config.channels) if config.channels is not None else len(_UNET[config.preset]["channels"])
        d = 2 ** (levels - 1)
        return (d, d, d)
    if config.name == "dynunet":
        return _dynunet_plan(config).divisor
    return (32, 32, 32)  # SwinUNETR: patch embedding 2 × four 2× merges


def check_spatial_size(config: SegmenterConfig, size: Sequence[int], *, what: str = "input size") -> None:
    """Raise ``ValueError`` naming ``what`` if ``size`` is not a multiple of :func:`spatial_divisor`, or so
    small that the deepest feature map is one voxel (instance normalisation then fails)."""
    div = spatial_divisor(config)
    bad = [int(s) for s, d in zip(size, div, strict=False) if int(s) % d]
    if len(tuple(size)) != 3 or bad:
        fix = tuple(max(d, int(round(int(s) / d)) * d) for s, d in zip(size, div, strict=False))
        raise ValueError(
            f"{what} {tuple(int(s) for s in size)} does not suit {config.name} ({config.preset}): each axis must be a "
            f"multiple of {div}; try {fix}"
        )
    if math.prod(int(s) // d for s, d in zip(size, div, strict=False)) < 2:
        raise ValueError(
            f"{what} {tuple(int(s) for s in size)} is too small for {config.name} ({config.preset}): the deepest "
            f"feature map would be a single voxel (instance norm needs more); double one axis, e.g. "
            f"{(2 * div[0], div[1], div[2])}"
        )


def build_segmenter(config: SegmenterConfig) -> nn.Module:
    """A fresh network for ``config`` (initialised from torch's global RNG; seed it around the call).

    Returns:
        Module mapping (B, in_channels, X, Y, Z) → (B, out_channels, X, Y, Z) logits.
    """
    from monai.networks.nets import DynUNet, SwinUNETR, UNet

    if config.name == "unet":
        preset = _UNET[config.preset]
        channels = tuple(int(c) for c in config.channels) if config.channels is not None else preset["channels"]
        return UNet(
            spatial_dims=3,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            channels=channels,
            strides=(2,) * (len(channels) - 1),
            num_res_units=preset["num_res_units"],
            norm="INSTANCE",
        )
    if config.name == "dynunet":
        plan = _dynunet_plan(config)
        return DynUNet(
            spatial_dims=3,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            kernel_size=[list(k) for k in plan.kernels],
            strides=[list(s) for s in plan.strides],
            upsample_kernel_size=[list(s) for s in plan.strides[1:]],
            filters=list(plan.filters),
            norm_name=("INSTANCE", {"affine": True}),
            deep_supervision=False,
            res_block=False,
        )
    preset = _SWIN[config.preset]
    feature_size = int(config.channels[0]) if config.channels is not None else preset["feature_size"]
    return SwinUNETR(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        feature_size=feature_size,
        depths=preset["depths"],
        num_heads=(3, 6, 12, 24),
        use_checkpoint=config.gradient_checkpointing,
        spatial_dims=3,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def predict_volume(
    model: nn.Module,
    image: np.ndarray,
    window: Sequence[int],
    *,
    overlap: float = 0.25,
    sw_batch_size: int = 2,
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> np.ndarray:
    """Tumor mask of a whole volume by sliding-window inference (MONAI ``sliding_window_inference``).

    Args:
        model: segmenter returning (B, 2, x, y, z) logits.
        image: (2, X, Y, Z) float image (volumes smaller than ``window`` are padded by MONAI).
        window: (X, Y, Z) window size (paper: 192×192×128 in X, Y, Z = 128×192×192 as written).
        overlap: window overlap fraction.
        sw_batch_size: windows per forward pass.
        device: where the windows run (the model must be there already).
        amp: bf16 autocast (CUDA only).

    Returns:
        (X, Y, Z) uint8 mask (argmax of the blended logits).
    """
    from monai.inferers import sliding_window_inference

    device = torch.device(device)
    x = torch.as_tensor(np.asarray(image, dtype=np.float32))[None].to(device)
    use_amp = amp and device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
        logits = sliding_window_inference(
            x,
            roi_size=tuple(int(w) for w in window),
            sw_batch_size=sw_batch_size,
            predictor=model,
            overlap=overlap,
            mode="gaussian",
        )
    return logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
