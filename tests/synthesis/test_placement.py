"""Placement: replay, anatomy rules (body, chest wall, breast fraction, margin to a real tumor), errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from synbt_factory.store import CaseStore
from synbt_factory.synthesis.background_context import context_from_store
from synbt_factory.synthesis.bank import TumorBank, breast_size_mm, build_bank
from synbt_factory.synthesis.placement import (
    PlacementConfig,
    PlacementContext,
    PlacementError,
    PlacementRecord,
    apply_placement,
    body_mask,
    chest_wall_mask,
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
        store.write_case(
            f"P{i}",
            {
                "image": image.astype(np.float16),
                "mask": mask,
                "tissue": (fgt * 2).astype(np.uint8),
                "breast": breast.astype(np.uint8),
            },
            {"affine": np.eye(4).tolist(), "spacing": [1.0] * 3, "split": "train"},
        )
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
    config = PlacementConfig(
        max_templates=3, centres_per_template=4, max_diameter_fraction=2.0, size_relative=False, min_template_voxels=1
    )
    ctx = PlacementContext.build(image, fgt=breast, breast=breast, body=body, config=config)
    with pytest.raises(PlacementError, match=r"no acceptable placement in 12 tries \(12× "):
        place_tumor(np.random.default_rng(0), bank, ctx, config)


def test_size_is_capped_by_breast_size(bank: TumorBank) -> None:
    image, mask, fgt, breast, body = _anatomy(1, tumor=False)
    config = PlacementConfig(max_diameter_fraction=0.1, min_in_breast=0.5, min_template_voxels=1)
    ctx = PlacementContext.build(image, fgt=fgt, breast=breast, body=body, config=config)
    rng = np.random.default_rng(0)
    cap = 0.1 * ctx.breast_size_mm
    for _ in range(10):
        placed, _ = place_tumor(rng, bank, ctx, config)
        diameter = (6 * placed.sum() / np.pi) ** (1 / 3)
        assert diameter < cap + 2.5  # voxelisation of a tiny shape adds at most a couple of mm


def test_each_placement_records_whether_the_breast_size_cap_bound(bank: TumorBank) -> None:
    image, mask, fgt, breast, body = _anatomy(1, tumor=False)
    tight = PlacementConfig(max_diameter_fraction=0.1, min_in_breast=0.5, min_template_voxels=1)
    loose = PlacementConfig(max_diameter_fraction=2.0, min_in_breast=0.5, min_template_voxels=1)
    for config, capped in ((tight, True), (loose, False)):
        ctx = PlacementContext.build(image, fgt=fgt, breast=breast, body=body, config=config)
        rng = np.random.default_rng(3)
        records = [place_tumor(rng, bank, ctx, config)[1] for _ in range(6)]
        assert all(r.size_capped is capped for r in records)
        assert all(r.breast_size_mm == pytest.approx(ctx.breast_size_mm) for r in records)
        assert PlacementRecord.from_dict(records[0].to_dict()) == records[0]


def test_templates_zoomed_below_the_minimum_size_are_drawn_again(bank: TumorBank) -> None:
    image, _, fgt, breast, body = _anatomy(1, tumor=False)
    smallest = min(t.voxels for t in bank.templates)
    config = PlacementConfig(min_in_breast=0.5, min_template_voxels=smallest, max_templates=40)
    ctx = PlacementContext.build(image, fgt=fgt, breast=breast, body=body, config=config)
    rng = np.random.default_rng(0)
    records = [place_tumor(rng, bank, ctx, config)[1] for _ in range(12)]
    assert min(r.voxels for r in records) >= smallest
    any_size = PlacementConfig(min_in_breast=0.5, min_template_voxels=1)
    sizes = [place_tumor(rng, bank, ctx, any_size)[1].voxels for _ in range(12)]
    assert min(sizes) < smallest  # without the rule, zoom makes some smaller than any template
    huge = PlacementConfig(min_in_breast=0.5, min_template_voxels=smallest, max_templates=2, max_diameter_fraction=0.05)
    ctx_huge = PlacementContext.build(image, fgt=fgt, breast=breast, body=body, config=huge)
    with pytest.raises(PlacementError, match="once zoomed and scaled"):
        place_tumor(rng, bank, ctx_huge, huge)


def test_context_from_store_prefers_predicted_tissue(bank: TumorBank, tmp_path: Path) -> None:
    image, mask, fgt, breast, _ = _anatomy(2, tumor=True)
    store = CaseStore.create(tmp_path / "s.zarr", kind="prepared", card={})
    store.write_case(
        "S0",
        {
            "image": image.astype(np.float16),
            "mask": mask,
            "tissue": (fgt * 2).astype(np.uint8),
            "breast": breast.astype(np.uint8),
        },
        {"affine": np.eye(4).tolist(), "spacing": [1.0] * 3},
    )
    assert context_from_store(store, "S0").notes["fgt_source"] == "tissue"
    pred = np.zeros(SHAPE, np.uint8)
    pred[40:50, 30:34, 15:25] = 1
    store.add_arrays("S0", {"tissue_pred": pred, "breast_pred": breast.astype(np.uint8)})
    ctx = context_from_store(store, "S0")
    assert ctx.notes["fgt_source"] == "tissue_pred"
    assert np.array_equal(ctx.fgt, pred.astype(bool) & ctx.breast)


def test_breast_sizes_are_compared_only_on_the_same_kind_of_mask(tmp_path: Path) -> None:
    image, mask, fgt, breast, _ = _anatomy(0, tumor=True)
    apart = breast & (np.abs(np.indices(SHAPE)[0] - 32) > 1)  # the model's mask: the two breasts do not touch
    assert ndimage.label(breast)[1] == 1 and ndimage.label(apart)[1] == 2
    arrays = {
        "image": image.astype(np.float16),
        "mask": mask,
        "tissue": (fgt * 2).astype(np.uint8),
        "breast": breast.astype(np.uint8),
    }
    predicted = {"tissue_pred": fgt.astype(np.uint8), "breast_pred": apart.astype(np.uint8)}
    attrs = {"affine": np.eye(4).tolist(), "spacing": [1.0] * 3, "split": "train"}
    labels = CaseStore.create(tmp_path / "labels.zarr", kind="prepared", card={})
    labels.write_case("P0", arrays, attrs)
    both = CaseStore.create(tmp_path / "both.zarr", kind="prepared", card={})
    both.write_case("P0", {**arrays, **predicted}, attrs)
    ctx = context_from_store(both, "P0")
    assert ctx.notes["breast_source"] == "breast_pred"
    config = PlacementConfig(min_in_breast=0.5)
    same = build_bank(both, tmp_path / "same.zarr")
    assert {t.breast_source for t in same.templates} == {"breast_pred"}
    _, record = place_tumor(np.random.default_rng(0), same, ctx, config)
    assert ctx.breast_size_mm == same.templates[0].breast_size_mm  # same case, same mask, same measure
    assert record.template.scale == pytest.approx(1.0, abs=1e-9)
    other = build_bank(labels, tmp_path / "other.zarr")
    assert {t.breast_source for t in other.templates} == {"breast"}
    assert other.templates[0].breast_size_mm > 1.2 * ctx.breast_size_mm  # labels measure both breasts as one
    _, record = place_tumor(np.random.default_rng(0), other, ctx, config)
    assert record.template.scale == 1.0  # not compared, so not shrunk


def test_breast_is_sized_as_given_even_where_the_anatomical_prior_trims_it() -> None:
    image, _, _, breast, body = _anatomy(0, tumor=False)
    given = breast | (body & (np.indices(SHAPE)[1] >= 6))  # a poor model's mask reaching deep into the chest
    ctx = PlacementContext.build(image, breast=given)
    assert ctx.breast.sum() < 0.9 * given.sum()  # the prior keeps tumors out of the chest
    assert ctx.breast_size_mm == breast_size_mm(given)  # but the size is the bank's measure of the same mask


@pytest.fixture(scope="module")
def phantom_store(tmp_path_factory) -> CaseStore:
    """Five tiny procedural phantom cases, prepared (the realistic end-to-end input)."""
    from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
    from synbt_factory.phantom import write_phantom

    root = tmp_path_factory.mktemp("phantom")
    write_phantom(root / "ph", n=5, seed=0, size="tiny")
    result = prepare_dataset(root / "ph", root / "p.zarr", config=PrepareConfig(fov_mm=(64, 64, 48)), workers=1)
    assert not result.failed
    return CaseStore.open(root / "p.zarr")


def test_phantom_placements_obey_the_rules_and_replay(phantom_store: CaseStore, tmp_path: Path) -> None:
    from synbt_factory.synthesis.syntumor import EnhancementStats, blurred_mask, syntumor_insert

    bank = build_bank(phantom_store, tmp_path / "bank.zarr")
    assert {t.source_case for t in bank.templates} <= {
        c for c in phantom_store.case_ids() if phantom_store.case_attrs(c)["split"] == "train"
    }
    stats = EnhancementStats.from_store(phantom_store)
    assert 1.3 < float(np.median(stats.ratios)) < 4.0  # the phantom's tumors enhance
    rng = np.random.default_rng(0)
    for case_id in phantom_store.case_ids():
        arrays, _ = phantom_store.read_case(case_id, ("image", "mask", "tissue", "breast"))
        image = arrays["image"].astype(np.float32)
        ctx = context_from_store(phantom_store, case_id)
        body = body_mask(image)
        wall = chest_wall_mask(body, (arrays["breast"] > 0) & body)
        for _ in range(8):
            placed, record = place_tumor(rng, bank, ctx)
            p = placed > 0
            assert not (p & (~body | wall)).any()
            assert (p & (arrays["breast"] > 0)).sum() / p.sum() >= 0.8
            assert not (p & (arrays["mask"] > 0)).any()
            assert np.array_equal(apply_placement(PlacementRecord.from_dict(record.to_dict()), bank), placed)
        new, tumor, rec = syntumor_insert(image, placed, rng, stats)
        outside = blurred_mask(tumor, rec.edge_sigma) == 0
        assert np.array_equal(new[:, outside], image[:, outside])
        assert new[1][p].mean() / new[0][p].mean() == pytest.approx(rec.ratio, rel=0.05)


def test_breast_mask_reaching_into_the_heart_is_cut_by_the_anatomical_prior() -> None:
    """A tissue model that calls the heart 'breast' must not get tumors placed there."""
    from synbt_factory.phantom import PRESETS, make_phantom_case
    from synbt_factory.synthesis.placement import PlacementContext

    case = None
    for index in range(8):  # the first RAS-stored tumor case of the tiny preset
        c = make_phantom_case(index, seed=0, config=PRESETS["tiny"])
        import nibabel as nib

        if nib.aff2axcodes(c.affine) == ("R", "A", "S"):
            case = c
            break
    assert case is not None
    pre = case.phases[0].astype(np.float32)
    post = case.phases[1].astype(np.float32)
    scale = float(np.percentile(pre, 99.5))
    image = np.stack([pre, post]) / scale
    heart = case.class_map == 6
    assert heart.any()
    bad_breast = (case.breast_mask > 0) | heart
    ctx = PlacementContext.build(image, fgt=heart, breast=bad_breast)
    assert not (ctx.breast & heart).any()
    centres = np.zeros(ctx.shape, bool).ravel()
    centres[ctx.centres] = True
    assert not (centres.reshape(ctx.shape) & heart).any()


def test_size_spread_scales_tumors_and_the_default_draws_nothing(bank: TumorBank) -> None:
    image, mask, fgt, breast, body = _anatomy(2, tumor=False)
    base = PlacementConfig(min_in_breast=0.5, min_template_voxels=1, max_diameter_fraction=2.0)
    ctx = PlacementContext.build(image, fgt=fgt, breast=breast, body=body, config=base)

    def records(config: PlacementConfig, seed: int) -> tuple[PlacementRecord, float]:
        rng = np.random.default_rng(seed)
        _, record = place_tumor(rng, bank, ctx, config)
        return record, float(rng.random())  # where the stream stands afterwards

    doubled = []
    for seed in range(4):
        default, after_default = records(base, seed)
        one, after_one = records(PlacementConfig(**{**base.__dict__, "size_spread": (1.0, 1.0)}), seed)
        assert default == one and after_default == after_one  # (1, 1) draws nothing: placements as before
        double, _ = records(PlacementConfig(**{**base.__dict__, "size_spread": (2.0, 2.0)}), seed)
        same_draw = (double.template.template_id, double.template.augment) == (
            default.template.template_id,
            default.template.augment,
        )
        doubled.append(same_draw and double.template.scale == pytest.approx(2.0 * default.template.scale))
    assert sum(doubled) >= 2  # where the larger tumor was accepted on the same draw, it is twice as large
    spread = PlacementConfig(**{**base.__dict__, "size_spread": (0.8, 2.0)})
    factors = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        template_rng = np.random.default_rng(seed)
        first = bank.draw(template_rng, min_voxels=1)
        factor = float(np.exp(template_rng.uniform(np.log(0.8), np.log(2.0))))
        _, record = place_tumor(rng, bank, ctx, spread)
        if record.template.template_id == first.template_id and record.template.augment == first.augment:
            unspread = PlacementConfig(**{**base.__dict__})
            from synbt_factory.synthesis.placement import _scale_for

            factors.append(record.template.scale / _scale_for(bank, first, ctx, unspread)[0])
            assert factors[-1] == pytest.approx(factor)
    assert factors and min(factors) >= 0.8 and max(factors) <= 2.0
    with pytest.raises(ValueError, match="size_spread"):
        PlacementConfig(size_spread=(2.0, 1.0))
