"""PSNR / SSIM wrappers and the patch-grid artifact score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synbt_factory.evaluate.quality import channel_quality, grid_artifact_score, psnr, ssim


def _smooth_volume(shape=(128, 96, 80), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    vol = np.sin(5 * x + 1) * np.cos(4 * y) + 0.5 * np.sin(6 * z + 2 * x)
    return vol + 0.01 * rng.standard_normal(shape)


def test_grid_score_is_one_on_a_smooth_volume() -> None:
    score = grid_artifact_score(_smooth_volume(), patch=64)
    assert 0.95 < score < 1.05


def test_grid_score_rises_with_injected_patch_boundary_steps() -> None:
    vol = _smooth_volume()
    rng = np.random.default_rng(1)
    stepped = vol.copy()
    for i in range(0, 128, 64):
        for j in range(0, 96, 64):
            for k in range(0, 80, 64):
                stepped[i : i + 64, j : j + 64, k : k + 64] += rng.uniform(-0.2, 0.2)
    clean, grid = grid_artifact_score(vol, patch=64), grid_artifact_score(stepped, patch=64)
    assert grid > 1.5 * clean
    # the same steps shifted off the encoder grid are not counted as grid artifacts
    assert grid_artifact_score(stepped, patch=64, offset=(32, 32, 32)) < 1.1


def test_grid_score_pools_channels_and_rejects_volumes_without_boundaries() -> None:
    vol = np.stack([_smooth_volume(), _smooth_volume(seed=2)])
    assert 0.9 < grid_artifact_score(vol, patch=64) < 1.1
    with pytest.raises(ValueError, match="no patch boundary"):
        grid_artifact_score(np.random.default_rng(0).random((32, 32, 32)), patch=64)


def test_psnr_matches_its_definition() -> None:
    rng = np.random.default_rng(3)
    target = rng.random((24, 24, 24)).astype(np.float32)
    pred = target + rng.normal(0, 0.05, target.shape).astype(np.float32)
    mse = float(np.mean((pred - target) ** 2))
    expected = 20 * math.log10(float(target.max() - target.min())) - 10 * math.log10(mse)
    assert psnr(pred, target) == pytest.approx(expected, abs=1e-3)


def test_ssim_is_one_for_identical_and_lower_for_noisy_volumes() -> None:
    target = _smooth_volume((32, 32, 32)).astype(np.float32)
    noisy = target + np.random.default_rng(4).normal(0, 0.3, target.shape).astype(np.float32)
    assert ssim(target, target) == pytest.approx(1.0, abs=1e-5)
    assert ssim(noisy, target) < 0.9


def test_channel_quality_reports_each_channel() -> None:
    target = np.stack([_smooth_volume((24, 24, 24)), 2 * _smooth_volume((24, 24, 24), seed=5)]).astype(np.float32)
    pred = target.copy()
    pred[1] += 0.2
    q = channel_quality(pred, target)
    assert len(q["psnr"]) == 2 and math.isinf(q["psnr"][0]) and math.isfinite(q["psnr"][1])
    assert q["ssim"][0] == pytest.approx(1.0, abs=1e-5) and q["ssim"][1] < 1.0


def test_grid_score_with_cell_ignores_a_cell_periodic_texture_but_sees_seams() -> None:
    """A 4-periodic pattern (a decoder's upsampling texture) raises the plain score, not the cell-matched one."""
    vol = _smooth_volume()
    x = np.arange(vol.shape[0])[:, None, None]
    textured = vol + 0.05 * ((x % 4) == 0)  # a step up at every 4th voxel: every patch boundary is one
    assert grid_artifact_score(textured, patch=64) > 1.1
    assert 0.95 < grid_artifact_score(textured, patch=64, cell=4) < 1.05
    seamed = textured.copy()
    seamed[64:] += 0.2
    assert grid_artifact_score(seamed, patch=64, cell=4) > 1.5
    with pytest.raises(ValueError, match="cell"):
        grid_artifact_score(vol, patch=64, cell=6)


def test_body_psnr_is_not_inflated_by_padding() -> None:
    from synbt_factory.evaluate.quality import masked_psnr

    rng = np.random.default_rng(0)
    target = np.zeros((2, 48, 48, 32), np.float32)  # 96 % zero padding around a small body
    target[:, 18:30, 18:30, 12:20] = rng.uniform(0.5, 1.5, (2, 12, 12, 8))
    body = target[0] > 0
    black = np.zeros_like(target)
    q = channel_quality(black, target, mask=body)
    assert q["psnr"][0] > 20.0  # the whole volume rewards predicting the padding
    assert q["psnr_masked"][0] < 5.0  # inside the body an all-black reconstruction is hopeless
    mse = float(np.mean((target[0][body]) ** 2))
    assert q["psnr_masked"][0] == pytest.approx(10 * math.log10(float(np.ptp(target[0])) ** 2 / mse), rel=1e-5)
    assert math.isnan(masked_psnr(black[0], target[0], np.zeros_like(body)))
