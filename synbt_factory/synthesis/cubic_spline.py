"""Natural cubic spline weights: the spline through given knots as a fixed linear map of the knot values.

A natural cubic spline S through knots x₀ < … < x_{p−1} with values y is, on [x_j, x_{j+1}] with
h_j = x_{j+1} − x_j, a = x_{j+1} − u and b = u − x_j::

    S(u) = M_j a³ / (6 h_j) + M_{j+1} b³ / (6 h_j) + (y_j − M_j h_j² / 6) a / h_j + (y_{j+1} − M_{j+1} h_j² / 6) b / h_j

where the second derivatives M solve the tridiagonal system
h_{j−1}/6 M_{j−1} + (h_{j−1} + h_j)/3 M_j + h_j/6 M_{j+1} = (y_{j+1} − y_j)/h_j − (y_j − y_{j−1})/h_{j−1}
with M₀ = M_{p−1} = 0. M is linear in y, so S(u) = W(u) y with W an (n, p) matrix: this module returns W.

Why not ``scipy.interpolate.CubicSpline(knots, eye(p), bc_type="natural")``, which gives the same matrix to
1e-15 (tested)? Importing ``scipy.interpolate`` (it pulls ``scipy.optimize`` and ``scipy.linalg``) cost
0.3–0.4 CPU s, a sixth of every ``synbt generate --method syntumor`` call, for a (≤ 16) × (≤ 16) solve.
"""

from __future__ import annotations

import numpy as np

__all__ = ["natural_cubic_weights"]


def natural_cubic_weights(knots: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(n, p) float64 weights W with ``W @ y`` = the natural cubic spline through ``(knots, y)`` evaluated at ``at``.

    Args:
        knots: (p,) strictly increasing knot positions, p ≥ 2 (p = 2 gives the straight line).
        at: (n,) positions; outside [knots[0], knots[-1]] the end pieces are extended (as SciPy's
            ``extrapolate=True``).

    Raises:
        ValueError: fewer than two knots, or knots not strictly increasing.
    """
    knots = np.asarray(knots, dtype=np.float64)
    at = np.asarray(at, dtype=np.float64)
    p = knots.shape[0]
    if knots.ndim != 1 or p < 2:
        raise ValueError(f"need at least two knots in a 1-D array, got shape {knots.shape}")
    h = np.diff(knots)
    if not np.all(h > 0):
        raise ValueError("knots must be strictly increasing")
    # A @ M = R @ y, natural ends M₀ = M_{p−1} = 0 (rows 0 and p−1 of A are the identity's, of R zero)
    a_matrix = np.eye(p)
    r_matrix = np.zeros((p, p))
    inner = np.arange(1, p - 1)
    a_matrix[inner, inner - 1] = h[:-1] / 6.0
    a_matrix[inner, inner] = (h[:-1] + h[1:]) / 3.0
    a_matrix[inner, inner + 1] = h[1:] / 6.0
    r_matrix[inner, inner - 1] = 1.0 / h[:-1]
    r_matrix[inner, inner] = -1.0 / h[:-1] - 1.0 / h[1:]
    r_matrix[inner, inner + 1] = 1.0 / h[1:]
    second = np.linalg.solve(a_matrix, r_matrix)  # (p, p): M = second @ y
    j = np.clip(np.searchsorted(knots, at, side="right") - 1, 0, p - 2)
    hj = h[j][:, None]
    left = (knots[j + 1] - at)[:, None]
    right = (at - knots[j])[:, None]
    eye = np.eye(p)
    return (
        second[j] * (left**3 / (6.0 * hj))
        + second[j + 1] * (right**3 / (6.0 * hj))
        + (eye[j] - second[j] * (hj**2 / 6.0)) * (left / hj)
        + (eye[j + 1] - second[j + 1] * (hj**2 / 6.0)) * (right / hj)
    )
