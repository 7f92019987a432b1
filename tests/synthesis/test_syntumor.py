"""SynTumor baseline: untouched voxels outside the blurred mask, DCE enhancement, replay, statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synbt_factory.store import CaseStore
from synbt_factory.synthesis.syntumor import (
    SIZE_CLASSES,
    EnhancementStats,
    SynTumorRecord,
    blurred_mask,
    syntumor_insert,
    syntumor_replay,
    texture,
)

SHAPE = (64, 80, 72)


def _background(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    body = np.zeros(SHAPE, bool)
    body[4:60, 6:74, 4:68] = True
    pre = np.where(body, 0.4, 0.0) + rng.normal(0.0, 0.02, SHAPE)
    post = pre * 1.1 + rng.normal(0.0, 0.02, SHAPE)
    image = np.stack([pre, post]).astype(np.float32)
    image[:, ~body] = rng.normal(0, 0.01, (2, int((~body).sum())))  # signed noise outside: must survive untouched
    return image, body


@pytest.mark.parametrize("size_class", SIZE_CLASSES)
def test_changes_no_voxel_outside_its_blurred_mask(size_class: str) -> None:
    image, body = _background()
    rng = np.random.default_rng(1)
    new, tumor, record = syntumor_insert(image, None, rng, EnhancementStats.default(), size_class, region=body)
    assert new.dtype == np.float32 and new.shape == image.shape
    assert tumor.any() and not (tumor.astype(bool) & ~body).any()
    weight = blurred_mask(tumor, record.edge_sigma)
    outside = weight == 0
    assert np.array_equal(new[:, outside], image[:, outside])
    assert not np.array_equal(new[1, tumor > 0], image[1, tumor > 0])
    assert record.size_class == size_class


def test_given_mask_is_textured_and_returned_unchanged() -> None:
    image, _ = _background()
    mask = np.zeros(SHAPE, np.uint8)
    mask[30:38, 40:46, 30:37] = 1
    new, tumor, record = syntumor_insert(image, mask, np.random.default_rng(0), EnhancementStats.default())
    assert np.array_equal(tumor, mask)
    assert record.size_class == "given"
    outside = blurred_mask(mask, record.edge_sigma) == 0
    assert np.array_equal(new[:, outside], image[:, outside])


def test_post_contrast_hyper_enhances_to_the_drawn_ratio_and_pre_stays_near_iso() -> None:
    image, body = _background()
    stats = EnhancementStats(ratios=(2.5,), pre_factors=(1.0,))
    for seed in range(5):
        new, tumor, record = syntumor_insert(image, None, np.random.default_rng(seed), stats, "medium", region=body)
        t = tumor > 0
        pre, post = new[0][t].mean(), new[1][t].mean()
        assert post / pre == pytest.approx(record.ratio, rel=0.03)
        assert 2.5 * 0.94 < record.ratio < 2.5 * 1.06
        assert pre / image[0][t].mean() == pytest.approx(record.pre_factor, rel=0.05)
        assert record.measured_ratio == pytest.approx(post / pre, rel=1e-4)


def test_record_replays_the_identical_image() -> None:
    image, body = _background()
    new, tumor, record = syntumor_insert(
        image, None, np.random.default_rng(3), EnhancementStats.default(), "small", region=body
    )
    again = SynTumorRecord.from_dict(record.to_dict())
    assert again == record
    assert np.array_equal(syntumor_replay(image, tumor, again), new)


def test_avoid_keeps_the_new_tumor_off_a_real_one() -> None:
    image, body = _background()
    avoid = np.zeros(SHAPE, bool)
    avoid[:, :40] = True
    for seed in range(4):
        _, tumor, _ = syntumor_insert(
            image, None, np.random.default_rng(seed), EnhancementStats.default(), "small", region=body, avoid=avoid
        )
        assert not (tumor.astype(bool) & avoid).any()


def test_texture_is_in_unit_range_deterministic_and_scaled() -> None:
    a = texture((40, 40, 40), seed=5, sigma_a=6.0, sigma_b=4.0, u0=0.52)
    b = texture((40, 40, 40), seed=5, sigma_a=6.0, sigma_b=4.0, u0=0.52)
    assert np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert 0.35 < float(a.mean()) < 0.7  # β-scaled around u0 (0.52), not a constant
    assert a.std() > 0.02
    assert not np.array_equal(a, texture((40, 40, 40), seed=6, sigma_a=6.0, sigma_b=4.0, u0=0.52))


def test_enhancement_stats_from_store_measures_real_tumors(tmp_path: Path) -> None:
    store = CaseStore.create(tmp_path / "p.zarr", kind="prepared", card={})
    image, body = _background()
    image = np.abs(image)
    for i, ratio in enumerate((2.0, 3.0)):
        mask = np.zeros(SHAPE, np.uint8)
        mask[20:28, 30:38, 30:38] = 1
        img = image.copy()
        img[0][mask > 0] = 0.4
        img[1][mask > 0] = 0.4 * ratio
        store.write_case(
            f"E{i}",
            {"image": img.astype(np.float16), "mask": mask},
            {"affine": np.eye(4).tolist(), "spacing": [1.0] * 3, "split": "train"},
        )
    store.write_case(
        "H",
        {"image": image.astype(np.float16), "mask": np.zeros(SHAPE, np.uint8)},
        {"affine": np.eye(4).tolist(), "spacing": [1.0] * 3, "split": "train"},
    )
    stats = EnhancementStats.from_store(store)
    assert stats.cases == ("E0", "E1")
    assert stats.ratios == pytest.approx((2.0, 3.0), rel=0.01)
    assert stats.pre_factors == pytest.approx((1.0, 1.0), rel=0.05)
    assert EnhancementStats.from_dict(stats.to_dict()) == stats


def test_bad_inputs_are_rejected() -> None:
    image, body = _background()
    with pytest.raises(ValueError, match="size_class"):
        syntumor_insert(image, None, np.random.default_rng(0), EnhancementStats.default(), "huge", region=body)
    with pytest.raises(ValueError, match="empty"):
        syntumor_insert(image, np.zeros(SHAPE, np.uint8), np.random.default_rng(0), EnhancementStats.default())
