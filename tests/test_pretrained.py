"""The shipped generator weights: pinned hashes, refusal of damaged files, packing, and the recipe presets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from synbt_factory import pretrained
from synbt_factory.checkpoint import CheckpointError, file_sha256, load_checkpoint, save_checkpoint
from synbt_factory.config import config_to_dict
from synbt_factory.pretrained import COMPONENTS, PRETRAINED_SHA256, install_pretrained, pack_checkpoint, pretrained_set

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_file_matches_its_pinned_hash_and_manifest() -> None:
    shipped = pretrained_set("phantom_tiny")
    for component in COMPONENTS:
        path = shipped.path(component)
        assert file_sha256(path) == PRETRAINED_SHA256["phantom_tiny"][component]
        assert shipped.manifest["files"][component]["sha256"] == PRETRAINED_SHA256["phantom_tiny"][component]
        assert path.stat().st_size < 20e6


def test_shipped_weights_rebuild_their_models_and_the_denoiser_names_the_shipped_autoencoder() -> None:
    from synbt_factory.models.diffusion import load_diffusion
    from synbt_factory.models.vqvae import load_vqvae

    shipped = pretrained_set("phantom_tiny")
    load_vqvae(shipped.path("vqvae_patch"))
    load_vqvae(shipped.path("vqvae_volume"))
    _, _, _, vqvae_sha = load_diffusion(shipped.path("diffusion"))
    assert vqvae_sha == PRETRAINED_SHA256["phantom_tiny"]["vqvae_volume"]


def test_a_damaged_file_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    good = b"weights"
    (folder / "diffusion.pt").write_bytes(good)
    sha = file_sha256(folder / "diffusion.pt")
    monkeypatch.setitem(PRETRAINED_SHA256, "fake", {"diffusion": sha})
    fake = pretrained.PretrainedSet(name="fake", folder=folder, manifest={})
    assert fake.path("diffusion") == folder / "diffusion.pt"
    (folder / "diffusion.pt").write_bytes(good + b"!")
    with pytest.raises(CheckpointError, match="diffusion.pt"):
        fake.path("diffusion")
    (folder / "diffusion.pt").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        fake.path("diffusion")
    with pytest.raises(CheckpointError, match="no component"):
        fake.path("vqvae_patch")


def test_install_copies_the_verified_file_and_keeps_an_identical_one(tmp_path: Path) -> None:
    dest = tmp_path / "run" / "diffusion" / "final.pt"
    sha = install_pretrained("phantom_tiny", "diffusion", dest)
    assert file_sha256(dest) == sha == PRETRAINED_SHA256["phantom_tiny"]["diffusion"]
    mtime = dest.stat().st_mtime_ns
    install_pretrained("phantom_tiny", "diffusion", dest)
    assert dest.stat().st_mtime_ns == mtime
    assert not list(dest.parent.glob("*.partial"))


def test_install_is_quiet_at_the_default_verbosity(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The demo logged two lines per shipped file that its closing table repeats (issue #22, item 8)."""
    with caplog.at_level("INFO", logger="synbt_factory"):
        install_pretrained("phantom_tiny", "diffusion", tmp_path / "final.pt")
    assert not [r for r in caplog.records if r.levelno >= 20], caplog.text


def test_pack_keeps_what_the_loader_reads_and_drops_training_state(tmp_path: Path) -> None:
    from synbt_factory.models.vqvae import PatchVolumeVQVAE, load_vqvae, vqvae_preset

    torch.manual_seed(0)
    config = vqvae_preset("tiny")
    model = PatchVolumeVQVAE(config)
    source = save_checkpoint(
        tmp_path / "final.pt",
        {"model": model.state_dict(), "optimizer_g": {"state": {}, "param_groups": []}, "case_ids": ["A"], "step": 3},
        kind="vqvae",
        config=config_to_dict(config),
    )
    sha = pack_checkpoint(source, tmp_path / "packed.pt", replace={"note": "x"})
    packed = load_checkpoint(tmp_path / "packed.pt", kind="vqvae")
    assert sha == file_sha256(tmp_path / "packed.pt")
    assert "optimizer_g" not in packed and "case_ids" not in packed
    assert packed["step"] == 3 and packed["note"] == "x"
    rebuilt, _, _ = load_vqvae(tmp_path / "packed.pt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor), name


@pytest.mark.parametrize("stage", ["patch", "volume"])
def test_cpu_preset_is_the_readme_recipe(stage: str) -> None:
    """``--preset cpu`` equals the README recipe's ``--preset tiny --config configs/vqvae_cpu_<stage>.json``."""
    from synbt_factory.training.vqvae import model_config_from_dict, train_config_from_dict, train_presets

    model, train = train_presets("tiny", stage)
    overrides = json.loads((REPO / f"configs/vqvae_cpu_{stage}.json").read_text())
    train = train_config_from_dict({**overrides.get("train", {}), "stage": stage}, train)
    train = dataclasses.replace(train, steps=30_000) if stage == "patch" else dataclasses.replace(train, steps=500)
    cpu_model, cpu_train = train_presets("cpu", stage)
    assert config_to_dict(cpu_train) == config_to_dict(train)
    if stage == "patch":
        assert config_to_dict(cpu_model) == config_to_dict(model_config_from_dict(overrides["model"], model))


def test_init_names_a_shipped_component_or_a_file(tmp_path: Path) -> None:
    """``--init pretrained:phantom_tiny`` is the verified shipped file of the trainer's component; a path is a path."""
    from synbt_factory.pretrained import init_checkpoint

    shipped = init_checkpoint("pretrained:phantom_tiny", "vqvae_patch")
    assert shipped == pretrained_set("phantom_tiny").path("vqvae_patch")
    assert init_checkpoint("pretrained:phantom_tiny", "diffusion").name == "diffusion.pt"
    assert init_checkpoint(tmp_path / "final.pt", "diffusion") == tmp_path / "final.pt"
    with pytest.raises(CheckpointError, match="no pretrained set 'nope'"):
        init_checkpoint("pretrained:nope", "diffusion")
