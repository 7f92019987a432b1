"""The realism report: footprint counts, Fréchet distance, a store of holes fails the gate, the card headline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.evaluate.feature_distance import frechet_distance, tumor_crop
from synbt_factory.evaluate.realism import cheap_figures, realism_report
from synbt_factory.evaluate.realism_figures import footprint, post_over_pre, shape_figures
from synbt_factory.generate.quality_gate import QualityGate, check_gate, parse_fail_under
from synbt_factory.store import CaseStore, array_sha256

SHAPE = (24, 24, 24)
REAL_RATIO = 2.25  # post/pre of the hand-made real tumors


def _ball(centre: tuple[int, int, int], radius: float) -> np.ndarray:
    grid = np.indices(SHAPE) - np.asarray(centre)[:, None, None, None]
    return (grid**2).sum(0) <= radius**2


# ----------------------------------------------------------------------------- per-case figures
def test_footprint_counts_exactly_the_changed_voxels() -> None:
    rng = np.random.default_rng(0)
    background = rng.uniform(0.5, 1.0, (2, 20, 20, 20)).astype(np.float16)
    mask = np.zeros((20, 20, 20), bool)
    mask[8:11, 8:11, 8:11] = True  # 27 voxels
    image = background.copy()
    image[1, 9, 9, 9] += np.float16(0.5)  # inside: 3 voxels changed
    image[0, 8, 8, 8] -= np.float16(0.25)
    image[:, 10, 10, 10] += np.float16(0.125)
    # outside, with known distances (spacing 2 mm along x, 1 mm along y and z)
    image[1, 11, 9, 9] += np.float16(0.25)  # 2 mm: near, big
    image[0, 9, 12, 9] += np.float16(0.125)  # 2 mm: near
    image[1, 9, 9, 15] += np.float16(0.0625)  # 5 mm: far, big
    image[0, 13, 9, 9] += np.float16(0.25)  # 3 voxels × 2 mm = 6 mm: far, big
    image[1, 9, 9, 2] += np.float16(0.0078125)  # 6 mm: far, but |Δ| < 0.02
    delta = np.abs(image.astype(np.float32) - background.astype(np.float32))
    fp = footprint(image, background, mask, (2.0, 1.0, 1.0))
    assert fp.mask_voxels == 27
    assert fp.changed_inside == 3
    assert fp.changed_outside == 5
    assert fp.changed_outside_over_mask == pytest.approx(5 / 27)
    assert fp.far_changed == 2
    assert fp.far_changed_over_mask == pytest.approx(2 / 27)
    outside = delta[:, ~mask].sum()
    inside = delta[:, mask].sum()
    assert fp.outside_over_inside == pytest.approx(outside / inside)
    # shell 1-2 mm holds the two near changes (both at 2 mm); its mean is over every voxel of the shell
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(~mask, sampling=(2.0, 1.0, 1.0))
    shell = (dist > 1) & (dist <= 2)
    assert fp.mean_abs_delta_by_shell["1-2"] == pytest.approx(delta.mean(0)[shell].mean())
    assert fp.mean_abs_delta_by_shell["0-1"] == 0.0
    assert fp.mean_abs_delta_by_shell[">10"] == 0.0
    unchanged = footprint(background.copy(), background, mask, (1.0, 1.0, 1.0))
    assert (unchanged.changed_inside, unchanged.changed_outside, unchanged.outside_over_inside) == (0, 0, 0.0)


def test_a_box_halo_shows_in_the_footprint_and_a_round_one_less() -> None:
    background = np.full((2, *SHAPE), 0.9, np.float16)
    mask = _ball((12, 12, 12), 2)
    box, ball = background.copy(), background.copy()
    box[:, 6:19, 6:19, 6:19] = 0.5
    ball[:, _ball((12, 12, 12), 6)] = 0.5  # the round halo of the same reach
    fp_box, fp_ball = (footprint(x, background, mask, (1.0, 1.0, 1.0)) for x in (box, ball))
    assert fp_box.changed_outside == 13**3 - mask.sum()
    assert fp_box.far_changed > fp_ball.far_changed > 0
    assert fp_box.outside_over_inside > fp_ball.outside_over_inside > 1


def test_post_over_pre_and_shape() -> None:
    image = np.ones((2, *SHAPE), np.float32)
    ball = _ball((12, 12, 12), 6)
    image[1][ball] = 2.5
    assert post_over_pre(image, ball) == pytest.approx(2.5)
    assert post_over_pre(image, np.zeros(SHAPE, bool)) is None
    s = shape_figures(ball, (1.0, 1.0, 1.0), breast=np.ones(SHAPE), fgt=np.indices(SHAPE)[0] < 12)
    assert s["volume_mm3"] == ball.sum()
    assert s["elongation"] == pytest.approx(1.0, abs=0.05)
    assert 0.85 < s["sphericity"] < 1.15
    assert s["inside_breast"] == 1.0 and 0.3 < s["inside_fgt"] < 0.5
    rod = np.zeros(SHAPE, bool)
    rod[4:20, 11:13, 11:13] = True
    assert shape_figures(rod, (1.0, 1.0, 1.0))["elongation"] > 4


# ----------------------------------------------------------------------------- feature distance
def test_frechet_distance_is_zero_for_a_set_with_itself_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    distances = [frechet_distance(a, a + shift) for shift in (0.25, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(distances[:-1], distances[1:], strict=True))
    assert distances[-1] == pytest.approx(6 * 2.0**2, rel=1e-3)  # a pure shift: |δ|² = D δ²
    b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    assert frechet_distance(a, b) > frechet_distance(a, a[::-1])
    with pytest.raises(ValueError, match="two"):
        frechet_distance(a[:1], b)


def test_tumor_crop_is_centred_and_padded() -> None:
    image = np.arange(2 * 24**3, dtype=np.float32).reshape(2, *SHAPE)
    crop = tumor_crop(image, _ball((1, 12, 12), 1), (8, 8, 8))
    assert crop.shape == (2, 8, 8, 8)
    assert (crop[:, :3] == 0).all() and crop[0, 4, 4, 4] == image[0, 1, 12, 12]


# ----------------------------------------------------------------------------- tiny stores
def _prepared(root: Path, n: int = 4) -> str:
    """A prepared store: flat background (pre 0.9, post 0.95), a ball tumor (pre 0.8, post 0.8 × 2.25)."""
    store = CaseStore.create(root / "prepared.zarr", kind="prepared", card={"source_dataset": "test"})
    for i in range(n):
        image = np.empty((2, *SHAPE), np.float16)
        image[0], image[1] = 0.9, 0.95
        tumor = _ball((6 + i, 8, 12), 3)
        image[0][tumor], image[1][tumor] = 0.8, 0.8 * REAL_RATIO
        tissue = np.zeros(SHAPE, np.uint8)
        tissue[:, 12:, :] = 2
        store.write_case(
            f"REAL_{i:03d}",
            {"image": image, "mask": tumor.astype(np.uint8), "tissue": tissue, "breast": np.ones(SHAPE, np.uint8)},
            {"affine": np.eye(4).tolist(), "spacing": [1.0, 1.0, 1.0], "split": "train"},
        )
    return str(root / "prepared.zarr")


def _synthetic(root: Path, prepared: str, kind: str, n: int = 4) -> str:
    """A synthetic store drawn on the prepared backgrounds: ``good`` tumors enhance like the real ones,
    ``holes`` are set to 0.05 on pre and post, ``halo`` are good tumors inside a dark box 13 voxels wide."""
    source = CaseStore.open(prepared)
    out = root / f"{kind}.zarr"
    store = CaseStore.create(out, kind="synthetic", card={"synthetic": True, "run_identity": {"prepared": prepared}})
    for i, case_id in enumerate(source.case_ids()[:n]):
        background = source.read_array(case_id, "image")
        image = background.copy()
        syn = _ball((14, 16, 12), 2 + i % 2)
        if kind == "holes":
            image[:, syn] = 0.05
        else:
            if kind == "halo":
                image[:, 8:21, 10:23, 6:19] = 0.4
            image[0][syn] = 0.8
            image[1][syn] = 0.8 * REAL_RATIO
        real = source.read_array(case_id, "mask") > 0
        store.write_case(
            f"SYN_{i:06d}",
            {"image": image, "mask": (real | syn).astype(np.uint8), "synthetic_mask": syn.astype(np.uint8)},
            {
                "affine": np.eye(4).tolist(),
                "spacing": [1.0, 1.0, 1.0],
                "source_case": case_id,
                "source_sha256": array_sha256(background),
                "method": "synbt",
                "split": "train",
            },
        )
    return str(out)


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, str]:
    prepared = _prepared(tmp_path)
    return {"prepared": prepared, **{k: _synthetic(tmp_path, prepared, k) for k in ("good", "holes", "halo")}}


def test_hole_store_fails_the_gate_naming_the_figure(stores: dict[str, str]) -> None:
    good = cheap_figures(stores["good"])
    assert good.headline["real_post_over_pre_mean"] == pytest.approx(REAL_RATIO, rel=1e-3)
    assert good.headline["synthetic_post_over_pre_median"] == pytest.approx(REAL_RATIO, rel=1e-3)
    assert good.headline["footprint_outside_over_inside_median"] == 0.0
    assert check_gate(good.headline).passed
    holes = check_gate(cheap_figures(stores["holes"]).headline)
    assert not holes.passed
    assert [f.key for f in holes.failures] == ["enhancement"]
    message = holes.message("the test cases")
    assert "synthetic post/pre (median) = 1" in message and "synbt eval vqvae" in message
    halo = check_gate(cheap_figures(stores["halo"]).headline)
    assert {f.key for f in halo.failures} == {"outside_over_inside", "far_changed_over_mask"}


def test_store_report_fail_under_exits_1_naming_the_figure(stores: dict[str, str]) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["store", "report", stores["holes"], "--fail-under", "gate"])
    assert res.exit_code == 1, res.output
    assert "synthetic post/pre (median)" in res.output
    res = runner.invoke(
        app,
        [
            "store",
            "report",
            stores["halo"],
            "--fail-under",
            "max_far_changed_over_mask=1e9,max_outside_over_inside=1e9",
        ],
    )
    assert res.exit_code == 0, res.output  # the same store passes thresholds it meets
    res = runner.invoke(
        app, ["store", "report", stores["good"], "--real", stores["prepared"], "--fail-under", "target"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["store", "report", stores["good"], "--fail-under", "speed=3"])
    assert res.exit_code == 2 and "unknown figure" in res.output


def test_card_carries_the_headline_after_store_report(stores: dict[str, str], tmp_path: Path) -> None:
    assert "realism" not in CaseStore.open(stores["good"]).attrs
    res = CliRunner().invoke(app, ["store", "report", stores["good"], "--out", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    card = CaseStore.open(stores["good"]).attrs
    head = card["realism"]
    assert head["synthetic_post_over_pre_median"] == pytest.approx(REAL_RATIO, rel=1e-3)
    assert head["footprint_far_changed_over_mask_median"] == 0.0
    assert head["gate"]["verdict"] == "pass" and head["computed"]
    assert card["realism_headline"].startswith("post/pre 2.25 vs real 2.25")
    info = CliRunner().invoke(app, ["store", "info", stores["good"]])
    assert "realism_headline" in info.output and "post/pre 2.25" in info.output
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    assert doc["headline"]["gate"]["verdict"] == "pass"
    assert doc["figures"]["contrast"]["real"]["post_vs_fgt"]["mean"] > 1
    assert (tmp_path / "report" / "montage.png").stat().st_size > 1000
    holes = CliRunner().invoke(app, ["store", "report", stores["holes"]])
    assert holes.exit_code == 0  # without --fail-under the report only records the verdict
    assert CaseStore.open(stores["holes"]).attrs["realism"]["gate"]["failed"] == ["enhancement"]


def test_report_figures_of_every_section(stores: dict[str, str]) -> None:
    report = realism_report(stores["halo"])
    fig = report.figures
    assert fig["enhancement"]["wasserstein_1"] == pytest.approx(0.0, abs=1e-3)
    assert fig["footprint"]["n"] == 4
    assert fig["footprint"]["mean_abs_delta_by_shell_mm"]["0-1"]["mean"] == pytest.approx((0.5 + 0.55) / 2, abs=0.01)
    assert fig["shape"]["synthetic"]["inside_fgt"]["mean"] == 1.0
    assert any("feature distance skipped" in n for n in report.notes)
    assert report.to_dict()["headline"]["n_real"] == 4


def test_parse_fail_under() -> None:
    assert parse_fail_under("gate") == QualityGate()
    assert parse_fail_under("target").max_outside_over_inside == 1.5
    assert parse_fail_under("enhancement-tolerance=0.1").enhancement_tolerance == 0.1
    with pytest.raises(ValueError, match="number"):
        parse_fail_under("max_outside_over_inside=x")
