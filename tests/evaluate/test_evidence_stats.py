"""Statistics, tables and figure of a segmentation experiment (arms × sizes × seeds × test sets)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from synbt_factory.evaluate.evidence_figures import plot_dice_vs_size
from synbt_factory.evaluate.evidence_stats import (
    arm_summary,
    evidence_summary,
    evidence_tables,
    paired_vs_baseline,
    two_level_bootstrap,
)

SEEDS = (0, 1, 2, 3, 4)
CASES = tuple(f"C{i:03d}" for i in range(30))


def _rows(effects: dict[str, float], *, sizes=(8, 40), test_sets=("own", "external"), noise=0.01, seed=0):
    """Rows of every arm: a shared per-(size, test set, seed, case) baseline plus the arm's effect and noise."""
    gen = np.random.default_rng(seed)
    rows = []
    for test_set in test_sets:
        for size in sizes:
            base = gen.uniform(0.4, 0.8, (len(SEEDS), len(CASES))) + (0.05 if size > 8 else 0.0)
            hd = gen.uniform(5.0, 20.0, (len(SEEDS), len(CASES)))
            for arm, effect in effects.items():
                jitter = gen.normal(0.0, noise, base.shape) if arm != "real" else np.zeros(base.shape)
                dice = np.clip(base + effect + jitter, 0.0, 1.0)
                for i, s in enumerate(SEEDS):
                    for j, c in enumerate(CASES):
                        rows.append(
                            {
                                "arm": arm,
                                "size": size,
                                "seed": s,
                                "test_set": test_set,
                                "case_id": c,
                                "dice": float(dice[i, j]),
                                "hd95": float(hd[i, j] - 10 * effect),
                                "msd": float(hd[i, j] / 4),
                            }
                        )
    return rows


def _matrix(rows, arm, size, test_set, metric):
    cells = {
        (r["seed"], r["case_id"]): r[metric]
        for r in rows
        if r["arm"] == arm and r["size"] == size and r["test_set"] == test_set
    }
    return np.array([[cells[(s, c)] for c in CASES] for s in SEEDS])


def test_point_estimate_and_seed_means_are_numpys_means_of_the_matrix() -> None:
    rows = _rows({"real": 0.0, "synbt": 0.05})
    got = arm_summary(
        rows, arm="synbt", size=8, test_set="own", metric="dice", rng=np.random.default_rng(0), n_boot=200
    )
    m = _matrix(rows, "synbt", 8, "own", "dice")
    assert got.mean == pytest.approx(float(np.mean(m)), abs=1e-12)
    np.testing.assert_allclose(got.seed_means, m.mean(axis=1), atol=1e-12)
    assert (got.n_seeds, got.n_cases, got.seeds, got.n_skipped) == (5, 30, SEEDS, 0)
    assert got.ci_low < got.mean < got.ci_high


def test_two_level_bootstrap_is_the_documented_resampling_of_seeds_and_cases() -> None:
    m = np.random.default_rng(3).normal(0.6, 0.1, (5, 30))
    low, high = two_level_bootstrap(m, rng=np.random.default_rng(11), n_boot=300, level=0.9)
    ref = np.random.default_rng(11)
    seed_idx = ref.integers(0, 5, size=(300, 5))
    case_idx = ref.integers(0, 30, size=(300, 30))
    means = [m[np.ix_(si, ci)].mean() for si, ci in zip(seed_idx, case_idx, strict=True)]
    np.testing.assert_allclose((low, high), np.quantile(means, [0.05, 0.95]), atol=1e-12)


def test_a_constant_gain_is_better_with_a_ci_above_zero() -> None:
    rows = _rows({"real": 0.0, "synbt": 0.1})
    got = paired_vs_baseline(rows, arm="synbt", size=8, test_set="own", metric="dice", rng=np.random.default_rng(0))
    assert 0.09 < got.mean < 0.11 and got.ci_low > 0
    assert got.verdict == "better" and got.better == 30 and got.worse == 0 and got.p_value < 1e-3
    diff = _matrix(rows, "synbt", 8, "own", "dice") - _matrix(rows, "real", 8, "own", "dice")
    np.testing.assert_allclose(got.seed_means, diff.mean(axis=1), atol=1e-12)
    assert got.mean == pytest.approx(float(diff.mean()), abs=1e-12)


def test_a_constant_loss_is_worse_and_a_lower_distance_is_better() -> None:
    rows = _rows({"real": 0.0, "copypaste": -0.1})
    dice = paired_vs_baseline(
        rows, arm="copypaste", size=40, test_set="external", metric="dice", rng=np.random.default_rng(0), n_boot=500
    )
    assert dice.verdict == "worse" and dice.ci_high < 0 and dice.worse == 30
    rows = _rows({"real": 0.0, "synbt": 0.1})  # hd95 is 1 mm lower on every cell
    hd = paired_vs_baseline(
        rows, arm="synbt", size=8, test_set="own", metric="hd95", rng=np.random.default_rng(0), n_boot=500
    )
    assert hd.mean == pytest.approx(-1.0) and hd.ci_high < 0
    assert hd.verdict == "better" and hd.better == 30 and not hd.higher_is_better


def test_symmetric_noise_is_within_noise() -> None:
    rows = _rows({"real": 0.0, "syntumor": 0.0}, noise=0.05)
    got = paired_vs_baseline(rows, arm="syntumor", size=8, test_set="own", metric="dice", rng=np.random.default_rng(0))
    assert got.ci_low < 0 < got.ci_high and got.p_value > 0.05
    assert got.verdict == "within noise"


def test_wilcoxon_p_and_counts_are_scipys_on_the_seed_averaged_differences() -> None:
    rows = _rows({"real": 0.0, "syntumor": 0.01}, noise=0.04, seed=5)
    got = paired_vs_baseline(
        rows, arm="syntumor", size=40, test_set="own", metric="dice", rng=np.random.default_rng(0), n_boot=200
    )
    d = (_matrix(rows, "syntumor", 40, "own", "dice") - _matrix(rows, "real", 40, "own", "dice")).mean(axis=0)
    assert got.p_value == pytest.approx(float(wilcoxon(d).pvalue), rel=1e-12)
    assert (got.better, got.worse, got.n_cases) == (int((d > 0).sum()), int((d < 0).sum()), 30)


def test_the_bootstrap_is_reproducible_with_the_same_generator_seed() -> None:
    rows = _rows({"real": 0.0, "synbt": 0.02}, noise=0.05)
    kw = {"arm": "synbt", "size": 8, "test_set": "own", "metric": "dice", "n_boot": 300}
    assert paired_vs_baseline(rows, rng=np.random.default_rng(4), **kw) == paired_vs_baseline(
        rows, rng=np.random.default_rng(4), **kw
    )
    a = arm_summary(rows, rng=np.random.default_rng(4), **kw)
    assert a == arm_summary(rows, rng=np.random.default_rng(4), **kw)
    assert (a.ci_low, a.ci_high) != (
        arm_summary(rows, rng=np.random.default_rng(5), **kw).ci_low,
        arm_summary(rows, rng=np.random.default_rng(5), **kw).ci_high,
    )


def test_a_missing_pair_is_an_error_naming_arm_size_seed_and_case() -> None:
    rows = [
        r
        for r in _rows({"real": 0.0, "synbt": 0.1})
        if not (
            r["arm"] == "synbt"
            and r["size"] == 40
            and r["seed"] == 3
            and r["case_id"] == "C007"
            and r["test_set"] == "own"
        )
    ]
    with pytest.raises(ValueError, match=r"arm 'synbt', size 40, test set 'own': no row for seed 3, case 'C007'"):
        paired_vs_baseline(rows, arm="synbt", size=40, test_set="own", metric="dice", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"arm 'synbt', size 40.*seed 3, case 'C007'"):
        arm_summary(rows, arm="synbt", size=40, test_set="own", metric="dice", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="seed 3, case 'C007'"):
        evidence_summary(rows, rng=np.random.default_rng(0), n_boot=50)


def test_duplicate_rows_and_non_finite_dice_are_refused() -> None:
    rows = _rows({"real": 0.0}, sizes=(8,), test_sets=("own",))
    with pytest.raises(ValueError, match="appears twice"):
        arm_summary([*rows, rows[0]], arm="real", size=8, test_set="own", metric="dice", rng=np.random.default_rng(0))
    rows[2] = {**rows[2], "dice": float("nan")}
    with pytest.raises(ValueError, match="Dice must be finite"):
        arm_summary(rows, arm="real", size=8, test_set="own", metric="dice", rng=np.random.default_rng(0))


def test_non_finite_distances_are_skipped_like_summarize() -> None:
    rows = _rows({"real": 0.0, "synbt": 0.1}, sizes=(8,), test_sets=("own",))
    for k, value in ((0, float("nan")), (31, float("inf"))):
        rows[k] = {**rows[k], "hd95": value}  # arm "real": (seed 0, C000) and (seed 1, C001)
    m = _matrix(rows, "real", 8, "own", "hd95")
    got = arm_summary(rows, arm="real", size=8, test_set="own", metric="hd95", rng=np.random.default_rng(0), n_boot=200)
    assert got.n_skipped == 2 and got.mean == pytest.approx(float(m[np.isfinite(m)].mean()), abs=1e-12)
    assert math.isfinite(got.ci_low) and math.isfinite(got.ci_high)
    delta = paired_vs_baseline(
        rows, arm="synbt", size=8, test_set="own", metric="hd95", rng=np.random.default_rng(0), n_boot=200
    )
    assert delta.n_skipped == 2 and delta.mean == pytest.approx(-1.0)


def test_tables_have_one_row_per_arm_and_match_the_summary(tmp_path) -> None:
    arms = {"real": 0.0, "syntumor": 0.0, "copypaste": 0.03, "synbt": 0.1}
    rows = _rows(arms, noise=0.03)
    summary = evidence_summary(rows, rng=np.random.default_rng(0), n_boot=200)
    json.dumps(summary, allow_nan=False)
    text = evidence_tables(rows, rng=np.random.default_rng(0), n_boot=200)
    tables = text.split("### ")[1:]
    assert [t.splitlines()[0] for t in tables] == [
        f"Test set {t}: {s} real training cases (5 seeds × 30 test cases)" for t in ("own", "external") for s in (8, 40)
    ]
    for table in tables:
        body = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Arm")]
        assert [line.split(" | ")[0][2:] for line in body] == list(arms)
        assert body[0].endswith("| baseline |") and "| better |" in body[-1]
    first = summary["groups"][0]["arms"][3]
    assert f"{first['dice']['mean']:.3f} [{first['dice']['ci_low']:.3f}, {first['dice']['ci_high']:.3f}]" in tables[0]
    assert f"{first['delta_dice']['mean']:+.3f}" in tables[0]


def test_the_figure_is_written_from_a_summary_or_from_rows(tmp_path) -> None:
    rows = _rows({"real": 0.0, "syntumor": 0.01, "copypaste": 0.03, "synbt": 0.06}, noise=0.03)
    summary = evidence_summary(rows, rng=np.random.default_rng(0), n_boot=200)
    out = plot_dice_vs_size(summary, tmp_path / "fig" / "dice_vs_size.png", test_sets=("own", "external"))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(ValueError, match="needs rng"):
        plot_dice_vs_size(rows, tmp_path / "b.png")
    with pytest.raises(ValueError, match="not in the summary"):
        plot_dice_vs_size(summary, tmp_path / "c.png", test_sets=("other",))
    assert plot_dice_vs_size(rows, tmp_path / "d.png", rng=np.random.default_rng(0), n_boot=50).is_file()
