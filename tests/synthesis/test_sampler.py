"""Latent DDIM inpainting sampler: batch-independent per-case randomness, exact background, modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt
from tiny_autoencoder import TinyVQAE
from torch import nn

from synbt_factory.models.autoencoder import LatentAutoencoder
from synbt_factory.models.diffusion import MaskConditionedDenoiser, diffusion_preset
from synbt_factory.rng import torch_generator
from synbt_factory.synthesis.sampler import InpaintingSampler, SamplerConfig, blend_weights

SHAPE = (48, 40, 32)


@pytest.fixture(scope="module")
def models() -> tuple[TinyVQAE, MaskConditionedDenoiser]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ae = TinyVQAE().eval()
        den = MaskConditionedDenoiser(diffusion_preset("tiny")).eval()
        _randomise_zero_init(den)
    ae.init_codebook(_cases()[0], torch.Generator().manual_seed(0))
    return ae, den


def _randomise_zero_init(module: nn.Module) -> None:
    """MONAI zero-initialises the UNet's output and residual convolutions (ε ≡ 0 untrained); give them
    small random weights so the sampler is tested with a denoiser whose output depends on its input."""
    for p in module.parameters():
        if p.dim() > 1 and not bool(p.any()):
            nn.init.normal_(p, std=0.05)


def _cases(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images and blob masks of different sizes and positions (one touches the border)."""
    g = torch.Generator().manual_seed(3)
    images = torch.nn.functional.avg_pool3d(torch.rand(n, 2, *SHAPE, generator=g), 5, stride=1, padding=2)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in SHAPE], indexing="ij"))
    centres = [(24, 20, 16), (10, 30, 8), (40, 8, 25), (2, 20, 16)]
    radii = [5.0, 3.0, 7.0, 4.0]
    masks = torch.stack(
        [
            (((grid - torch.tensor(c, dtype=torch.float32)[:, None, None, None]) ** 2).sum(0) <= r**2).to(torch.uint8)
            for c, r in zip(centres[:n], radii[:n], strict=True)
        ]
    )
    return images, masks


def _gens(seed: int, indices: list[int]) -> list[torch.Generator]:
    return [torch_generator(seed, i, "ddim") for i in indices]


def _sampler(models, **changes) -> InpaintingSampler:
    ae, den = models
    return InpaintingSampler(ae, den, ae.latent_norm(), SamplerConfig(steps=4, **changes))


def test_tiny_autoencoder_satisfies_protocol(models) -> None:
    assert isinstance(models[0], LatentAutoencoder)


@pytest.mark.parametrize("mode,eta,guidance", [("window", 0.0, 1.0), ("whole", 1.0, 1.0), ("window", 1.0, 1.5)])
def test_same_case_and_seed_identical_for_batch_sizes_1_and_4(models, mode: str, eta: float, guidance: float) -> None:
    images, masks = _cases()
    sampler = _sampler(models, mode=mode, eta=eta, guidance=guidance)
    batch = sampler.sample(images, masks, _gens(7, [0, 1, 2, 3]))
    for i in range(4):
        single = sampler.sample(images[i : i + 1], masks[i : i + 1], _gens(7, [i]))
        assert torch.equal(single[0], batch[i]), f"case {i} differs between batch 1 and batch 4"
    pair = sampler.sample(images[[2, 0]], masks[[2, 0]], _gens(7, [2, 0]))  # other batch, other order
    assert torch.equal(pair[0], batch[2]) and torch.equal(pair[1], batch[0])
    other_seed = sampler.sample(images[:1], masks[:1], _gens(8, [0]))
    assert not torch.equal(other_seed[0], batch[0])


@pytest.mark.parametrize("mode,guidance", [("window", 1.0), ("whole", 1.0), ("window", 2.0)])
def test_voxels_beyond_margin_are_bit_identical_and_mask_changes(models, mode: str, guidance: float) -> None:
    images, masks = _cases()
    images = images.to(torch.float16)  # the store's dtype: no round trip may touch the background
    sampler = _sampler(models, mode=mode, guidance=guidance)
    out = sampler.sample(images, masks, _gens(1, [0, 1, 2, 3]))
    assert out.dtype == images.dtype and out.shape == images.shape
    for i in range(4):
        dist = distance_transform_edt(masks[i].numpy() == 0)
        far = torch.from_numpy(dist >= sampler.margin)
        assert torch.equal(out[i][:, far], images[i][:, far])
        inside = masks[i].bool()
        assert not torch.equal(out[i][:, inside], images[i][:, inside])
        assert torch.isfinite(out[i].float()).all()
    # the changed region is not larger than it must be: just inside the margin something changed
    dist = distance_transform_edt(masks[0].numpy() == 0)
    near = torch.from_numpy((dist >= sampler.margin - 1) & (dist < sampler.margin))
    assert not torch.equal(out[0][:, near], images[0][:, near])


def test_empty_mask_returns_input(models) -> None:
    images, masks = _cases(2)
    masks[1] = 0
    out = _sampler(models).sample(images, masks, _gens(0, [0, 1]))
    assert torch.equal(out[1], images[1])


def test_blend_weights_ramp_is_euclidean_distance() -> None:
    mask = torch.zeros(1, 21, 21, 21)
    mask[0, 10, 10, 10] = 1
    w = blend_weights(mask, dilation=2, ramp=4)[0, 0]
    dist = torch.from_numpy(distance_transform_edt(mask[0].numpy() == 0)).float()
    expected = (1.0 - (dist - 2).clamp(min=0) / 4).clamp(min=0)
    assert torch.allclose(w, expected)


def test_both_modes_change_exactly_the_voxels_within_the_margin(models) -> None:
    images, masks = _cases(1)
    inside_margin = torch.from_numpy(distance_transform_edt(masks[0].numpy() == 0) < 5)
    for mode in ("whole", "window"):
        sampler = _sampler(models, mode=mode, blend_start=None, blend_ramp=3)  # margin = dilation 2 + ramp 3 = 5
        assert sampler.margin == 5
        out = sampler.sample(images, masks, _gens(2, [0]))
        assert torch.equal((out[0] != images[0]).any(0), inside_margin), mode


def test_batched_calls_agree_with_per_case_calls_to_float_tolerance(models) -> None:
    images, masks = _cases()
    exact = _sampler(models).sample(images, masks, _gens(4, [0, 1, 2, 3]))
    batched = _sampler(models, per_case_calls=False).sample(images, masks, _gens(4, [0, 1, 2, 3]))
    assert torch.allclose(batched, exact, atol=1e-4, rtol=0)


def test_guidance_changes_the_tumor_and_scale_one_is_the_plain_sampler(models) -> None:
    images, masks = _cases(2)
    plain = _sampler(models).sample(images, masks, _gens(5, [0, 1]))
    one = _sampler(models, guidance=1.0).sample(images, masks, _gens(5, [0, 1]))
    guided = _sampler(models, guidance=2.0).sample(images, masks, _gens(5, [0, 1]))
    assert torch.equal(plain, one)
    inside = masks.bool().unsqueeze(1).expand_as(images)
    assert not torch.equal(guided[inside], plain[inside])  # the guided prediction was used


def test_config_validation_names_field() -> None:
    with pytest.raises(ValueError, match="guidance"):
        SamplerConfig(guidance=-0.5)
    with pytest.raises(ValueError, match="mode"):
        SamplerConfig(mode="tiles")
    with pytest.raises(ValueError, match="eta"):
        SamplerConfig(eta=2.0)


def test_bad_shapes_raise(models) -> None:
    images, masks = _cases(2)
    sampler = _sampler(models)
    with pytest.raises(ValueError, match="generator"):
        sampler.sample(images, masks, _gens(0, [0]))
    with pytest.raises(ValueError, match="masks"):
        sampler.sample(images, masks[:, :-1], _gens(0, [0, 1]))
    assert np.isfinite(sampler.margin)


def test_default_blend_changes_nothing_farther_than_3_voxels_from_the_mask(models) -> None:
    """The default blend fades the synthetic image out within 3 voxels of the mask (it started at the denoiser's
    2-voxel mask dilation and ramped over 4 more, changing voxels up to 6 voxels away)."""
    from scipy.ndimage import distance_transform_edt

    images, masks = _cases(1)
    sampler = _sampler(models)
    assert sampler.blend_start == 0 and sampler.margin == 3
    out = sampler.sample(images, masks, _gens(0, [0]))
    dist = torch.from_numpy(distance_transform_edt(masks[0].numpy() == 0))
    changed = (out[0] != images[0]).any(0)
    assert not changed[dist >= 3].any()
    assert changed[masks[0] > 0].all()


def test_blend_start_is_validated() -> None:
    with pytest.raises(ValueError, match="blend_start"):
        SamplerConfig(blend_start=-1)
