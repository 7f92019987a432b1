"""The sampler's blend halo is round (Euclidean distance), not a box (Chebyshev distance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_cdt, distance_transform_edt
from tiny_autoencoder import TinyVQAE
from torch import nn

from synbt_factory.models.diffusion import MaskConditionedDenoiser, diffusion_preset
from synbt_factory.rng import torch_generator
from synbt_factory.synthesis.sampler import InpaintingSampler, SamplerConfig, blend_weights, mask_distance

SHAPE = (32, 32, 32)
CENTRE = (16, 16, 16)


def _ball(radius: float) -> torch.Tensor:
    grid = np.indices(SHAPE) - np.asarray(CENTRE)[:, None, None, None]
    return torch.from_numpy(((grid**2).sum(0) <= radius**2).astype(np.uint8))


@pytest.fixture(scope="module")
def sampler() -> InpaintingSampler:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ae = TinyVQAE().eval()
        den = MaskConditionedDenoiser(diffusion_preset("tiny")).eval()
        for p in den.parameters():  # MONAI zero-initialises some convolutions: make the output depend on the input
            if p.dim() > 1 and not bool(p.any()):
                nn.init.normal_(p, std=0.05)
    config = SamplerConfig(steps=2, mode="whole", blend_start=None, blend_ramp=4)  # the first blend: margin 6
    return InpaintingSampler(ae, den, ae.latent_norm(), config)


def test_mask_distance_is_euclidean() -> None:
    mask = _ball(0)[None]
    dist = mask_distance(mask)[0].numpy()
    assert dist[CENTRE] == 0
    assert dist[16, 16, 19] == pytest.approx(3.0)
    assert dist[19, 20, 16] == pytest.approx(5.0)
    assert dist[19, 19, 19] == pytest.approx(np.sqrt(27))
    assert torch.isinf(mask_distance(torch.zeros(1, 4, 4, 4))).all()


def test_weights_vanish_at_the_euclidean_radius_and_the_old_box_corner_is_zero() -> None:
    w = blend_weights(_ball(0)[None], dilation=2, ramp=4)[0, 0].numpy()
    dist = distance_transform_edt(_ball(0).numpy() == 0)
    assert np.array_equal(w > 0, dist < 6)
    assert w[21, 21, 21] == 0  # Chebyshev distance 5 < 6 (inside the old box), Euclidean 8.7
    assert w[16, 16, 21] == pytest.approx(0.25)  # on an axis both distances are 5: 1 - (5 - 2) / 4
    assert w[16, 17, 17] == 1.0  # within the dilation (distance √2 ≤ 2)


def test_sampler_changes_no_voxel_beyond_the_radius_and_leaves_the_box_corner(sampler: InpaintingSampler) -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.nn.functional.avg_pool3d(torch.rand(1, 2, *SHAPE, generator=g), 5, stride=1, padding=2)
    images = images.to(torch.float16)
    mask = _ball(2.0)[None]
    out = sampler.sample(images, mask, [torch_generator(0, 0, "ddim")])
    dist = distance_transform_edt(mask[0].numpy() == 0)
    changed = (out[0] != images[0]).any(0).numpy()
    margin = sampler.margin
    assert changed.any()
    assert not changed[dist >= margin].any(), "a voxel at Euclidean distance >= margin changed"
    # a corner of the old box halo around the ball: Chebyshev distance < margin, Euclidean distance >= margin
    corner = tuple(c + margin - 1 for c in CENTRE)
    chebyshev = distance_transform_cdt(mask[0].numpy() == 0, metric="chessboard")
    assert chebyshev[corner] < margin <= dist[corner]
    assert torch.equal(out[0][(slice(None), *corner)], images[0][(slice(None), *corner)])
