"""The SynTumor path loads neither torch, MONAI, Dask nor scipy.interpolate, and a case's group metadata is written
twice: attributes, marker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from synbt_factory.store import CaseStore

_SYNTUMOR_RUN = r"""
import json, sys
_UNWANTED = ("torch", "monai", "dask", "distributed", "scipy.interpolate")
from typer.testing import CliRunner
from cli.main import app

prepared, bank, out = sys.argv[1:4]
result = CliRunner().invoke(app, ["generate", "--method", "syntumor", "--n", "2", "--seed", "3", "--workers", "1",
                                  "--data", prepared, "--bank", bank, "--out", out])
print(json.dumps({"exit": result.exit_code, "output": result.output[-500:],
                  "loaded": sorted(m for m in _UNWANTED if m in sys.modules)}))
"""


def test_syntumor_generate_skips_heavy_imports(factory_inputs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    run = subprocess.run(
        [sys.executable, "-c", _SYNTUMOR_RUN, factory_inputs["prepared"], factory_inputs["bank"], str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["exit"] == 0, report["output"]
    assert report["loaded"] == []
    store = CaseStore.open(out)
    assert store.case_ids() == ["SYN_000000", "SYN_000001"]
    versions = store.attrs["library_versions"]
    assert versions["torch"] and versions["monai"] and versions["zarr"]  # read without importing them


def test_write_case_writes_attributes_once_then_the_marker_last(tmp_path: Path, monkeypatch) -> None:
    import synbt_factory.store.local_writer as local_writer

    store = CaseStore.create(tmp_path / "s.zarr", kind="synthetic", card={})
    rng = np.random.default_rng(0)
    arrays = {"image": rng.random((2, 12, 10, 8)).astype(np.float16), "mask": np.ones((12, 10, 8), np.uint8)}
    writes: list[tuple[str, bytes]] = []  # (key in the store, bytes), in the order the files took their names
    opened: dict[str, bytes] = {}
    real_open, real_replace = open, local_writer.os.replace
    root = tmp_path / "s.zarr"

    class Recording:
        def __init__(self, path, mode):  # noqa: ANN001
            self.path, self.file = Path(path), real_open(path, mode)

        def __enter__(self):  # noqa: ANN204
            return self

        def __exit__(self, *exc):  # noqa: ANN002, ANN204
            self.file.close()
            if self.path.name.endswith(".partial"):
                opened[str(self.path)] = self.path.read_bytes()
            else:
                writes.append((str(self.path.relative_to(root)), self.path.read_bytes()))

        def write(self, data):  # noqa: ANN001, ANN202
            return self.file.write(data)

    def replace(src, dst):  # noqa: ANN001, ANN202
        writes.append((str(Path(dst).relative_to(root)), opened.pop(str(src))))
        return real_replace(src, dst)

    monkeypatch.setattr(local_writer, "open", Recording, raising=False)
    monkeypatch.setattr(local_writer.os, "replace", replace)
    store.write_case("SYN_000000", arrays, {"affine": np.eye(4).tolist(), "spacing": [1.0, 1.0, 1.0], "seed": 4})
    monkeypatch.undo()
    group_key = "cases/SYN_000000/zarr.json"
    group_writes = [json.loads(v)["attributes"] for k, v in writes if k == group_key]
    assert len(group_writes) == 2
    first, last = group_writes
    assert "complete" not in first and first["seed"] == 4 and set(first["sha256"]) == {"image", "mask"}
    assert last == {**first, "complete": True}
    assert writes[0][0] == group_key and writes[-1][0] == group_key  # the group first, the marker last
    assert any(k.startswith("cases/SYN_000000/image/c") for k, _ in writes[1:-1])
    assert store.is_complete("SYN_000000")
    assert np.array_equal(store.read_array("SYN_000000", "image"), arrays["image"])
