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


@pytest.fixture(scope="session")
def tiny_checkpoints(factory_inputs: dict[str, str]) -> tuple[Path, Path]:
    """A VQ-VAE and a denoiser of the tiny presets, trained for 2 steps (quality is not the point)."""
    import dataclasses

    from synbt_factory.training.diffusion import diffusion_train_preset, train_diffusion_from_store
    from synbt_factory.training.vqvae import train_presets, train_vqvae

    root = Path(factory_inputs["root"])
    model_cfg, train_cfg = train_presets("tiny", "patch")
    train_vqvae(
        factory_inputs["prepared"],
        root / "vq",
        train_config=dataclasses.replace(train_cfg, steps=2),
        model_config=model_cfg,
        device="cpu",
    )
    d_model, d_train = diffusion_train_preset("tiny")
    train_diffusion_from_store(
        root / "vq" / "final.pt",
        factory_inputs["prepared"],
        root / "diff",
        model_config=d_model,
        train_config=dataclasses.replace(d_train, steps=2),
        device="cpu",
    )
    return root / "vq" / "final.pt", root / "diff" / "final.pt"
