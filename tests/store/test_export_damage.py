"""``synbt store export`` on a damaged store: one error line naming the case and the fix, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.store import CaseStore, StoreLayout

SHAPE = (16, 16, 12)


def _store(path: Path) -> Path:
    rng = np.random.default_rng(0)
    store = CaseStore.create(path, kind="prepared", card={}, layout=StoreLayout(chunk=8))
    for case_id in ("CASE_000", "CASE_001"):
        image = (rng.random((2, *SHAPE)) + 0.5).astype(np.float16)
        store.write_case(
            case_id,
            {"image": image, "mask": (image[1] > 1.3).astype(np.uint8)},
            {"affine": np.eye(4).tolist(), "spacing": [1.0] * 3, "split": "train"},
        )
    return path


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _corrupt_chunk(store: Path) -> None:
    chunk = sorted(p for p in (store / "cases/CASE_001/image/c").rglob("*") if p.is_file())[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)  # a zstd frame that cannot decode
    chunk.write_bytes(bytes(data))


DAMAGES: dict[str, Callable[[Path], None]] = {
    # every chunk of the mask gone: reads back as zeros, only the checksum tells
    "deleted_chunks": lambda s: [p.unlink() for p in (s / "cases/CASE_001/mask/c").rglob("*") if p.is_file()],
    "corrupt_chunk": _corrupt_chunk,
    "huge_declared_shape": lambda s: _edit_json(
        s / "cases/CASE_001/mask/zarr.json", lambda d: d.__setitem__("shape", [400_000, 400_000, 400_000])
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("fmt", ["nifti", "hdf5"])
def test_export_of_a_damaged_store_is_one_error_line(tmp_path: Path, damage: str, fmt: str) -> None:
    store = _store(tmp_path / "p.zarr")
    DAMAGES[damage](store)
    out = tmp_path / ("export.h5" if fmt == "hdf5" else "export")
    result = CliRunner().invoke(app, ["store", "export", str(store), "--format", fmt, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "CASE_001" in errors[0], result.output
