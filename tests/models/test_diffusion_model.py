"""Mask-conditioned denoiser, its schedulers and the conditioning helpers (tumor removal, down(M))."""

from __future__ import annotations

import pytest
import torch

from synbt_factory.config import config_from_dict, config_to_dict
from synbt_factory.models.autoencoder import LatentNorm
from synbt_factory.models.diffusion import (
    DIFFUSION_PRESETS,
    DiffusionConfig,
    MaskConditionedDenoiser,
    diffusion_preset,
    dilate,
    downsample_mask,
    guided_noise,
    make_ddim_scheduler,
    make_train_scheduler,
    null_condition,
    remove_region,
    smooth_fill,
)


def test_denoiser_maps_17_channels_to_8() -> None:
    cfg = diffusion_preset("tiny")
    assert (cfg.in_channels, cfg.cond_channels, cfg.spatial_divisor) == (17, 9, 2)
    net = MaskConditionedDenoiser(cfg).eval()
    assert net.unet.conv_in.conv.in_channels == 17
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 8, 8, 6, 4, generator=g)
    cond = torch.randn(2, 9, 8, 6, 4, generator=g)
    with torch.no_grad():
        eps = net(z, torch.tensor([0, 999]), cond)
    assert eps.shape == (2, 8, 8, 6, 4)


def test_guided_noise_extrapolates_from_the_no_tumor_prediction() -> None:
    torch.manual_seed(0)
    net = MaskConditionedDenoiser(diffusion_preset("tiny")).eval()
    for p in net.parameters():  # MONAI zero-initialises the output layers: give them weights
        if p.dim() > 1 and not bool(p.any()):
            torch.nn.init.normal_(p, std=0.05)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 8, 8, 6, 4, generator=g)
    cond = torch.rand(2, 9, 8, 6, 4, generator=g)
    t = torch.tensor([999, 99])
    null = null_condition(cond)
    assert torch.equal(null[:, :8], cond[:, :8]) and not bool(null[:, 8].any())
    with torch.no_grad():
        eps_mask, eps_null = net(z, t, cond), net(z, t, null)
        assert not torch.allclose(eps_mask, eps_null)  # the mask channel matters
        assert torch.equal(guided_noise(net, z, t, cond, 1.0), eps_mask)
        for scale in (0.0, 2.5):
            expected = eps_null + scale * (eps_mask - eps_null)
            assert torch.allclose(guided_noise(net, z, t, cond, scale), expected, atol=1e-5)


def test_paper_preset_is_difftumor_sized() -> None:
    cfg = diffusion_preset("paper")
    assert cfg.channels == (24, 48, 96, 192) and cfg.num_train_timesteps == 1000
    assert cfg.spatial_divisor == 8  # 32×48×48 latent divides
    assert all(s % cfg.spatial_divisor == 0 for s in (32, 48, 48))


def test_denoiser_rejects_wrong_channels_and_sizes() -> None:
    net = MaskConditionedDenoiser(diffusion_preset("tiny"))
    with pytest.raises(ValueError, match="channels"):
        net(torch.zeros(1, 8, 4, 4, 4), torch.tensor([1]), torch.zeros(1, 8, 4, 4, 4))
    with pytest.raises(ValueError, match="multiple of 2"):
        net(torch.zeros(1, 8, 5, 4, 4), torch.tensor([1]), torch.zeros(1, 9, 5, 4, 4))


@pytest.mark.parametrize(
    "field,value",
    [
        ("norm_num_groups", 3),
        ("fill", "noise"),
        ("mask_down", "median"),
        ("attention_levels", (True,)),
        ("beta_end", 1e-5),
        ("mask_dilation", -1),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    base = config_to_dict(diffusion_preset("tiny"))
    base[field] = value
    with pytest.raises(ValueError, match=field if field != "beta_end" else "beta"):
        config_from_dict(DiffusionConfig, base)


def test_presets_round_trip_through_dicts() -> None:
    for cfg in DIFFUSION_PRESETS.values():
        assert config_from_dict(DiffusionConfig, config_to_dict(cfg)) == cfg


def test_ddim_timesteps_match_step_targets() -> None:
    cfg = diffusion_preset("tiny")
    sched = make_ddim_scheduler(cfg, 10)
    ts = sched.timesteps.tolist()
    assert ts[0] == 999 and ts[-1] == 99
    ratio = cfg.num_train_timesteps // 10
    assert all(a - ratio == b for a, b in zip(ts, ts[1:], strict=False))  # each step lands on the next model call's t
    train = make_train_scheduler(cfg)
    assert torch.allclose(train.alphas_cumprod, sched.alphas_cumprod)


def test_standardised_norm_composes_with_its_base_and_moves_the_clip_range() -> None:
    codebook = torch.tensor([[-3.0, 1.0], [5.0, 0.0]])
    base = LatentNorm.from_codebook(codebook)
    assert base.clip == (-1.0, 1.0) and base.normalise(codebook).min() == -1.0 and base.normalise(codebook).max() == 1.0
    z = torch.linspace(-2.0, 4.0, 7)
    std = base.standardised(0.25, 0.1)
    assert torch.allclose(std.normalise(z), (base.normalise(z) - 0.25) / 0.1)
    assert torch.allclose(std.denormalise(std.normalise(z)), z)
    assert std.clip == pytest.approx((std.normalise(codebook).min().item(), std.normalise(codebook).max().item()))
    assert LatentNorm(**{"shift": 0.0, "scale": 1.0, "clip": [-2, 3]}).clip == (-2.0, 3.0)  # as read from a checkpoint
    with pytest.raises(ValueError, match="clip"):
        LatentNorm(clip=(1.0, -1.0))
    with pytest.raises(ValueError, match="std"):
        base.standardised(0.0, 0.0)


def test_ddim_clips_the_predicted_latent_to_the_given_range() -> None:
    cfg = diffusion_preset("tiny")
    x = torch.zeros(1, 1, 2, 2, 2)
    eps = torch.full_like(x, -50.0)  # predicted z0 far above any range
    for low, high in ((-1.0, 1.0), (-6.0, 4.0)):
        sched = make_ddim_scheduler(cfg, 10, clip_range=(low, high))
        t = int(sched.timesteps[-1])  # last step: the output is the clipped z0 itself
        out, z0 = sched.step(eps, t, x)
        assert torch.allclose(z0, torch.full_like(x, high)) and torch.allclose(out, z0)


def test_removed_region_is_filled_from_its_surroundings_and_rest_kept() -> None:
    g = torch.Generator().manual_seed(1)
    x = 0.5 + 0.1 * torch.rand(1, 2, 24, 24, 16, generator=g)
    x[:, 1, 8:16, 8:16, 4:12] = 3.0  # a bright "tumor" in the post-contrast channel
    mask = torch.zeros(1, 24, 24, 16, dtype=torch.uint8)
    mask[0, 9:15, 9:15, 5:11] = 1
    filled, hole = remove_region(x, mask, dilation=1, fill="smooth")
    assert torch.equal(hole[0, 0], dilate(mask[:, None] > 0, 1)[0, 0])
    assert torch.equal(filled[:, :, ~hole[0, 0]], x[:, :, ~hole[0, 0]])
    inside = filled[0, 1][hole[0, 0]]
    assert inside.max() < 3.0 and inside.min() >= 0.5 - 1e-6  # the tumor's brightness is gone, the fill is tissue-like
    zeros, _ = remove_region(x, mask, dilation=1, fill="zeros")
    assert torch.count_nonzero(zeros[:, :, hole[0, 0]]) == 0


def test_smooth_fill_reproduces_a_linear_ramp_approximately() -> None:
    ramp = torch.linspace(0, 1, 32).view(1, 1, 32, 1, 1).expand(1, 1, 32, 32, 16).clone()
    hole = torch.zeros(1, 1, 32, 32, 16, dtype=torch.bool)
    hole[..., 12:20, 12:20, 4:12] = True
    filled = smooth_fill(ramp, hole)
    assert (filled - ramp).abs().max() < 0.15


def test_downsample_mask_mean_and_max() -> None:
    m = torch.zeros(1, 8, 8, 8, dtype=torch.uint8)
    m[0, 0, 0, 0] = 1
    assert downsample_mask(m, 4, "mean")[0, 0, 0, 0, 0] == pytest.approx(1 / 64)
    assert downsample_mask(m, 4, "max")[0, 0, 0, 0, 0] == 1.0
    assert downsample_mask(m, 4).shape == (1, 1, 2, 2, 2)
    with pytest.raises(ValueError, match="multiple"):
        downsample_mask(torch.zeros(1, 6, 8, 8), 4)
