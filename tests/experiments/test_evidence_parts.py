"""The evidence experiment's pieces: case split, subset stores, the learning-curve budget, the config pin."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synbt_factory.experiments.case_subsets import draw_case_split, write_subset_store
from synbt_factory.experiments.evidence import EvidenceError, _pin_config
from synbt_factory.experiments.evidence_config import EvidenceConfig
from synbt_factory.experiments.learning_curve import choose_budget, plateau_step, plot_learning_curves
from synbt_factory.store import CaseStore


def _ids(n: int) -> list[str]:
    return [f"CASE_{i:03d}" for i in range(n)]


def test_split_is_deterministic_disjoint_and_nested() -> None:
    a = draw_case_split(_ids(40), pool=10, val=5, rng=np.random.default_rng(3))
    b = draw_case_split(list(reversed(_ids(40))), pool=10, val=5, rng=np.random.default_rng(3))
    assert a == b  # depends on the ids and the generator only, not their order
    c = draw_case_split(_ids(40), pool=10, val=5, rng=np.random.default_rng(4))
    assert c != a
    parts = [set(a.train_pool), set(a.val), set(a.test)]
    assert sum(len(p) for p in parts) == 40 and len(set().union(*parts)) == 40
    assert set(a.train(4)) < set(a.train(10)) and a.train(4) == a.train_pool[:4]
    with pytest.raises(ValueError, match="cannot hold"):
        draw_case_split(_ids(12), pool=10, val=5, rng=np.random.default_rng(0))


def _prepared(tmp_path: Path, n: int = 4) -> Path:
    location = tmp_path / "src.zarr"
    store = CaseStore.create(location, kind="prepared", card={"source": "test"})
    rng = np.random.default_rng(0)
    for cid in _ids(n):
        image = rng.random((2, 8, 8, 6), dtype=np.float32)
        mask = (rng.random((8, 8, 6)) > 0.8).astype(np.uint8)
        store.write_case(
            cid,
            {"image": image, "mask": mask, "breast": np.ones((8, 8, 6), np.uint8)},
            {"affine": np.eye(4).tolist(), "spacing": [1.0, 1.0, 1.0], "split": "test"},
        )
    return location


def test_subset_store_copies_arrays_exactly_and_sets_the_split(tmp_path: Path) -> None:
    src_location = _prepared(tmp_path)
    out = tmp_path / "subset.zarr"
    write_subset_store(src_location, out, {"train": ["CASE_002", "CASE_000"], "val": ["CASE_003"]})
    src, dst = CaseStore.open(src_location), CaseStore.open(out)
    assert dst.case_ids() == ["CASE_000", "CASE_002", "CASE_003"]
    assert [dst.case_attrs(c)["split"] for c in dst.case_ids()] == ["train", "train", "val"]
    for cid in dst.case_ids():
        for name in ("image", "mask", "breast"):
            np.testing.assert_array_equal(dst.read_array(cid, name), src.read_array(cid, name))
    assert dst.attrs["subset_of"]["splits"]["val"] == ["CASE_003"]
    # a rerun resumes: nothing is rewritten, nothing is lost
    write_subset_store(src_location, out, {"train": ["CASE_002", "CASE_000"], "val": ["CASE_003"]})
    assert CaseStore.open(out).case_ids() == ["CASE_000", "CASE_002", "CASE_003"]
    with pytest.raises(ValueError, match="CASE_999"):
        write_subset_store(src_location, tmp_path / "other.zarr", {"train": ["CASE_999"]})


def _curve(values: list[float], every: int = 100) -> list[dict[str, float]]:
    return [{"step": every * (i + 1), "val_dice": v} for i, v in enumerate(values)]


def test_plateau_is_where_the_smoothed_curve_reaches_its_best() -> None:
    rising = _curve([0.1, 0.3, 0.5, 0.6, 0.65, 0.7, 0.7, 0.71, 0.7, 0.71])
    flat_early = _curve([0.6, 0.69, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7])
    # smoothed rising: 0.683 at step 600, 0.703 at 700; best 0.707 (steps 900, 1000): within 0.02 from step 700
    assert plateau_step(rising) == 700
    assert plateau_step(flat_early) == 300  # smoothed 0.663 at 200, 0.697 at 300
    assert choose_budget({"8": flat_early, "40": rising}) == 700
    with pytest.raises(ValueError):
        plateau_step(_curve([float("nan")]))


def test_learning_curve_png_is_written(tmp_path: Path) -> None:
    out = plot_learning_curves(
        {"8": _curve([0.2, 0.6, 0.7]), "40": _curve([0.3, 0.65, 0.72])}, tmp_path / "lc.png", chosen=200
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_folder_refuses_other_settings_but_accepts_more_seeds(tmp_path: Path) -> None:
    base = EvidenceConfig(seeds=(0, 1))
    _pin_config(base, tmp_path)
    _pin_config(EvidenceConfig(seeds=(0, 1, 2), parallel_runs=1), tmp_path)
    with pytest.raises(EvidenceError, match="seg_steps"):
        _pin_config(EvidenceConfig(seeds=(0, 1), seg_steps=999), tmp_path)
    assert json.loads((tmp_path / "evidence_config.json").read_text())["seeds"] == [0, 1, 2]


def test_an_arm_setting_may_change_until_an_arm_that_uses_it_is_pinned(tmp_path: Path) -> None:
    _pin_config(EvidenceConfig(synbt_guidance=1.5), tmp_path)
    _pin_config(EvidenceConfig(arms=("real", "synbt", "synbt_guided"), synbt_guidance=2.0), tmp_path)
    with pytest.raises(EvidenceError, match="synbt_guidance"):
        _pin_config(EvidenceConfig(arms=("real", "synbt", "synbt_guided"), synbt_guidance=3.0), tmp_path)
    spread = tmp_path / "spread"
    spread.mkdir()
    _pin_config(EvidenceConfig(arms=("real", "synbt_sizes")), spread)
    with pytest.raises(EvidenceError, match="size_spread"):
        _pin_config(EvidenceConfig(arms=("real", "synbt_sizes"), size_spread=(1.0, 3.0)), spread)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="sizes"):
        EvidenceConfig(sizes=(40, 8))
    with pytest.raises(ValueError, match="arms"):
        EvidenceConfig(arms=("synbt", "real"))
    with pytest.raises(ValueError, match="own_cases"):
        EvidenceConfig(own_cases=50)
