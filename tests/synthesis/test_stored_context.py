"""The placement anatomy stored in the prepared store gives the placements of one built from the arrays.

``prepare`` and ``data tissue`` store each background's anatomy; ``generate`` reads it. A stored anatomy is used
only while it matches the case's inputs and the placement config; otherwise the context is built as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
from synbt_factory.store import CaseStore
from synbt_factory.synthesis import background_context, placement
from synbt_factory.synthesis.background_context import (
    ANATOMY_ARRAYS,
    ANATOMY_ATTR,
    context_from_store,
    has_stored_anatomy,
    store_placement_anatomy,
)
from synbt_factory.synthesis.bank import TumorBank, build_bank
from synbt_factory.synthesis.placement import PlacementConfig, PlacementContext, place_tumor


@pytest.fixture()
def inputs(tmp_path: Path) -> tuple[Path, TumorBank]:
    from synbt_factory.phantom import write_phantom

    write_phantom(tmp_path / "phantom", n=4, seed=11, size="tiny", healthy_fraction=0.25)
    prepare_dataset(
        tmp_path / "phantom", tmp_path / "prepared.zarr", config=PrepareConfig(fov_mm=(64, 64, 48)), workers=2
    )
    bank = build_bank(tmp_path / "prepared.zarr", tmp_path / "bank.zarr", splits=("train", "test"))
    bank.load_all()
    return tmp_path / "prepared.zarr", bank


def _built(store: CaseStore, case_id: str, config: PlacementConfig | None = None) -> PlacementContext:
    """The context built from the case's arrays directly, as placement did before anatomies were stored."""
    names = set(store.array_names(case_id))
    image = store.read_array(case_id, "image").astype(np.float32)
    fgt = (
        store.read_array(case_id, "tissue_pred") > 0
        if "tissue_pred" in names
        else (store.read_array(case_id, "tissue") == 2)
    )
    breast_name = "breast_pred" if "breast_pred" in names else "breast"
    ctx = PlacementContext.build(
        image,
        mask=store.read_array(case_id, "mask"),
        fgt=fgt,
        breast=store.read_array(case_id, breast_name) > 0,
        config=config,
    )
    ctx.notes["breast_source"] = breast_name  # as context_from_store names it: sizes compare by mask kind
    return ctx


def _placements(
    ctx: PlacementContext, bank: TumorBank, i: int, config: PlacementConfig | None = None
) -> list[tuple[bytes, dict]]:
    out = []
    for k in range(4):
        mask, record = place_tumor(np.random.default_rng([i, k]), bank, ctx, config)
        out.append((mask.tobytes(), record.to_dict()))
    return out


def _assert_same(a: PlacementContext, b: PlacementContext) -> None:
    for name in ("breast", "fgt", "forbidden", "avoid", "centres"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert (a.shape, a.centre_region, a.breast_size_mm) == (b.shape, b.centre_region, b.breast_size_mm)
    assert a.notes["breast_source"] == b.notes["breast_source"]


def test_prepare_stores_every_case_anatomy_and_placements_are_bit_identical(inputs) -> None:
    location, bank = inputs
    store = CaseStore.open(location)
    cases = store.case_ids()
    assert len(cases) == 4
    for i, case_id in enumerate(cases):
        assert has_stored_anatomy(store, case_id)
        assert set(ANATOMY_ARRAYS.values()) <= set(store.case_attrs(case_id)["sha256"])
        stored = context_from_store(store, case_id)
        assert stored.notes["anatomy"] == "stored"
        built = _built(store, case_id)
        _assert_same(stored, built)
        assert _placements(stored, bank, i) == _placements(built, bank, i)


def test_a_new_breast_mask_or_another_config_is_never_served_a_stale_anatomy(inputs) -> None:
    location, bank = inputs
    store = CaseStore.open(location, mode="r+")
    case_id = store.case_ids()[0]
    # a tissue model's prediction arrives: the anatomy built on the label breast no longer applies
    breast = store.read_array(case_id, "breast") > 0
    half = breast.copy()
    half[: breast.shape[0] // 2] = False
    store.add_arrays(
        case_id,
        {
            "breast_pred": half.astype(np.uint8),
            "tissue_pred": (store.read_array(case_id, "tissue") == 2).astype(np.uint8),
        },
    )
    assert not has_stored_anatomy(store, case_id)
    ctx = context_from_store(store, case_id)
    assert ctx.notes["anatomy"] == "built"
    _assert_same(ctx, _built(store, case_id))
    assert store_placement_anatomy(store, [case_id])["written"] == 1
    stored = context_from_store(store, case_id)
    assert stored.notes["anatomy"] == "stored"
    _assert_same(stored, _built(store, case_id))
    assert not stored.breast[: breast.shape[0] // 2].any()
    # another overlap margin: an anatomy field, so the stored one is not used
    wider = PlacementConfig(overlap_margin_mm=9.0)
    assert not has_stored_anatomy(store, case_id, wider)
    ctx = context_from_store(store, case_id, wider)
    assert ctx.notes["anatomy"] == "built"
    _assert_same(ctx, _built(store, case_id, wider))
    # a config field outside the anatomy (the edge margin) still reads the stored one
    deeper = PlacementConfig(edge_margin_mm=2.0)
    ctx = context_from_store(store, case_id, deeper)
    assert ctx.notes["anatomy"] == "stored"
    _assert_same(ctx, _built(store, case_id, deeper))
    assert _placements(ctx, bank, 0, deeper) == _placements(_built(store, case_id, deeper), bank, 0, deeper)


def test_an_unfinished_anatomy_is_rebuilt_and_a_rerun_of_prepare_completes_it(inputs, tmp_path: Path) -> None:
    location, _ = inputs
    store = CaseStore.open(location, mode="r+")
    case_id = store.case_ids()[1]
    group = store._cases[case_id]
    checksums = {k: v for k, v in group.attrs["sha256"].items() if k != "placement_depth"}
    group.attrs.update({"sha256": checksums})  # as a kill between the arrays and their markers leaves it
    assert not has_stored_anatomy(store, case_id)
    assert context_from_store(store, case_id).notes["anatomy"] == "built"
    result = prepare_dataset(tmp_path / "phantom", location, config=PrepareConfig(fov_mm=(64, 64, 48)), workers=1)
    assert case_id in result.skipped
    assert has_stored_anatomy(CaseStore.open(location), case_id)


def test_store_placement_anatomy_skips_what_matches(inputs, monkeypatch: pytest.MonkeyPatch) -> None:
    location, _ = inputs
    store = CaseStore.open(location, mode="r+")
    builds: list[int] = []
    original = placement.PlacementAnatomy.build

    def counting(*args, **kwargs):
        builds.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(background_context.PlacementAnatomy, "build", counting)
    assert store_placement_anatomy(store)["skipped"] == 4 and not builds
    before = store.case_attrs(store.case_ids()[0])[ANATOMY_ATTR]
    assert store_placement_anatomy(store, overwrite=True)["written"] == 4 and len(builds) == 4
    assert store.case_attrs(store.case_ids()[0])[ANATOMY_ATTR] == before


def test_generate_reads_the_stored_contexts_and_writes_the_cases_it_writes_when_building_them(
    inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from synbt_factory.generate import GenerateConfig, run_generate
    from synbt_factory.generate.methods import SynTumorMethod

    location, _ = inputs
    bank = str(tmp_path / "bank.zarr")
    config = GenerateConfig(n=6, seed=3, workers=2, background_split=None)

    def run(out: str) -> dict[str, dict]:
        result = run_generate(
            config, out=tmp_path / out, prepared=location, bank=bank, method=SynTumorMethod.from_prepared(location)
        )
        store = CaseStore.open(tmp_path / out)
        assert len(result.written) == 6
        return {c: store.case_attrs(c)["placement"] for c in store.case_ids()}

    def refuse(*args, **kwargs):
        raise AssertionError("an anatomy was built although every background has one stored")

    with monkeypatch.context() as m:
        m.setattr(background_context.PlacementAnatomy, "build", refuse)
        stored = run("stored.zarr")
    monkeypatch.setattr(background_context, "has_stored_anatomy", lambda *a, **k: False)
    with caplog.at_level("INFO", logger="synbt_factory.generate.pipeline"):
        built = run("built.zarr")
    assert stored == built
    assert "no stored placement context" in caplog.text and "synbt data placement-context" in caplog.text
