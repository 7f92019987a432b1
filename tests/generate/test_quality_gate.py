"""The quality gate of synbt generate: a SynBT run whose tumors are holes stops after its first batch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.evaluate.realism_figures import post_over_pre
from synbt_factory.generate import GenerateConfig, run_generate
from synbt_factory.generate.methods import Synthesized
from synbt_factory.generate.pipeline import QualityGateError
from synbt_factory.generate.placing import PlacedCase
from synbt_factory.generate.quality_gate import QualityGate
from synbt_factory.generate.synbt_method import SynBTMethod
from synbt_factory.store import CaseStore


class _FakeSynBT:
    """Stands in for SynBT (same name, batched): ``holes`` sets the tumor to 0.05 on pre and post (a dark hole,
    as an undertrained model gives); otherwise the tumor enhances by ``ratio`` and nothing else changes."""

    name = "synbt"
    batched = True

    def __init__(self, *, holes: bool, ratio: float = 2.0) -> None:
        self.holes, self.ratio = holes, ratio

    def card(self) -> dict[str, Any]:
        return {"method": self.name, "fake": "holes" if self.holes else "good"}

    def synthesize(self, cases: Sequence[PlacedCase]) -> list[Synthesized]:
        out = []
        for case in cases:
            image = case.image.copy()
            inside = case.synthetic_mask > 0
            if self.holes:
                image[:, inside] = 0.05
            else:
                image[1][inside] = image[0][inside] * self.ratio
            out.append((image, {"fake": True}, {}))
        return out


def _real_ratio(prepared: str) -> float:
    store = CaseStore.open(prepared)
    ratios = [post_over_pre(*(lambda a: (a["image"], a["mask"]))(store.read_case(c)[0])) for c in store.case_ids()]
    return float(np.mean([r for r in ratios if r is not None]))


def _run(factory_inputs: dict[str, str], out: Path, method: Any, gate: QualityGate | None) -> Any:
    config = GenerateConfig(n=5, seed=0, method="synbt", batch_size=2, workers=1)
    return run_generate(
        config,
        out=out,
        prepared=factory_inputs["prepared"],
        bank=factory_inputs["bank"],
        method=method,
        quality_gate=gate,
    )


def test_holes_stop_the_run_after_the_first_batch_and_finished_cases_are_kept(
    factory_inputs: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "holes.zarr"
    with pytest.raises(QualityGateError, match=r"synthetic post/pre \(median\) = .* expected .*synbt eval vqvae"):
        _run(factory_inputs, out, _FakeSynBT(holes=True), QualityGate())
    store = CaseStore.open(out)
    assert store.case_ids() == ["SYN_000000", "SYN_000001"]  # the first batch, kept
    gate = store.attrs["quality_gate"]
    assert gate["verdict"] == "fail" and gate["failed"] == ["enhancement"]
    assert gate["checked_cases"] == ["SYN_000000", "SYN_000001"]
    assert store.attrs["complete_cases"] == 2


def test_good_tumors_pass_and_the_run_finishes(factory_inputs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "good.zarr"
    result = _run(
        factory_inputs, out, _FakeSynBT(holes=False, ratio=_real_ratio(factory_inputs["prepared"])), QualityGate()
    )
    assert len(result.written) == 5
    gate = CaseStore.open(out).attrs["quality_gate"]
    assert gate["verdict"] == "pass" and gate["failed"] == []
    assert gate["figures"]["footprint_outside_over_inside_median"] == 0.0


def test_without_a_gate_the_run_finishes_and_the_card_says_so(factory_inputs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "off.zarr"
    result = _run(factory_inputs, out, _FakeSynBT(holes=True), None)
    assert len(result.written) == 5
    gate = CaseStore.open(out).attrs["quality_gate"]
    assert gate["verdict"] == "not checked" and "--no-quality-gate" in gate["reason"]


def test_cli_generate_stops_with_exit_1_and_no_quality_gate_overrides(
    factory_inputs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SynBTMethod, "from_checkpoints", classmethod(lambda cls, *a, **k: _FakeSynBT(holes=True)))
    out = tmp_path / "cli.zarr"
    for name in ("vq.pt", "d.pt"):  # generate checks that the checkpoint files exist before it starts
        (tmp_path / name).write_bytes(b"stand-in: from_checkpoints is replaced")
    args = [
        "generate",
        "--n",
        "4",
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--out",
        str(out),
        "--data",
        factory_inputs["prepared"],
        "--bank",
        factory_inputs["bank"],
        "--vqvae",
        str(tmp_path / "vq.pt"),
        "--diffusion",
        str(tmp_path / "d.pt"),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())
    assert "synthetic post/pre (median)" in text and "--no-quality-gate" in text
    assert len(CaseStore.open(out).case_ids()) == 2
    res = CliRunner().invoke(app, [*args, "--no-quality-gate"])  # resumes the same store
    assert res.exit_code == 0, res.output
    store = CaseStore.open(out)
    assert len(store.case_ids()) == 4
    assert store.attrs["quality_gate"]["verdict"] == "not checked"
