"""A file that is not a synbt checkpoint is named as such, without the unpickler's advice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


class _NotPlainData:
    """An object the safe loader refuses (no synbt checkpoint holds one)."""


def test_a_text_file_is_not_a_synbt_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="is not a synbt checkpoint") as info:
        load_checkpoint(text)
    assert "weights_only" not in str(info.value) and "PyTorch 2.6" not in str(info.value)


def test_a_torch_file_with_python_objects_is_not_a_synbt_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "objects.pt"
    torch.save({"kind": "vqvae", "config": {}, "x": _NotPlainData()}, path)
    with pytest.raises(CheckpointError, match="is not a synbt checkpoint") as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value)


def test_a_truncated_checkpoint_is_named_damaged_in_one_line(tmp_path: Path) -> None:
    whole = save_checkpoint(tmp_path / "ok.pt", {"w": torch.zeros(4)}, kind="vqvae", config={})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or damaged") as info:
        load_checkpoint(cut)
    assert "\n" not in str(info.value)
    assert load_checkpoint(whole, kind="vqvae")["kind"] == "vqvae"


def test_segment_eval_with_a_text_file_as_ckpt_is_one_plain_line(tmp_path: Path) -> None:
    """It used to print torch's advice about ``weights_only`` and PyTorch 2.6."""
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    result = CliRunner().invoke(
        app,
        [
            "segment",
            "eval",
            "--ckpt",
            str(text),
            "--data",
            str(tmp_path / "p.zarr"),
            "--out",
            str(tmp_path / "eval"),
            "--device",
            "cpu",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error:" in line]
    assert len(errors) == 1 and "not a synbt checkpoint" in errors[0] and str(text) in errors[0], result.output
    assert "weights_only" not in result.output and "Traceback" not in result.output


def test_train_diffusion_refuses_a_text_file_as_vqvae_before_announcing_its_run(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    result = CliRunner().invoke(
        app,
        [
            "train",
            "diffusion",
            "--vqvae",
            str(text),
            "--data",
            str(tmp_path / "p.zarr"),
            "--out",
            str(tmp_path / "run"),
            "--preset",
            "tiny",
            "--device",
            "cpu",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--vqvae" in lines[0] and "not a synbt checkpoint" in lines[0], result.output
    assert not (tmp_path / "run").exists()
