"""A real small VQ autoencoder for tests of code that only needs the ``LatentAutoencoder`` Protocol."""

from __future__ import annotations

import torch
from monai.networks.nets import VQVAE
from torch import nn

from synbt_factory.models.autoencoder import LatentNorm


class TinyVQAE(nn.Module):
    """A real small VQ autoencoder (MONAI ``VQVAE``, factor 4, 8 latent channels) satisfying ``LatentAutoencoder``."""

    in_channels = 2
    latent_channels = 8
    downsample_factor = 4

    def __init__(self) -> None:
        super().__init__()
        self.net = VQVAE(
            spatial_dims=3,
            in_channels=2,
            out_channels=2,
            channels=(8, 16),
            num_res_layers=1,
            num_res_channels=(8, 16),
            downsample_parameters=((2, 4, 1, 1), (2, 4, 1, 1)),
            upsample_parameters=((2, 4, 1, 1, 0), (2, 4, 1, 1, 0)),
            num_embeddings=32,
            embedding_dim=8,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(x)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.quantize(z)[0]

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.net.decode(z_q)

    def latent_norm(self) -> LatentNorm:
        return LatentNorm.from_codebook(self.net.quantizer.quantizer.embedding.weight.detach())

    @torch.no_grad()
    def init_codebook(self, images: torch.Tensor, generator: torch.Generator) -> None:
        """Codes = encoder outputs at random positions of ``images`` (a random codebook maps everything to one code)."""
        z = self.encode(images).permute(0, 2, 3, 4, 1).reshape(-1, self.latent_channels)
        weight = self.net.quantizer.quantizer.embedding.weight
        weight.copy_(z[torch.randperm(z.shape[0], generator=generator)[: weight.shape[0]]])
