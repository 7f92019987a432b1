"""The interface between the autoencoder and everything that uses its latent space.

The diffusion trainer and the sampler only see :class:`LatentAutoencoder`, so any model that
encodes a (B, C, X, Y, Z) volume to a (B, C_lat, X/f, Y/f, Z/f) latent, quantises and decodes
can stand in for the VQ-VAE (MONAI's ``encode_stage_2_inputs`` / ``decode_stage_2_outputs``
idea, written as a Protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

__all__ = ["LatentAutoencoder", "LatentNorm"]


@runtime_checkable
class LatentAutoencoder(Protocol):
    """Encode → quantise → decode, with known latent geometry.

    Attributes:
        in_channels: image channels (2: pre- and post-contrast).
        latent_channels: latent channels (8 in the paper).
        downsample_factor: spatial compression per axis (4 in the paper).
    """

    in_channels: int
    latent_channels: int
    downsample_factor: int

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, X, Y, Z) → continuous latent (B, latent_channels, X/f, Y/f, Z/f).

        Volumes larger than the training patch are encoded patch-wise and reassembled by grid
        position (paper Sec. 2.1); X, Y, Z must be multiples of ``downsample_factor``.
        """
        ...

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Replace every latent vector by its nearest codebook entry; same shape."""
        ...

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantised latent (B, latent_channels, x, y, z) → image (B, in_channels, f·x, f·y, f·z)."""
        ...


@dataclass(frozen=True, kw_only=True)
class LatentNorm:
    """Affine map between raw latents and the diffusion model's normalised latents.

    ``normalised = (raw - shift) / scale``. Two constructions:

    - :meth:`from_codebook`: the codebook's value range → [-1, 1];
    - :meth:`standardised`: zero mean and unit variance over training latents, the "scale factor"
      of latent diffusion (Rombach et al. 2022, Sec. 4.3.2). The forward process (Eq. 1) adds unit-variance
      noise, so latents with a spread far below 1 are drowned by it at every timestep but the last few.

    ``clip`` is the normalised value range of the codebook, the only values the decoder ever sees: the
    DDIM sampler clips its predicted z₀ to it. Stored inside VQ-VAE and diffusion checkpoints.
    """

    shift: float = 0.0
    scale: float = 1.0
    clip: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        clip = tuple(float(v) for v in self.clip)  # a checkpoint stores it as a list
        if len(clip) != 2 or not clip[0] < clip[1]:
            raise ValueError(f"clip must be (low, high) with low < high, got {self.clip}")
        object.__setattr__(self, "clip", clip)

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.shift) / self.scale

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale + self.shift

    @classmethod
    def from_codebook(cls, codebook: torch.Tensor) -> LatentNorm:
        """Map the codebook's value range (K, D) to [-1, 1]."""
        lo, hi = float(codebook.min()), float(codebook.max())
        return cls(shift=(hi + lo) / 2.0, scale=max((hi - lo) / 2.0, 1e-6))

    def standardised(self, mean: float, std: float) -> LatentNorm:
        """The norm whose output is this norm's output standardised: ``(normalise(z) - mean) / std``.

        Args:
            mean, std: statistics of latents normalised by ``self`` (std > 0).
        """
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std}")
        return LatentNorm(
            shift=self.shift + mean * self.scale,
            scale=self.scale * std,
            clip=((self.clip[0] - mean) / std, (self.clip[1] - mean) / std),
        )
