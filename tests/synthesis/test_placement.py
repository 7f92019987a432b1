"""Placement: replay, anatomy rules (body, chest wall, breast fraction, margin to a real tumor), errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from synbt_factory.store import CaseStore
from synbt_factory.synthesis.bank import TumorBank, build_bank
from synbt_factory.synthesis.placement import (
    PlacementConfig,
    PlacementContext,
    PlacementError,
    PlacementRecord,
    apply_placement,
    body_mask,
    chest_wall_mask,
    context_from_store,
    intensity_breast_mask,
    place_tumor,
    sample_placement,
)

SHAPE = (64, 56, 40)  # RAS: axis 1 grows anterior


def _anatomy(seed: int, *, tumor: bool):
    """Chest block (posterior), two hemispherical breasts (anterior), FGT patches, optional tumor."""
    rng = np.random.default_rng(seed)
    x, y, z = np.indices(SHAPE)
    chest = (y >= 4) & (y < 26) & (x >= 3) & (x < 61) & (z >= 2) & (z < 38)
    breast = np.zeros(SHAPE, bool)
    for cx in (18, 46):
        breast |= ((x - cx) ** 2 + (y - 26) ** 2 + (z - 20) ** 2 < 15**2) & (y >= 26)
    body = chest | breast
    fgt = breast & (np.sin(x / 3.0 + rng.uniform(0, 6)) * np.sin(z / 3.0 + rng.uniform(0, 6)) > 0.1) & (y < 36)
    pre = np.where(body, 0.5, 0.01) + np.where(breast & ~fgt, 0.4, 0.0)
    post = pre * np.where(fgt, 1.2, 1.0)
    mask = np.zeros(SHAPE, np.uint8)
    if tumor:
        t = ((x - 18) / 4.0) ** 2 + ((y - 32) / 3.0) ** 2 + ((z - 20) / 3.5) ** 2 < 1
        mask[t] = 1
        post = np.where(t, 2.5 * pre, post)
    image = np.stack([pre, post]).astype(np.float32)
    return image, mask, fgt, breast, body


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> TumorBank:
    root = tmp_path_factory.mktemp("placement")
    store = CaseStore.create(root / "p.zarr", kind="prepared", card={})
    for i in range(3):
        image, mask, fgt, breast, _ = _anatomy(i, tumor=True)
        store.write_case(f"P{i}", {"image": image.astype(np.float16), "mask": mask,
                                   "tissue": (fgt * 2).astype(np.uint8), "breast": breast.astype(np.uint8)},
                         {"affine": np.eye(4).tolist(), "spacing": [1.0] * 3, "split": "train"})
    return build_bank(store, root / "bank.zarr")


def test_body_mask_from_image_matches_anatomy() -> None:
    image, _, _, _, body = _anatomy(0, tumor=False)
    derived = body_mask(image)
    assert (derived ^ body).sum() / body.sum() < 0.03


def test_chest_wall_is_posterior_to_the_breast() -> None:
    _, _, _, breast, body = _anatomy(0, tumor=False)
    wall = chest_wall_mask(body, breast)
    assert not (wall & breast).any()
    assert wall[:, :26].sum() > 0.9 * (body[:, :26]).sum()  # the chest block is wall
    assert not wall[:, 27:].any()  # nothing anterior to the breast base


def test_intensity_breast_fallback_finds_the_breasts() -> None:
    _, _, _, breast, body = _anatomy(0, tumor=False)
    guess = intensity_breast_mask(body)
    inter = (guess & breast).sum()
    assert 2 * inter / (guess.sum() + breast.sum()) > 0.8


@pytest.mark.parametrize("tumor", [True, False])
def test_replaying_a_record_gives_the_identical_mask(bank: TumorBank, tumor: bool) -> None:
    image, mask, fgt, breast, body = _anatomy(5, tumor=tumor)
    ctx = PlacementContext.build(image, mask=mask, fgt=fgt, breast=breast, body=body)
    rng = np.random.default_rng(11)
    fresh = TumorBank.open(bank.location)
    for _ in range(15):
        placed, record = place_tumor(rng, bank, ctx)
        again = PlacementRecord.from_dict(record.to_dict())
        assert again == record
        replay = apply_placement(again, fresh, SHAPE)
        assert replay.dtype == np.uint8
        assert np.array_equal(replay, placed)


def test_template_never_leaves_the_body_nor_enters_the_chest_wall(bank: TumorBank) -> None:
    image, mask, fgt, breast, _ = _anatomy(3, tumor=True)
    config = PlacementConfig(min_in_breast=0.8, overlap_margin_mm=4.0)
    ctx = PlacementContext.build(image, mask=mask, fgt=fgt, breast=breast, config=config)  # body from the image
    body = body_mask(image)
    wall = chest_wall_mask(body, breast & body)
    dist_to_tumor = ndimage.distance_transform_edt(mask == 0)
    rng = np.random.default_rng(0)
    for _ in range(40):
        placed, record = place_tumor(rng, bank, ctx, config)
        p = placed > 0
        assert p.any()
        assert not (p & ~body).any()
        assert not (p & wall).any()
        assert (p & breast).sum() / p.sum() >= 0.8
        assert dist_to_tumor[p].min() > 4.0
        assert record.in_breast_fraction >= 0.8
        _, n = ndimage.label(p, structure=np.ones((3, 3, 3)))
        assert n == 1


def test_centres_are_in_fibroglandular_tissue(bank: TumorBank) -> None:
    image, mask, fgt, breast, body = _anatomy(4, tumor=False)
    ctx = PlacementContext.build(image, mask=mask, fgt=fgt, breast=breast, body=body)
    assert ctx.centre_region == "fgt"
    depth = ndimage.distance_transform_edt(breast)
    rng = np.random.default_rng(2)
    for _ in range(20):
        record = sample_placement(rng, bank, ctx)
        assert fgt[record.centre]
        assert depth[record.centre] > PlacementConfig().edge_margin_mm  # off the skin and the chest wall


def test_healthy_background_without_fgt_falls_back_to_breast(bank: TumorBank) -> None:
    image, _, _, breast, body = _anatomy(4, tumor=False)
    ctx = PlacementContext.build(image, fgt=None, breast=breast, body=body)
    assert ctx.centre_region == "breast"
    placed, record = place_tumor(np.random.default_rng(0), bank, ctx)
    assert record.centre_region == "breast" and placed.any()


def test_impossible_placement_raises_with_reasons(bank: TumorBank) -> None:
    image, _, _, _, body = _anatomy(0, tumor=False)
    breast = np.zeros(SHAPE, bool)
    breast[18, 30:32, 20] = True  # two voxels: no template fits 80 % inside
    config = PlacementConfig(max_templates=3, centres_per_template=4, max_diameter_fraction=2.0, size_relative=False)
    ctx = PlacementContext.build(image, fgt=breast, breast=breast, body=body, config=config)
    with pytest.raises(PlacementError, match=r"no acceptable placement in 12 tries \(12× "):
        place_tumor(np.random.default_rng(0), bank, ctx, config)


def test_size_is_capped_by_breast_size(bank: TumorBank) -> None:
    image, mask, fgt, breast, body = _anatomy(1, tumor=False)
    config = PlacementConfig(max_diameter_fraction=0.1, min_in_breast=0.5)
    ctx = PlacementContext.build(image, fgt=fgt, breast=breast, body=body, config=config)
    rng = np.random.default_rng(0)
    cap = 0.1 * ctx.breast_size_mm
    for _ in range(10):
        placed, _ = place_tumor(rng, bank, ctx, config)
        diameter = (6 * placed.sum() / np.pi) ** (1 / 3)
        assert diameter < cap + 2.5  # voxelisation of a tiny shape adds at most a couple of mm


def test_context_from_store_prefers_predicted_tissue(bank: TumorBank, tmp_path: Path) -> None:
    image, mask, fgt, breast, _ = _anatomy(2, tumor=True)
    store = CaseStore.create(tmp_path / "s.zarr", kind="prepared", card={})
    store.write_case("S0", {"image": image.astype(np.float16), "mask": mask, "tissue": (fgt * 2).astype(np.uint8),
                            "breast": breast.astype(np.uint8)},
                     {"affine": np.eye(4).tolist(), "spacing": [1.0] * 3})
    assert context_from_store(store, "S0").notes["fgt_source"] == "tissue"
    pred = np.zeros(SHAPE, np.uint8)
    pred[40:50, 30:34, 15:25] = 1
    store.add_arrays("S0", {"tissue_pred": pred, "breast_pred": breast.astype(np.uint8)})
    ctx = context_from_store(store, "S0")
    assert ctx.notes["fgt_source"] == "tissue_pred"
    assert np.array_equal(ctx.fgt, pred.astype(bool) & ctx.breast)
