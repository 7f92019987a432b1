"""Montage rows show the slice where the tumor is."""

from __future__ import annotations

import numpy as np

from synbt_factory.figures import CaseView


def test_slice_index_lands_on_the_mask_when_it_has_two_components() -> None:
    mask = np.zeros((16, 16, 20), np.uint8)
    mask[4:8, 4:8, 3:6] = 1  # 48 voxels
    mask[9:12, 9:12, 14:16] = 1  # a satellite: the centroid (z ≈ 7.8) falls between the two
    view = CaseView("case", np.zeros((2, 16, 16, 20), np.float16), mask, None)
    z = view.slice_index()
    assert mask[:, :, z].any()
    assert z in (3, 4, 5)


def test_slice_index_prefers_the_second_mask_and_falls_back_to_the_middle() -> None:
    first = np.zeros((8, 8, 10), np.uint8)
    first[2, 2, 1] = 1
    second = np.zeros_like(first)
    second[5, 5, 8] = 1
    image = np.zeros((2, 8, 8, 10), np.float16)
    assert CaseView("c", image, first, second).slice_index() == 8
    assert CaseView("c", image, np.zeros_like(first), None).slice_index() == 5


def test_montage_rows_are_cropped_to_the_volume_inside_its_padding() -> None:
    from synbt_factory.figures import content_box

    image = np.zeros((2, 96, 96, 20), np.float32)
    image[:, 40:60, 30:50, 5:15] = 1.0
    bx, by = content_box(image, margin=3)
    assert (bx.start, bx.stop, by.start, by.stop) == (37, 63, 27, 53)
    edge = np.ones((2, 10, 12, 4), np.float32)  # nothing to cut
    bx, by = content_box(edge)
    assert (bx.start, bx.stop, by.start, by.stop) == (0, 10, 0, 12)


def test_most_tumor_slice_counts_voxels_per_slice_and_falls_back_to_the_middle() -> None:
    from synbt_factory.figures import most_tumor_slice

    voxels = np.array([[0, 0, 2], [1, 0, 2], [5, 5, 7], [5, 6, 7], [5, 7, 7]])
    assert most_tumor_slice(voxels, 12) == 7
    assert most_tumor_slice(np.zeros((0, 3), np.int64), 12) == 6
