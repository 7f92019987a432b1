"""Fibroglandular-tissue segmenter (paper Sec. 3.1, Fig. 4 b): a MONAI 3D U-Net.

Input (B, 2, X, Y, Z): pre- and post-contrast channels, normalised like a prepared store.
Output (B, 4, X, Y, Z) logits over :data:`TISSUE_CLASSES`: 0 other (air, body outside the
breast), 1 breast fat (breast mask minus tissue), 2 vessel, 3 dense fibroglandular tissue.
The breast mask is classes ≥ 1; FGT is class 3. The network is trained only on images
synthesised from label maps (SynthSeg idea, :mod:`synbt_factory.tissue.synth`),
so it must not depend on any particular contrast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.nets import UNet

__all__ = [
    "TISSUE_CLASSES",
    "FGT_CLASS",
    "VESSEL_CLASS",
    "FAT_CLASS",
    "TissueModelConfig",
    "build_tissue_model",
    "tissue_preset",
]

#: Output classes of the tissue model.
TISSUE_CLASSES: tuple[str, ...] = ("other", "breast_fat", "vessel", "fgt")
FAT_CLASS, VESSEL_CLASS, FGT_CLASS = 1, 2, 3


@dataclass(frozen=True, kw_only=True)
class TissueModelConfig:
    """MONAI ``UNet`` hyper-parameters.

    Args:
        in_channels: image channels (pre, post).
        out_channels: classes (see :data:`TISSUE_CLASSES`).
        channels: feature maps per level.
        strides: down-sampling per level (``len(channels) - 1`` entries).
        num_res_units: residual units per block.
        norm: MONAI norm name (instance norm makes the net intensity-scale agnostic).
        dropout: dropout probability.
    """

    in_channels: int = 2
    out_channels: int = 4
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    norm: str = "INSTANCE"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        if self.out_channels != len(TISSUE_CLASSES):
            raise ValueError(
                f"out_channels must be {len(TISSUE_CLASSES)} ({', '.join(TISSUE_CLASSES)}), got {self.out_channels}"
            )
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must list >= 2 positive sizes, got {self.channels}")
        if len(self.strides) != len(self.channels) - 1 or any(s < 1 for s in self.strides):
            raise ValueError(
                f"strides must have len(channels) - 1 = {len(self.channels) - 1} positive entries, got {self.strides}"
            )
        if self.num_res_units < 0:
            raise ValueError(f"num_res_units must be >= 0, got {self.num_res_units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this (product of strides)."""
        d = 1
        for s in self.strides:
            d *= s
        return d


def tissue_preset(name: str) -> TissueModelConfig:
    """``tiny`` (tests, seconds on CPU) or ``small`` (default training)."""
    if name == "tiny":
        return TissueModelConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    if name == "small":
        return TissueModelConfig(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1)
    raise ValueError(f"preset must be 'tiny' or 'small', got {name!r}")


def build_tissue_model(config: TissueModelConfig) -> torch.nn.Module:
    """The MONAI ``UNet`` of ``config``: (B, in_channels, X, Y, Z) → (B, 4, X, Y, Z) logits."""
    return UNet(
        spatial_dims=3,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        channels=tuple(config.channels),
        strides=tuple(config.strides),
        num_res_units=config.num_res_units,
        norm=config.norm,
        dropout=config.dropout,
    )
