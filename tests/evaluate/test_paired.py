"""Paired comparison of two arms on the same test cases."""

from __future__ import annotations

import numpy as np
import pytest

from synbt_factory.evaluate.paired import paired_difference


def _scores(values) -> dict[str, float]:
    return {f"C{i:03d}": float(v) for i, v in enumerate(values)}


def test_identical_arms_are_within_noise_with_a_zero_ci() -> None:
    base = _scores(np.linspace(0.2, 0.9, 8))
    diff = paired_difference(base, dict(base), generator=np.random.default_rng(0))
    assert diff.mean == 0.0 and diff.ci_low == 0.0 and diff.ci_high == 0.0
    assert diff.p_value == 1.0 and diff.within_noise and diff.better == diff.worse == 0


def test_a_consistent_gain_is_detected_and_counted() -> None:
    rng = np.random.default_rng(1)
    base_values = rng.uniform(0.3, 0.8, 20)
    base = _scores(base_values)
    better = _scores(base_values + 0.1 + rng.normal(0, 0.01, 20))
    diff = paired_difference(base, better, generator=np.random.default_rng(0))
    assert 0.09 < diff.mean < 0.11
    assert diff.ci_low > 0 and not diff.within_noise
    assert diff.better == 20 and diff.worse == 0 and diff.p_value < 1e-3
    assert "better on 20 of 20" in diff.summary("ΔDice")


def test_only_shared_cases_are_paired_and_the_ci_follows_the_generator() -> None:
    base = _scores([0.5, 0.6, 0.7, 0.2])
    cand = {"C000": 0.9, "C001": 0.1, "C002": 0.8, "OTHER": 1.0}
    a = paired_difference(base, cand, generator=np.random.default_rng(7))
    b = paired_difference(base, cand, generator=np.random.default_rng(7))
    assert a == b and a.n == 3
    assert a.within_noise


def test_no_shared_case_is_refused() -> None:
    with pytest.raises(ValueError, match="share no test case"):
        paired_difference({"A": 1.0}, {"B": 1.0}, generator=np.random.default_rng(0))


def test_three_cases_all_better_are_still_within_noise() -> None:
    """A bootstrap CI of 3 cases excludes 0 when all 3 improve, but no test can reject with 3 cases."""
    base = _scores([0.4, 0.5, 0.6])
    cand = _scores([0.6, 0.65, 0.9])
    diff = paired_difference(base, cand, generator=np.random.default_rng(0))
    assert diff.ci_low > 0 and diff.p_value >= 0.25
    assert diff.within_noise and diff.summary().endswith("within noise")
