"""A tiny phantom, prepared, with a tumor bank: the factory's inputs, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from synbt_factory.data.prepare import PrepareConfig, prepare_dataset

TINY_FOV = PrepareConfig(fov_mm=(64, 64, 48))


@pytest.fixture(scope="session")
def factory_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from synbt_factory.phantom import write_phantom
    from synbt_factory.synthesis.bank import build_bank

    root = tmp_path_factory.mktemp("factory")
    write_phantom(root / "phantom", n=6, seed=3, size="tiny", healthy_fraction=0.0)
    prepare_dataset(root / "phantom", root / "prepared.zarr", config=TINY_FOV, workers=2)
    build_bank(root / "prepared.zarr", root / "bank.zarr", splits=("train", "test"))
    return {"prepared": str(root / "prepared.zarr"), "bank": str(root / "bank.zarr"), "root": str(root)}
