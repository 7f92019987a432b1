"""The exclusive writer lock of a store: one writer at a time, stale locks taken over, readers unaffected."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.store import CaseStore, StoreError, StoreLayout
from synbt_factory.store.lock import LOCK_NAME, StoreLockedError, holds_writer_lock, read_lock, writer_lock
from synbt_factory.store.verify import verify_store

REPO = Path(__file__).parents[2]
SHAPE = (32, 32, 24)

HOLDER = """
import sys
from synbt_factory.store.lock import writer_lock
with writer_lock(sys.argv[1], command="generate"):
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """Another process holding the writer lock of ``tmp_path/s.zarr`` until the test ends."""
    location = tmp_path / "s.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(location)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield location, proc
    if proc.poll() is None:
        proc.communicate("\n")


def _release(proc: subprocess.Popen) -> None:
    proc.communicate("\n")
    assert proc.returncode == 0


def _prepared(path: Path) -> Path:
    """Two prepared cases with a breast mask and a tumor each: enough for a bank and a generate command."""
    store = CaseStore.create(path, kind="prepared", card={}, layout=StoreLayout(chunk=8))
    g = np.indices(SHAPE)
    for i in range(2):
        breast = (g[0] - 16) ** 2 / 14**2 + (g[1] - 18) ** 2 / 12**2 + (g[2] - 12) ** 2 / 10**2 <= 1
        tumor = ((g[0] - 15 - i) ** 2 + (g[1] - 18) ** 2 + (g[2] - 12) ** 2) <= 9
        image = np.stack([np.where(breast, 0.6, 0.05), np.where(tumor, 1.4, np.where(breast, 0.7, 0.05))])
        store.write_case(
            f"C{i}",
            {"image": image.astype(np.float16), "mask": tumor.astype(np.uint8), "breast": breast.astype(np.uint8)},
            {"affine": np.eye(4).tolist(), "spacing": [1.0, 1.0, 1.0], "split": "train"},
        )
    return path


def test_second_writer_is_refused_naming_the_holder(held: tuple[Path, subprocess.Popen]) -> None:
    location, proc = held
    lock = location / LOCK_NAME
    content = lock.read_bytes()
    with pytest.raises(StoreLockedError) as refused:
        with writer_lock(str(location), command="prepare"):
            pass
    message = str(refused.value)
    assert f"pid {proc.pid}" in message and socket.gethostname() in message and "'generate'" in message
    assert "wait for it to finish" in message
    assert lock.read_bytes() == content and not holds_writer_lock(location)
    _release(proc)
    assert not lock.exists()
    with writer_lock(str(location), command="prepare"):
        assert holds_writer_lock(location) and read_lock(location).command == "prepare"  # type: ignore[union-attr]


def test_generate_is_refused_while_another_writer_holds_the_store(
    tmp_path: Path, held: tuple[Path, subprocess.Popen]
) -> None:
    from synbt_factory.synthesis.bank import build_bank

    out, proc = held
    prepared = _prepared(tmp_path / "p.zarr")
    build_bank(prepared, tmp_path / "bank.zarr")
    cmd = [
        "generate",
        "--data",
        str(prepared),
        "--bank",
        str(tmp_path / "bank.zarr"),
        "--out",
        str(out),
        "--method",
        "syntumor",
        "--n",
        "2",
        "--workers",
        "1",
    ]
    run = CliRunner().invoke(app, cmd)
    assert run.exit_code == 2, run.output
    assert f"pid {proc.pid}" in " ".join(run.output.split()) and "Traceback" not in run.output
    assert sorted(os.listdir(out)) == [LOCK_NAME]  # nothing was written, the holder's lock is kept
    assert read_lock(out).pid == proc.pid  # type: ignore[union-attr]


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(proc.stdout)


def _write_lock(location: Path, *, pid: int, host: str) -> Path:
    location.mkdir(parents=True, exist_ok=True)
    lock = location / LOCK_NAME
    lock.write_text(
        json.dumps(
            {"pid": pid, "host": host, "command": "generate", "started": "2024-01-01T00:00:00+00:00", "token": "t0"}
        )
    )
    return lock


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    location = tmp_path / "s.zarr"
    pid = _dead_pid()
    lock = _write_lock(location, pid=pid, host=socket.gethostname())
    with caplog.at_level("WARNING", logger="synbt_factory"):
        with writer_lock(str(location), command="generate"):
            assert holds_writer_lock(location)
    assert "stale" in caplog.text and f"pid {pid}" in caplog.text
    assert not lock.exists()


def test_lock_of_another_host_is_never_broken(tmp_path: Path) -> None:
    location = tmp_path / "s.zarr"
    lock = _write_lock(location, pid=_dead_pid(), host="some-other-host")
    content = lock.read_bytes()
    with pytest.raises(StoreLockedError, match=f"some-other-host.*if you are sure.*remove {lock}"):
        with writer_lock(str(location), command="generate"):
            pass
    assert lock.read_bytes() == content


def test_unreadable_lock_is_refused_naming_it(tmp_path: Path) -> None:
    location = tmp_path / "s.zarr"
    location.mkdir()
    (location / LOCK_NAME).write_text("")
    with pytest.raises(StoreLockedError, match=f"remove {location / LOCK_NAME}"):
        with writer_lock(str(location), command="generate"):
            pass


def test_lock_is_removed_after_an_error(tmp_path: Path) -> None:
    from synbt_factory.generate import GenerateConfig, run_generate

    location = tmp_path / "new.zarr"
    with pytest.raises(RuntimeError, match="boom"):
        with writer_lock(str(location), command="generate"):
            assert (location / LOCK_NAME).exists()
            raise RuntimeError("boom")
    assert not location.exists()  # made for the lock only, and empty again
    with pytest.raises(StoreError, match="does not exist"):
        run_generate(
            GenerateConfig(n=1, seed=0, method="syntumor"),
            out=location,
            prepared=tmp_path / "missing.zarr",
            bank=tmp_path / "bank.zarr",
            method=None,
        )  # type: ignore[arg-type]
    assert not location.exists()


def test_readers_verify_and_info_ignore_the_lock(tmp_path: Path) -> None:
    location = _prepared(tmp_path / "p.zarr")
    CaseStore.open(location, mode="r+")._cases["C1"].attrs.update({"complete": False})
    with pytest.raises(StoreError, match="writer lock"):
        CaseStore.open(location, mode="r+").remove_incomplete()
    assert CaseStore.open(location).incomplete_case_ids() == ["C1"]
    with writer_lock(str(location), command="generate"):
        store = CaseStore.open(location)
        assert store.case_ids() == ["C0"] and store.read_array("C0", "mask").sum() > 0
        result = verify_store(location)
        assert result.orphans == [] and result.incomplete == ["C1"] and not result.bad_cases
        run = CliRunner().invoke(app, ["store", "info", str(location), "--json"])
        assert run.exit_code == 0 and json.loads(run.output)["complete_cases"] == 1
        assert CaseStore.open(location, mode="r+").remove_incomplete() == ["C1"]
        run = CliRunner().invoke(app, ["store", "verify", str(location)])
        assert run.exit_code == 0, run.output
    assert not (location / LOCK_NAME).exists() and os.listdir(location)
