"""The run-folder convention every trainer shares: names, opt-in resume, the resume check, seeding, metric logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synbt_factory.checkpoint import CheckpointError, load_checkpoint
from synbt_factory.data.volumes import pad_to_multiple
from synbt_factory.training.runs import (
    ResumeConfigError,
    RunFolder,
    changed_fields,
    seeded_torch,
    stream_seed,
)


def test_run_folder_names_and_opt_in_resume(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run", "tissue")
    assert (run.last.name, run.final.name, run.best.name) == ("last.pt", "final.pt", "best.pt")
    assert run.metric_log.path.name == "metrics.jsonl" and run.config_path.name == "config.json"
    assert run.open(resume=True) is None and run.open(resume=False) is None
    assert not run.path.exists()  # opening a run never makes its folder
    run.save(run.last, {"step": 3}, config={"a": 1})
    with pytest.raises(FileExistsError, match="last.pt"):
        run.open(resume=False)
    assert run.open(resume=True)["step"] == 3
    with pytest.raises(CheckpointError, match="expected 'vqvae'"):
        RunFolder(run.path, "vqvae").open(resume=True)


def test_resume_check_names_every_changed_field_outside_the_allowed_ones(tmp_path: Path) -> None:
    saved = {"lr": 1e-3, "steps": 10, "crop": [8, 8, 8], "post": {"margin_mm": 3.0}, "model": {"channels": [8, 16]}}
    current = {"lr": 1e-2, "steps": 20, "crop": (8, 8, 8), "post": {"margin_mm": 5.0}, "model": {"channels": [8, 32]}}
    assert changed_fields(saved, current, allowed={"steps", "post"}) == ["lr", "model.channels"]
    assert changed_fields({"a": 1}, {"a": 1, "new": None}) == []  # a field added since, at its None default
    run = RunFolder(tmp_path, "tissue")
    with pytest.raises(ResumeConfigError, match="lr, model.channels") as info:
        run.check_resume(saved, current, allowed={"steps", "post"})
    assert isinstance(info.value, ValueError) and info.value.changed == ("lr", "model.channels")
    run.check_resume(saved, {**saved, "steps": 99}, allowed={"steps"})


def test_start_log_keeps_lines_up_to_the_resumed_step_and_write_config(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run", "segmenter")
    log = run.start_log(None)
    for step in (1, 2, 3):
        log.append_record({"event": "train", "step": step, "loss": 0.5, "best": step == 2})
    assert [r["step"] for r in RunFolder(run.path, "segmenter").start_log(2).records()] == [1, 2]
    assert log.records()[1]["best"] is True  # event records are written as given, not turned into floats
    with pytest.raises(KeyError, match="step"):
        log.append_record({"event": "val"})
    assert run.start_log(None).records() == []
    run.write_config({"seed": 1, "crop": (8, 8)})
    assert json.loads(run.config_path.read_text()) == {"seed": 1, "crop": [8, 8]}


def test_save_step_writes_last_final_and_prunes(tmp_path: Path) -> None:
    run = RunFolder(tmp_path, "diffusion")
    for step in (1, 2, 3):
        run.save_step(step, {"step": step}, config={}, keep_last=2, final=step == 3)
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == ["step_2.pt", "step_3.pt"]
    assert load_checkpoint(run.last)["step"] == 3 and load_checkpoint(run.final)["step"] == 3


def test_seeded_torch_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with seeded_torch(7, "tissue-init"):
        a = torch.nn.Linear(4, 4).weight.detach().clone()
    assert torch.equal(torch.get_rng_state(), before)
    with seeded_torch(7, "tissue-init"):
        b = torch.nn.Linear(4, 4).weight.detach().clone()
    with seeded_torch(7, "tissue-loop"):
        c = torch.nn.Linear(4, 4).weight.detach().clone()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert stream_seed(7, "tissue-init") != stream_seed(8, "tissue-init")


def test_pad_to_multiple_matches_monai_divisible_pad_at_the_far_end() -> None:
    from monai.transforms import DivisiblePad

    image = np.random.default_rng(0).random((2, 5, 6, 7)).astype(np.float32)
    padded = pad_to_multiple(image, 4)
    assert padded.shape == (2, 8, 8, 8) and np.array_equal(padded[:, :5, :6, :7], image)
    assert np.array_equal(padded, np.asarray(DivisiblePad(k=4, method="end")(image)))
    mask = np.ones((8, 4, 4), np.uint8)
    assert pad_to_multiple(mask, 4) is mask  # nothing to pad: the array itself
    assert pad_to_multiple(image[None], 4).shape == (1, 2, 8, 8, 8)  # any leading axes
