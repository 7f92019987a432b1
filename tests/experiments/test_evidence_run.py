"""``run_evidence`` end to end on a miniature config: every arm, both sizes, two seeds, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synbt_factory.experiments.evidence import run_evidence
from synbt_factory.experiments.evidence_config import EvidenceConfig
from synbt_factory.experiments.evidence_data import EvidencePaths
from synbt_factory.experiments.evidence_runs import read_run_rows
from synbt_factory.store import CaseStore

MINI = EvidenceConfig(
    name="mini",
    own_cases=24,
    val_cases=1,
    external_cases=3,
    sizes=(2, 3),
    tissue_steps=2,
    n_synthetic=3,
    ddim_steps=2,
    quality_gate=False,
    seg_crop=(32, 32, 32),
    seg_steps=2,
    budget_steps=2,
    budget_every=1,
    seeds=(0, 1),
    parallel_runs=1,
    n_boot=50,
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evidence") / "run"
    run_evidence(MINI, out)
    return out


def test_every_arm_is_scored_on_the_same_cases_with_the_same_seeds(finished: Path) -> None:
    rows = [r for p in sorted(finished.glob("runs/*/*/*/cases.csv")) for r in read_run_rows(p)]
    split = json.loads((finished / "split.json").read_text())
    external = CaseStore.open(EvidencePaths(finished).prepared("external")).case_ids()
    assert len(split["test"]) == 24 - 3 - 1 and len(external) == 3
    keys = {}
    for arm in MINI.arms:
        for size in MINI.sizes:
            keys[(arm, size)] = sorted(
                (r["seed"], r["test_set"], r["case_id"]) for r in rows if r["arm"] == arm and r["size"] == size
            )
    expected = sorted((seed, "own", c) for seed in MINI.seeds for c in split["test"]) + sorted(
        (seed, "external", c) for seed in MINI.seeds for c in external
    )
    for key, got in keys.items():
        assert got == sorted(expected), key
    assert all(0.0 <= r["dice"] <= 1.0 for r in rows)


def test_training_stores_hold_only_their_size_of_the_pool(finished: Path) -> None:
    paths = EvidencePaths(finished)
    split = json.loads((finished / "split.json").read_text())
    for size in MINI.sizes:
        store = CaseStore.open(paths.real(size))
        train = [c for c in store.case_ids() if store.case_attrs(c)["split"] == "train"]
        assert sorted(train) == sorted(split["train_pool"][:size])
        assert not set(store.case_ids()) & set(split["test"])


def test_synthetic_arms_share_backgrounds_and_placed_masks(finished: Path) -> None:
    paths = EvidencePaths(finished)
    for size in MINI.sizes:
        stores = {arm: CaseStore.open(paths.synthetic(arm, size)) for arm in MINI.synthetic_arms}
        ids = stores["syntumor"].case_ids()
        assert len(ids) == MINI.n_synthetic
        for cid in ids:
            masks = [s.read_array(cid, "synthetic_mask") for s in stores.values()]
            sources = {s.case_attrs(cid)["source_case"] for s in stores.values()}
            assert len(sources) == 1 and sources <= set(
                json.loads((finished / "split.json").read_text())["train_pool"][:size]
            )
            for mask in masks[1:]:
                np.testing.assert_array_equal(mask, masks[0])
            images = [s.read_array(cid, "image") for s in stores.values()]
            assert not np.array_equal(images[0], images[1])  # the texture differs


def test_outputs_are_written_and_a_rerun_redoes_nothing(finished: Path) -> None:
    for name in (
        "evidence.md",
        "evidence.json",
        "evidence_cases.csv",
        "dice_vs_size.png",
        "budget/learning_curve.png",
        "budget/learning_curve.json",
    ):
        assert (finished / name).is_file(), name
    table = (finished / "evidence.md").read_text()
    for arm in MINI.arms:
        assert f"| {arm} " in table
    markers = sorted(finished.glob("runs/*/*/*/done.json")) + sorted(finished.glob("steps/*.done.json"))
    assert len(list(finished.glob("runs/*/*/*/done.json"))) == len(MINI.arms) * len(MINI.sizes) * len(MINI.seeds)
    before = {p: p.stat().st_mtime_ns for p in markers}
    summary = json.loads((finished / "evidence.json").read_text())["summary"]
    run_evidence(MINI, finished)
    assert {p: p.stat().st_mtime_ns for p in markers} == before
    evidence = json.loads((finished / "evidence.json").read_text())
    assert evidence["summary"] == summary
    calls = evidence["timing"]["segmenter_phase_calls"]  # the rerun trained nothing and adds no call
    assert [c["runs_trained"] for c in calls] == [len(MINI.arms) * len(MINI.sizes) * len(MINI.seeds)]
    whole = evidence["timing"]["whole_run_wall_seconds (steps + segmenter phases)"]
    assert whole >= calls[0]["runs_wall_seconds"] + sum(evidence["timing"]["steps_wall_seconds"].values()) - 0.2
