"""Tumor bank: extraction of every component, closed single-component augmentation, replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from synbt_factory.store import CaseStore, StoreError
from synbt_factory.synthesis.augment import AugmentConfig, AugmentRecord, apply_augment, draw_augment
from synbt_factory.synthesis.bank import TemplateRecord, TumorBank, build_bank

SHAPE = (48, 48, 32)


def _blob(centre, radii, shape=SHAPE) -> np.ndarray:
    g = np.indices(shape).astype(np.float32)
    return sum(((g[i] - centre[i]) / radii[i]) ** 2 for i in range(3)) <= 1.0


def _store(path: Path) -> CaseStore:
    """Three train cases (two components each, one case a C-shape with a hole) and one test case."""
    store = CaseStore.create(path, kind="prepared", card={})
    for i in range(4):
        main = _blob((20 + i, 24, 16), (6, 4, 5))
        if i == 1:  # a hollow shell: the bank keeps it, augmentation must close it
            main &= ~_blob((21, 24, 16), (3, 2, 2))
        sat = _blob((36, 30, 16), (1.6, 1.6, 1.6))
        mask = (main | sat).astype(np.uint8)
        image = np.stack([np.full(SHAPE, 0.5), np.where(mask > 0, 1.25, 0.55)]).astype(np.float16)
        breast = np.zeros(SHAPE, np.uint8)
        breast[8:40, 16:44, 4:28] = 1
        store.write_case(
            f"C{i}",
            {"image": image, "mask": mask, "breast": breast},
            {
                "affine": np.eye(4).tolist(),
                "spacing": [1.0, 1.0, 1.0],
                "split": "train" if i < 3 else "test",
                "dataset": "TOY",
            },
        )
    return store


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> TumorBank:
    root = tmp_path_factory.mktemp("bank")
    return build_bank(_store(root / "p.zarr"), root / "bank.zarr")


def test_every_component_of_train_cases_becomes_a_template(bank: TumorBank) -> None:
    assert len(bank) == 6  # 3 train cases × 2 components; the test case is left out
    assert {t.source_case for t in bank.templates} == {"C0", "C1", "C2"}
    big = [t for t in bank.templates if t.component == 1]
    small = [t for t in bank.templates if t.component == 2]
    assert all(t.volume_mm3 > 5 * s.volume_mm3 for t in big for s in small)
    for t in bank.templates:
        mask = bank.template(t.template_id)
        assert int(mask.sum()) == t.voxels
        assert tuple(mask.shape) == tuple(t.shape)
        _, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        assert n == 1
        assert t.breast_size_mm is not None and t.breast_size_mm > 10
        assert t.post_mean / t.pre_mean == pytest.approx(2.5, rel=0.01)


def test_templates_stay_single_closed_components_after_augmentation(bank: TumorBank) -> None:
    rng = np.random.default_rng(1)
    config = AugmentConfig(elastic_range=(0.05, 0.1), max_angle_deg=30)
    for t in bank.templates:
        for _ in range(8):
            out = apply_augment(bank.template(t.template_id), draw_augment(rng, config)) > 0
            _, n = ndimage.label(out, structure=np.ones((3, 3, 3)))
            assert n == 1
            assert np.array_equal(ndimage.binary_fill_holes(out), out)
            assert not out[0].any() and not out[-1].any()  # cropped with a zero border


def test_hollow_template_is_closed_by_augmentation(bank: TumorBank) -> None:
    hollow = [t for t in bank.templates if t.source_case == "C1" and t.component == 1][0]
    stored = bank.template(hollow.template_id) > 0
    assert not np.array_equal(ndimage.binary_fill_holes(stored), stored)  # the bank keeps the real mask
    out = apply_augment(stored, AugmentRecord()) > 0
    assert np.array_equal(ndimage.binary_fill_holes(out), out)


def test_zoom_scales_volume(bank: TumorBank) -> None:
    t = bank.templates[0]
    base = apply_augment(bank.template(t.template_id), AugmentRecord()).sum()
    big = apply_augment(bank.template(t.template_id), AugmentRecord(zoom=(1.3, 1.3, 1.3))).sum()
    assert big / base == pytest.approx(1.3**3, rel=0.15)


def test_sample_replays_identically_from_its_record(bank: TumorBank, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    reopened = TumorBank.open(bank.location)
    for _ in range(10):
        mask, record = bank.sample(rng)
        again = TemplateRecord.from_dict(record.to_dict())
        assert again == record
        assert np.array_equal(reopened.render(again), mask)


def test_same_generator_state_gives_same_draws(bank: TumorBank) -> None:
    a = [bank.sample(np.random.default_rng(3))[1] for _ in range(2)]
    assert a[0] == a[1]


def test_open_rejects_other_store_kinds(tmp_path: Path) -> None:
    store = _store(tmp_path / "p.zarr")
    with pytest.raises(StoreError, match="not a tumor bank"):
        TumorBank.open(store.location)


def test_build_fails_clearly_without_tumors(tmp_path: Path) -> None:
    store = CaseStore.create(tmp_path / "h.zarr", kind="prepared", card={})
    store.write_case(
        "H0",
        {"image": np.zeros((2, *SHAPE), np.float16), "mask": np.zeros(SHAPE, np.uint8)},
        {"affine": np.eye(4).tolist(), "spacing": [1.0] * 3, "split": "train"},
    )
    with pytest.raises(StoreError, match="no tumor component"):
        build_bank(store, tmp_path / "b.zarr")


def test_draw_skips_templates_below_the_minimum_size(bank: TumorBank) -> None:
    rng = np.random.default_rng(0)
    every = {bank.meta(bank.draw(rng).template_id).component for _ in range(40)}
    assert every == {1, 2}  # main tumors and satellites
    big = {bank.meta(bank.draw(rng, min_voxels=100).template_id).component for _ in range(40)}
    assert big == {1}
    with pytest.raises(StoreError, match="min_template_voxels"):
        bank.draw(rng, min_voxels=10**6)
