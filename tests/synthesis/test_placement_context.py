"""The placement context's vectorised anatomy gives the masks, contexts and placements of the slice-wise code.

``_slicewise_body_mask`` and ``_slicewise_intensity_breast_mask`` are the per-slice implementations the placement
module had before its 3-D rewrite, kept here only as the reference the new code must match bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
from synbt_factory.store import CaseStore
from synbt_factory.synthesis import placement
from synbt_factory.synthesis.background_context import context_from_store
from synbt_factory.synthesis.bank import TumorBank, build_bank
from synbt_factory.synthesis.placement import body_mask, intensity_breast_mask, place_tumor


def _slicewise_body_mask(image: np.ndarray, *, threshold: float = 0.08, sigma: float = 1.5) -> np.ndarray:
    signal = np.max(np.asarray(image, dtype=np.float32), axis=0)
    body = (ndimage.gaussian_filter(signal, sigma) > threshold) & (signal > threshold)
    for k in range(body.shape[2]):
        body[:, :, k] = ndimage.binary_fill_holes(body[:, :, k])
    body = ndimage.binary_fill_holes(body)
    labels, n = ndimage.label(body)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        body = sizes[labels] >= 0.05 * sizes.max()
    return body


def _slicewise_intensity_breast_mask(body: np.ndarray, *, anterior_axis: int = 1, anterior_sign: int = 1) -> np.ndarray:
    body_r = placement._to_ras_y(np.asarray(body, dtype=bool), anterior_axis, anterior_sign)
    nx, ny, nz = body_r.shape
    out = np.zeros_like(body_r)
    ys = np.arange(ny)
    for k in range(nz):
        sl = body_r[:, :, k]
        cols = np.flatnonzero(sl.any(axis=1))
        if cols.size < 3:
            continue
        front = ny - 1 - np.argmax(sl[:, ::-1], axis=1)
        lo, hi = cols[0], cols[-1]
        third = max(1, (hi - lo) // 3)
        mid = np.arange(lo + third, hi - third + 1)
        mid = mid[sl[mid].any(axis=1)]
        if mid.size == 0:
            continue
        cut = int(front[mid].min())
        out[:, :, k] = sl & (ys[None, :] > cut)
    return np.ascontiguousarray(placement._from_ras_y(out, anterior_axis, anterior_sign))


def _blobby_image(seed: int, shape: tuple[int, int, int] = (40, 36, 24)) -> np.ndarray:
    """Noisy bodies with holes, slices without body and thin slivers: the fill and the sternum line's edge cases."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.normal(size=shape), 2.5)
    signal = np.where(smooth > np.quantile(smooth, 0.45), 0.6, 0.0)
    signal[:, :, :2] = 0.0  # slices without body
    signal[rng.random(shape) < 0.03] = 0.0  # pin holes to fill
    signal[:, :, 3] = 0.0
    signal[5, 10:20, 3] = 0.6  # a slice whose body spans a single x column
    return np.stack([signal, signal * 1.1]).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_body_mask_matches_the_slicewise_fill(seed: int) -> None:
    image = _blobby_image(seed)
    expected = _slicewise_body_mask(image)
    assert expected.any() and not expected.all()
    assert np.array_equal(body_mask(image), expected)


@pytest.mark.parametrize(("axis", "sign"), [(1, 1), (1, -1), (0, 1), (2, -1)])
@pytest.mark.parametrize("seed", range(3))
def test_intensity_breast_mask_matches_the_slicewise_cut(seed: int, axis: int, sign: int) -> None:
    body = _slicewise_body_mask(_blobby_image(seed))
    expected = _slicewise_intensity_breast_mask(body, anterior_axis=axis, anterior_sign=sign)
    assert expected.any()
    assert np.array_equal(intensity_breast_mask(body, anterior_axis=axis, anterior_sign=sign), expected)


@pytest.fixture(scope="module")
def phantom_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[CaseStore, TumorBank]:
    from synbt_factory.phantom import write_phantom

    root = tmp_path_factory.mktemp("context")
    write_phantom(root / "phantom", n=4, seed=5, size="tiny", healthy_fraction=0.0)
    prepare_dataset(root / "phantom", root / "prepared.zarr", config=PrepareConfig(fov_mm=(64, 64, 48)), workers=1)
    bank = build_bank(root / "prepared.zarr", root / "bank.zarr", splits=("train", "test"))
    bank.load_all()
    return CaseStore.open(root / "prepared.zarr"), bank


def test_contexts_and_placements_match_the_slicewise_code(
    phantom_inputs: tuple[CaseStore, TumorBank], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, bank = phantom_inputs
    cases = store.case_ids()
    assert len(cases) == 4

    def contexts_and_placements() -> list[tuple[placement.PlacementContext, list[tuple[bytes, dict]]]]:
        out = []
        for i, case_id in enumerate(cases):
            ctx = context_from_store(store, case_id)
            drawn = []
            for k in range(3):
                mask, record = place_tumor(np.random.default_rng([i, k]), bank, ctx)
                drawn.append((mask.tobytes(), record.to_dict()))
            out.append((ctx, drawn))
        return out

    from synbt_factory.synthesis import background_context

    monkeypatch.setattr(background_context, "has_stored_anatomy", lambda *a, **k: False)  # both sides build it
    new = contexts_and_placements()
    with monkeypatch.context() as m:
        m.setattr(placement, "body_mask", _slicewise_body_mask)
        m.setattr(placement, "intensity_breast_mask", _slicewise_intensity_breast_mask)
        old = contexts_and_placements()
    # the intensity fallback is exercised too: a context built without the breast arrays
    image = store.read_array(cases[0], "image").astype(np.float32)
    fallback_new = placement.PlacementContext.build(image)
    with monkeypatch.context() as m:
        m.setattr(placement, "body_mask", _slicewise_body_mask)
        m.setattr(placement, "intensity_breast_mask", _slicewise_intensity_breast_mask)
        fallback_old = placement.PlacementContext.build(image)
    pairs = [(a, b) for (a, _), (b, _) in zip(new, old, strict=True)] + [(fallback_new, fallback_old)]
    for a, b in pairs:
        for name in ("breast", "fgt", "forbidden", "avoid", "centres"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert (a.centre_region, a.breast_size_mm, a.notes) == (b.centre_region, b.breast_size_mm, b.notes)
    assert fallback_new.notes["breast_source"] == "intensity"
    assert [d for _, d in new] == [d for _, d in old]
    assert all(record["voxels"] > 0 for _, drawn in new for _, record in drawn)


def test_written_cases_do_not_depend_on_the_placement_cache(
    phantom_inputs: tuple[CaseStore, TumorBank], tmp_path: Path
) -> None:
    """A placer with a one-context cache (every background rebuilt) places exactly as one that keeps them all."""
    from synbt_factory.generate.jobs import GenerateConfig, plan_jobs
    from synbt_factory.generate.placing import Placer

    store, bank = phantom_inputs
    jobs = plan_jobs(GenerateConfig(n=6, seed=2), store.case_ids())
    small = Placer(store.location, bank.location, cache_bytes=1)
    large = Placer(store.location, bank.location)
    for job in jobs:
        a, b = small.place(job), large.place(job)
        assert np.array_equal(a.synthetic_mask, b.synthetic_mask) and a.placement == b.placement
    assert len(small._contexts) == 1 and len(large._contexts) == len({j.background for j in jobs})
