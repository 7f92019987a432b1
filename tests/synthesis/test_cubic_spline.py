"""The hand-written natural cubic spline weights against SciPy's ``CubicSpline(bc_type="natural")``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from synbt_factory.synthesis.augment import spline_weights
from synbt_factory.synthesis.cubic_spline import natural_cubic_weights


@pytest.mark.parametrize("points", [2, 3, 4, 7, 16])
@pytest.mark.parametrize("n", [1, 2, 5, 31, 128])
def test_spline_weights_match_scipy_natural_cubic_spline(n: int, points: int) -> None:
    knots = np.linspace(0.0, max(n - 1, 1), points)
    expected = CubicSpline(knots, np.eye(points), bc_type="natural")(np.arange(n, dtype=np.float64))
    got = spline_weights(n, points)
    assert got.shape == (n, points)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)


def test_uneven_knots_and_extrapolation_match_scipy() -> None:
    rng = np.random.default_rng(0)
    knots = np.cumsum(rng.uniform(0.3, 2.0, size=6))
    at = np.linspace(knots[0] - 1.0, knots[-1] + 1.0, 57)
    expected = CubicSpline(knots, np.eye(6), bc_type="natural")(at)
    np.testing.assert_allclose(natural_cubic_weights(knots, at), expected, rtol=0, atol=1e-12)


def test_weights_interpolate_the_knots_and_reproduce_straight_lines() -> None:
    knots = np.array([0.0, 1.0, 2.5, 4.0, 7.0])
    np.testing.assert_allclose(natural_cubic_weights(knots, knots), np.eye(5), atol=1e-14)
    at = np.linspace(0.0, 7.0, 29)
    line = 2.0 * knots - 3.0
    np.testing.assert_allclose(natural_cubic_weights(knots, at) @ line, 2.0 * at - 3.0, atol=1e-12)


@pytest.mark.parametrize("knots", [[1.0], [0.0, 2.0, 2.0], [[0.0, 1.0]]])
def test_bad_knots_are_refused(knots: list) -> None:
    with pytest.raises(ValueError, match="knot"):
        natural_cubic_weights(np.array(knots), np.zeros(3))
