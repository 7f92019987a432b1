"""Segmentation metrics against hand-computed references (anisotropic spacing, empty masks, MAMA-MIA)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from medpy.metric.binary import assd, hd95

from synbt_factory.metrics import (
    dice_score,
    image_diagonal_mm,
    mama_mia_case,
    mama_mia_score,
    segmentation_metrics,
    summarize,
)

SPACING = (2.0, 1.0, 0.5)


def _offset_cubes() -> tuple[np.ndarray, np.ndarray]:
    """A = [2,6)^3, B = A shifted by +2 voxels along axis 0 (4 mm at spacing 2.0)."""
    a = np.zeros((12, 12, 12), np.uint8)
    b = np.zeros_like(a)
    a[2:6, 2:6, 2:6] = 1
    b[4:8, 2:6, 2:6] = 1
    return a, b


def test_offset_cubes_match_hand_computed_values_in_mm() -> None:
    # Surfaces (6-connectivity): 56 voxels each. Directed distances A→B (by symmetry also B→A):
    #   ring (y,z on the 4x4 border) at x=2: 2 voxels × 2 mm = 4 mm (12), x=3: 2 mm (12), x=4,5: 0 (24);
    #   inner (y,z) at x=2: 4 mm (4); at x=5: nearest B surface is 1 voxel along z = 0.5 mm (4).
    # Pooled 112 distances: 32×4, 24×2, 48×0, 8×0.5 → 95th percentile 4 mm; mean 180/112 mm.
    a, b = _offset_cubes()
    m = segmentation_metrics(a, b, SPACING)
    assert m.dice == pytest.approx(0.5)
    assert m.hd95 == pytest.approx(4.0)
    assert m.msd == pytest.approx(180.0 / 112.0)
    assert (m.pred_voxels, m.truth_voxels) == (64, 64)
    # spacing matters: isotropic 1 mm gives other distances (2 voxels → 2 mm; mean 96/112)
    iso = segmentation_metrics(a, b, (1.0, 1.0, 1.0))
    assert iso.hd95 == pytest.approx(2.0)
    assert iso.msd == pytest.approx(96.0 / 112.0)


def test_single_voxels_distance_uses_spacing_per_axis() -> None:
    a = np.zeros((10, 10, 10), np.uint8)
    b = np.zeros_like(a)
    a[2, 2, 2] = 1
    b[3, 4, 5] = 1  # offsets (1, 2, 3) voxels → (2, 2, 1.5) mm
    m = segmentation_metrics(a, b, SPACING)
    expected = math.sqrt(2.0**2 + 2.0**2 + 1.5**2)
    assert m.dice == 0.0
    assert m.hd95 == pytest.approx(expected)
    assert m.msd == pytest.approx(expected)


def test_cropped_computation_equals_medpy_on_full_volume() -> None:
    rng = np.random.default_rng(3)
    a = np.zeros((40, 36, 30), bool)
    b = np.zeros_like(a)
    a[5:20, 8:25, 3:14] = rng.random((15, 17, 11)) > 0.3
    b[9:26, 6:22, 5:19] = rng.random((17, 16, 14)) > 0.3
    b[0:3, 0:4, 0:2] = True  # touching the image border
    m = segmentation_metrics(a, b, (0.7, 0.9, 2.5))
    assert m.hd95 == pytest.approx(hd95(a, b, voxelspacing=(0.7, 0.9, 2.5)))
    assert m.msd == pytest.approx(assd(a, b, voxelspacing=(0.7, 0.9, 2.5)))
    # symmetric: argument order does not matter
    swapped = segmentation_metrics(b, a, (0.7, 0.9, 2.5))
    assert swapped.msd == pytest.approx(m.msd)
    assert swapped.hd95 == pytest.approx(m.hd95)


def test_both_empty_is_perfect() -> None:
    z = np.zeros((8, 8, 8), np.uint8)
    m = segmentation_metrics(z, z, SPACING)
    assert (m.dice, m.hd95, m.msd) == (1.0, 0.0, 0.0)
    assert dice_score(z, z) == 1.0


@pytest.mark.parametrize("empty_side", ["pred", "truth"])
def test_one_empty_gets_diagonal_penalty_or_nan(empty_side: str) -> None:
    z = np.zeros((8, 10, 12), np.uint8)
    full = z.copy()
    full[2:4, 2:4, 2:4] = 1
    pred, truth = (z, full) if empty_side == "pred" else (full, z)
    m = segmentation_metrics(pred, truth, SPACING)
    diag = math.sqrt((8 * 2.0) ** 2 + (10 * 1.0) ** 2 + (12 * 0.5) ** 2)
    assert image_diagonal_mm(z.shape, SPACING) == pytest.approx(diag)
    assert m.dice == 0.0 and m.hd95 == pytest.approx(diag) and m.msd == pytest.approx(diag)
    n = segmentation_metrics(pred, truth, SPACING, empty_penalty="nan")
    assert n.dice == 0.0 and math.isnan(n.hd95) and math.isnan(n.msd)


def test_summary_skips_nan_distances() -> None:
    rows = [{"dice": 1.0, "hd95": 2.0, "msd": 1.0}, {"dice": 0.0, "hd95": float("nan"), "msd": float("nan")}]
    s = summarize(rows)
    assert s["dice"]["mean"] == pytest.approx(0.5) and s["dice"]["n"] == 2
    assert s["hd95"]["mean"] == pytest.approx(2.0) and s["hd95"]["n"] == 1
    assert s["msd"]["std"] == pytest.approx(0.0)


def test_mama_mia_convention() -> None:
    a, b = _offset_cubes()
    c = mama_mia_case(a, b, SPACING)
    # max of directed 95th percentiles: each direction's 56 distances have 95th percentile 4 mm
    assert c.dsc == pytest.approx(0.5)
    assert c.hd95_max == pytest.approx(4.0)
    assert c.norm_hd == pytest.approx(4.0 / 150.0)
    z = np.zeros_like(a)
    both = mama_mia_case(z, z, SPACING)
    assert both.dsc == 0.0 and both.hd95_max == 0.0 and both.norm_hd == 0.0  # challenge: DSC 0 when both empty
    one = mama_mia_case(z, b, SPACING)
    assert one.dsc == 0.0 and math.isinf(one.hd95_max) and one.norm_hd == 1.0
    assert mama_mia_score([0.8, 0.6], [0.1, 0.3]) == pytest.approx(0.5 * (0.7 + 0.8))


def test_rejects_bad_input() -> None:
    a, b = _offset_cubes()
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(a, b, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="shapes differ"):
        segmentation_metrics(a, b[:-1], SPACING)
    with pytest.raises(ValueError, match="empty_penalty"):
        segmentation_metrics(a, b, SPACING, empty_penalty="zero")  # type: ignore[arg-type]
