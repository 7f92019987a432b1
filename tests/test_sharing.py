"""Stores and checkpoints meant for other groups: group-readable where the umask allows, no local paths."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from synbt_factory.checkpoint import save_checkpoint


@pytest.fixture
def group_umask():
    old = os.umask(0o002)
    yield
    os.umask(old)


def test_checkpoints_respect_a_group_umask(tmp_path: Path, group_umask: None) -> None:
    path = save_checkpoint(tmp_path / "model.pt", {"step": 1}, kind="segmenter", config={})
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o664, oct(mode)


def test_checkpoints_stay_private_under_a_private_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        path = save_checkpoint(tmp_path / "model.pt", {"step": 1}, kind="segmenter", config={})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_prepared_store_records_no_absolute_local_path(tmp_path: Path) -> None:
    from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
    from synbt_factory.phantom import write_phantom
    from synbt_factory.store import CaseStore

    write_phantom(tmp_path / "my_phantom", n=1, seed=0, size="tiny", healthy_fraction=0.0)
    prepare_dataset(tmp_path / "my_phantom", tmp_path / "p.zarr", config=PrepareConfig(fov_mm=(64, 64, 48)), workers=1)
    store = CaseStore.open(tmp_path / "p.zarr")
    attrs = store.attrs
    assert attrs["source_dir"] == "my_phantom"
    assert str(tmp_path) not in repr(attrs)
    case = store.case_attrs(store.case_ids()[0])
    assert str(tmp_path) not in repr(case)  # the case's source files too: relative to the dataset root
    assert all((tmp_path / "my_phantom" / f).is_file() for f in case["source_files"])
