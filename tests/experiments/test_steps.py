"""The marker-based step runner shared by the demo and the evidence experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synbt_factory.experiments.steps import StepError, StepRunner, flat_marker, outputs_marker


def _counting(calls: list[str], name: str, result: object = None):
    def step():
        calls.append(name)
        return {"n": len(calls)} if result is None else result

    return step


def test_finished_steps_are_skipped_and_their_markers_kept(tmp_path: Path) -> None:
    calls: list[str] = []
    runner = StepRunner(tmp_path, marker=flat_marker)
    steps = [(name, _counting(calls, name)) for name in ("a", "b")]
    first = runner.run_all(steps)
    assert calls == ["a", "b"] and not any(o.skipped for o in first)
    marker = json.loads((tmp_path / "steps" / "a.done.json").read_text())
    assert marker["step"] == "a" and marker["n"] == 1 and {"seconds", "cpu_seconds", "finished"} <= set(marker)
    again = StepRunner(tmp_path).run_all(steps)
    assert calls == ["a", "b"] and all(o.skipped for o in again)
    assert [o.marker for o in again] == [o.marker for o in first]
    assert list(StepRunner(tmp_path).finished()) == ["a", "b"]


def test_independent_steps_rerun_alone_downstream_steps_rerun_after(tmp_path: Path) -> None:
    calls: list[str] = []
    steps = [(name, _counting(calls, name)) for name in ("a", "b", "c")]
    StepRunner(tmp_path).run_all(steps)
    (tmp_path / "steps" / "b.done.json").unlink()
    calls.clear()
    StepRunner(tmp_path).run_all(steps)
    assert calls == ["b"]
    (tmp_path / "steps" / "b.done.json").unlink()
    calls.clear()
    StepRunner(tmp_path, rerun_downstream=True).run_all(steps)
    assert calls == ["b", "c"]


def test_outputs_marker_needs_its_outputs(tmp_path: Path) -> None:
    def writes() -> tuple[dict[str, str], dict[str, int]]:
        (tmp_path / "made.txt").write_text("x")
        return {"file": "made.txt"}, {"k": 1}

    runner = StepRunner(tmp_path, marker=outputs_marker)
    outcome = runner.run("good", writes)
    assert outcome.marker["outputs"] == {"file": "made.txt"} and outcome.marker["info"] == {"k": 1}
    assert outcome.marker["version"] == 1 and runner.done("good") == outcome.marker
    with pytest.raises(StepError, match="finished without writing") as err:
        runner.run("bad", lambda: ({"file": "missing.txt"}, {}))
    assert err.value.step == "bad" and runner.done("bad") is None


def test_a_failing_step_leaves_no_marker_and_names_itself(tmp_path: Path) -> None:
    class Mine(RuntimeError):
        pass

    def boom() -> dict[str, int]:
        raise ValueError("no")

    runner = StepRunner(tmp_path, error=lambda step, reason: Mine(f"{step}: {reason}"))
    with pytest.raises(Mine, match="boom: ValueError: no") as err:
        runner.run("boom", boom)
    assert isinstance(err.value.__cause__, ValueError) and runner.done("boom") is None

    def own() -> dict[str, int]:
        raise Mine("as is")

    with pytest.raises(Mine, match="^as is$"):
        StepRunner(tmp_path, passthrough=(Mine,)).run("own", own)


def test_an_unreadable_marker_runs_the_step_again(tmp_path: Path) -> None:
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "a.done.json").write_text("{not json")
    calls: list[str] = []
    outcome = StepRunner(tmp_path).run("a", _counting(calls, "a"))
    assert calls == ["a"] and not outcome.skipped
