"""synbt generate: determinism, resume after SIGKILL, verification, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.generate import GenerateConfig, run_generate
from synbt_factory.generate.methods import SynTumorMethod
from synbt_factory.generate.pipeline import KILL_AFTER_ENV
from synbt_factory.store import CaseStore, StoreError
from synbt_factory.store.verify import verify_store


def _generate(inputs: dict[str, str], out: Path, **kw) -> object:
    placement = kw.pop("placement_config", None)
    config = GenerateConfig(n=kw.pop("n", 4), seed=kw.pop("seed", 11), method="syntumor", **kw)
    return run_generate(
        config,
        out=out,
        prepared=inputs["prepared"],
        bank=inputs["bank"],
        method=SynTumorMethod.from_prepared(inputs["prepared"]),
        placement_config=placement,
    )


def _contents(path: Path) -> dict[str, tuple[bytes, bytes, bytes]]:
    store = CaseStore.open(path)
    return {
        c: tuple(store.read_array(c, n).tobytes() for n in ("image", "mask", "synthetic_mask"))
        for c in store.case_ids()
    }


def test_same_seed_same_cases_whatever_workers_and_batch_size(factory_inputs: dict[str, str], tmp_path: Path) -> None:
    _generate(factory_inputs, tmp_path / "a.zarr", workers=1, batch_size=1)
    _generate(factory_inputs, tmp_path / "b.zarr", workers=2, batch_size=4)
    a, b = _contents(tmp_path / "a.zarr"), _contents(tmp_path / "b.zarr")
    assert sorted(a) == ["SYN_000000", "SYN_000001", "SYN_000002", "SYN_000003"]
    assert a == b
    store = CaseStore.open(tmp_path / "a.zarr")
    attrs = store.case_attrs("SYN_000002")
    assert attrs["method"] == "syntumor" and attrs["seed"] == 11 and attrs["case_index"] == 2
    synthetic = store.read_array("SYN_000002", "synthetic_mask")
    assert synthetic.any() and np.all(store.read_array("SYN_000002", "mask")[synthetic > 0] == 1)
    card = store.attrs
    assert card["synthetic"] is True and "licence" in card and card["library_versions"]["zarr"]
    # a different seed gives different cases
    _generate(factory_inputs, tmp_path / "c.zarr", seed=12)
    assert _contents(tmp_path / "c.zarr") != a
    assert verify_store(tmp_path / "a.zarr").ok


def test_rerun_extends_and_keeps_finished_cases(factory_inputs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    _generate(factory_inputs, out, n=2)
    first = _contents(out)
    result = _generate(factory_inputs, out, n=3)
    assert result.skipped == ["SYN_000000", "SYN_000001"] and result.written == ["SYN_000002"]
    after = _contents(out)
    assert all(after[k] == v for k, v in first.items())


def test_other_settings_are_refused(factory_inputs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    _generate(factory_inputs, out, n=1)
    with pytest.raises(StoreError, match="other settings"):
        _generate(factory_inputs, out, n=1, seed=99)
    with pytest.raises(StoreError, match="placement"):  # placements of a resumed run follow the same rules
        _generate(factory_inputs, out, n=2, placement_config={"min_template_voxels": 1})
    assert len(_generate(factory_inputs, out, n=2, placement_config={"min_template_voxels": 50}).written) == 1
    with pytest.raises(StoreError, match="prepared"):
        _generate(factory_inputs, Path(factory_inputs["prepared"]), n=1)


def test_bad_arguments_get_clear_errors(factory_inputs: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["generate", "--data", factory_inputs["prepared"], "--bank", factory_inputs["bank"]]
    r = runner.invoke(app, [*base, "--n", "0", "--out", str(tmp_path / "x.zarr"), "--method", "syntumor"])
    assert r.exit_code == 2 and "n must be > 0" in r.output
    r = runner.invoke(app, [*base, "--n", "2", "--out", str(tmp_path / "y.zarr"), "--method", "synbt"])
    assert r.exit_code == 2 and "--vqvae" in r.output
    r = runner.invoke(
        app,
        [
            *base,
            "--n",
            "2",
            "--out",
            str(tmp_path / "z.zarr"),
            "--method",
            "synbt",
            "--vqvae",
            str(tmp_path / "missing.pt"),
            "--diffusion",
            str(tmp_path / "missing2.pt"),
        ],
    )
    assert r.exit_code == 2 and "missing.pt" in r.output
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # a path below a regular file cannot be created, even by root
    r = runner.invoke(app, [*base, "--n", "1", "--out", str(blocker / "s.zarr"), "--method", "syntumor"])
    assert r.exit_code == 2 and "a_file" in r.output


def test_sigkill_mid_run_then_resume_gives_every_case_once(factory_inputs: dict[str, str], tmp_path: Path) -> None:
    """A run SIGKILLed right after its 3rd committed case (the test-only ``SYNBT_TEST_KILL_AFTER`` hook of
    :func:`synbt_factory.generate.pipeline._commit_case`, so the crash point does not depend on the machine's
    speed) keeps exactly those 3 cases; a rerun adds the other 9, each once and as an uninterrupted run makes it."""
    out = tmp_path / "k.zarr"
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "generate",
        "--n",
        "12",
        "--out",
        str(out),
        "--method",
        "syntumor",
        "--data",
        factory_inputs["prepared"],
        "--bank",
        factory_inputs["bank"],
        "--seed",
        "5",
        "--workers",
        "2",
    ]
    killed = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        timeout=300,
        env={**os.environ, KILL_AFTER_ENV: "3"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    partial = CaseStore.open(out)
    before = {c: partial.read_array(c, "image").tobytes() for c in partial.case_ids()}
    assert len(before) == 3, sorted(before)
    resume_env = {k: v for k, v in os.environ.items() if k != KILL_AFTER_ENV}
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[2], env=resume_env)
    assert run.returncode == 0, run.stderr[-2000:]
    final = CaseStore.open(out)
    assert final.case_ids() == [f"SYN_{i:06d}" for i in range(12)]
    assert final.all_case_groups() == final.case_ids()
    assert all(final.read_array(c, "image").tobytes() == b for c, b in before.items())
    assert verify_store(out).ok
    # the resumed store equals an uninterrupted run
    _generate(factory_inputs, tmp_path / "ref.zarr", n=12, seed=5)
    assert _contents(out) == _contents(tmp_path / "ref.zarr")


def test_background_without_room_falls_back_to_an_alternate(factory_inputs: dict[str, str]) -> None:
    from synbt_factory.generate.jobs import CaseJob
    from synbt_factory.generate.placing import Placer
    from synbt_factory.synthesis.placement import PlacementError

    store = CaseStore.open(factory_inputs["prepared"])
    good = store.case_ids()[0]
    placer = Placer(factory_inputs["prepared"], factory_inputs["bank"], placement_config={"min_in_breast": 0.8})
    # a background that cannot take any tumor: its existing-tumor exclusion is forced to cover everything
    placer._open()
    ctx = placer._context(store, good, None)
    blocked = type(ctx)(**{**ctx.__dict__, "avoid": np.ones(ctx.shape, bool)})
    placer._contexts["BLOCKED"] = blocked
    placer._contexts.move_to_end("BLOCKED")
    job = CaseJob(index=0, case_id="SYN_000000", background="BLOCKED", seed=1, alternates=(good,))
    placed = placer.place(job)
    assert placed.background == good and placed.placement["background_attempt"] == 1
    with pytest.raises(PlacementError, match="SYN_000000.*BLOCKED"):
        placer.place(CaseJob(index=0, case_id="SYN_000000", background="BLOCKED", seed=1))
