"""Segmenter training, resume, evaluation and the Table 1 driver on tiny CPU configs."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from synbt_factory.data.mixing import MixConfig
from synbt_factory.evaluate.segmentation_eval import EvalConfig, evaluate_segmenter
from synbt_factory.experiments.table1 import Table1Config, method_name, table1
from synbt_factory.metrics import segmentation_metrics
from synbt_factory.models.segmenters import (
    SEGMENTER_NAMES,
    SegmenterConfig,
    build_segmenter,
    check_spatial_size,
    plan_dynunet,
    spatial_divisor,
)
from synbt_factory.store import CaseStore
from synbt_factory.training.segmentation import SegTrainConfig, load_segmenter, train_segmenter

SHAPE = (32, 32, 24)
AFFINE = [[-1.0, 0, 0, 30.0], [0, -1.0, 0, 40.0], [0, 0, 1.0, -10.0], [0, 0, 0, 1]]


def _write_store(
    path: Path,
    *,
    n_train: int = 6,
    n_test: int = 3,
    kind: str = "prepared",
    seed: int = 0,
    source_files: list[str] | None = None,
) -> str:
    """Cases with a ball that is 2.5× brighter in the post-contrast channel."""
    rng = np.random.default_rng(seed)
    store = CaseStore.create(path, kind=kind, card={})  # type: ignore[arg-type]
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0)
    for i in range(n_train + n_test):
        centre = np.array([rng.integers(9, s - 9) for s in SHAPE])
        radius = rng.uniform(3.0, 5.0)
        mask = (np.linalg.norm(grid - centre, axis=-1) <= radius).astype(np.uint8)
        pre = rng.normal(0.4, 0.03, SHAPE).astype(np.float32)
        post = pre * 1.05
        post[mask > 0] = pre[mask > 0] * 2.5
        attrs = {"affine": AFFINE, "spacing": [1.0, 1.0, 1.0], "split": "train" if i < n_train else "test"}
        if source_files is not None:
            attrs["source_files"] = source_files
        arrays = {"image": np.stack([pre, post]).astype(np.float16), "mask": mask}
        if kind == "synthetic":
            arrays["synthetic_mask"] = mask
        store.write_case(f"CASE_{i:03d}", arrays, attrs)
    return str(path)


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("seg")
    source = root / "source_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 12), np.uint8), np.diag([-1.6, -1.6, 2.0, 1.0])), str(source))
    return _write_store(root / "real.zarr", source_files=[str(source)])


def _config(real: str, **changes) -> SegTrainConfig:
    crop = (16, 16, 16)
    base = SegTrainConfig(
        model=SegmenterConfig(name="unet", preset="tiny", patch_size=crop),
        data=MixConfig(crop=crop, samples_per_epoch=6, tumor_prob=0.9, rotate_prob=0.0),
        real=real,
        epochs=4,
        lr=3e-3,
        log_every=3,
        seed=1,
    )
    return dataclasses.replace(base, **changes)


def test_every_segmenter_builds_and_keeps_shape() -> None:
    for name in SEGMENTER_NAMES:
        size = (64, 32, 32) if name == "swinunetr" else (32, 32, 32)
        cfg = SegmenterConfig(name=name, preset="tiny", patch_size=size)
        check_spatial_size(cfg, size)
        net = build_segmenter(cfg)
        with torch.no_grad():
            out = net(torch.zeros(1, 2, *size))
        assert out.shape == (1, 2, *size)
    swin = SegmenterConfig(name="swinunetr", preset="tiny")
    with pytest.raises(ValueError, match="multiple of"):
        check_spatial_size(swin, (64, 64, 48))
    with pytest.raises(ValueError, match="too small"):
        check_spatial_size(swin, (32, 32, 32))
    plan = plan_dynunet((192, 192, 128), (1.0, 1.0, 1.0))
    assert len(plan.strides) == 6 and plan.filters[-1] == 320 and plan.divisor == (32, 32, 32)
    thick = plan_dynunet((160, 160, 48), (0.7, 0.7, 3.0))
    assert thick.kernels[0] == (3, 3, 1) and thick.strides[1] == (2, 2, 1)  # nnU-Net: in-plane first
    assert spatial_divisor(SegmenterConfig(name="unet", preset="paper")) == (16, 16, 16)


def test_tiny_segmenter_loss_falls(real_store: str, tmp_path: Path) -> None:
    result = train_segmenter(_config(real_store, epochs=6), tmp_path / "run", device="cpu")
    losses = [e["loss"] for e in result.history if e["event"] == "train"]
    assert result.steps == 36 and len(losses) == 12
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    vals = [e for e in result.history if e["event"] == "val"]
    assert len(vals) == 6 and all(0.0 <= e["val_dice"] <= 1.0 for e in vals)
    best = max(e["val_dice"] for e in vals)
    assert result.best_val_dice == pytest.approx(best)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(result.history)
    model, cfg, payload = load_segmenter(result.best_checkpoint)
    assert cfg == _config(real_store, epochs=6) and payload["kind"] == "segmenter"
    assert payload["best_val_dice"] == pytest.approx(best)


def test_resume_continues_to_the_same_weights(real_store: str, tmp_path: Path) -> None:
    cfg = _config(real_store, epochs=2)
    straight = train_segmenter(cfg, tmp_path / "straight", device="cpu")
    first = train_segmenter(dataclasses.replace(cfg, max_steps=4), tmp_path / "resumed", device="cpu")
    assert first.steps == 4 and first.epochs_done == 0  # stopped mid-epoch
    with pytest.raises(FileExistsError, match="resume"):
        train_segmenter(cfg, tmp_path / "resumed", device="cpu")
    with pytest.raises(ValueError, match="lr"):
        train_segmenter(dataclasses.replace(cfg, lr=1e-2), tmp_path / "resumed", device="cpu", resume=True)
    resumed = train_segmenter(cfg, tmp_path / "resumed", device="cpu", resume=True)
    assert resumed.steps == straight.steps == 12 and resumed.epochs_done == 2
    a = torch.load(straight.last_checkpoint, weights_only=True)["model"]
    b = torch.load(resumed.last_checkpoint, weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    train_steps = [e["step"] for e in resumed.history if e["event"] == "train"]
    assert train_steps == sorted(train_steps) and train_steps[-1] == 12


def test_eval_writes_consistent_metrics_and_nifti(real_store: str, tmp_path: Path) -> None:
    run = train_segmenter(_config(real_store, epochs=2), tmp_path / "run", device="cpu")
    out = tmp_path / "eval"
    result = evaluate_segmenter(
        run.best_checkpoint, real_store, config=EvalConfig(save_nifti=True, mama_mia=True), out_dir=out, device="cpu"
    )
    assert result.summary["n_cases"] == len(result.rows) == 2  # 3 test cases: 1 validation, 2 test
    store = CaseStore.open(real_store)
    for row in result.rows:
        img = nib.load(str(out / "predictions" / f"{row['case_id']}.nii.gz"))
        assert np.allclose(img.affine, np.asarray(AFFINE))
        pred = np.asarray(img.dataobj)
        again = segmentation_metrics(pred, store.read_array(row["case_id"], "mask"), (1.0, 1.0, 1.0))
        assert again.dice == pytest.approx(row["dice"]) and again.hd95 == pytest.approx(row["hd95"])
        original = nib.load(str(out / "predictions_original" / f"{row['case_id']}.nii.gz"))
        assert original.shape == (20, 20, 12)
    with open(out / "metrics.csv") as fh:
        assert [r["case_id"] for r in csv.DictReader(fh)] == [r["case_id"] for r in result.rows]
    # source files recorded relative to the dataset root (as prepare records them): found through --dataset only
    relative = _write_store(tmp_path / "relative.zarr", source_files=["masks/source_mask.nii.gz"])
    dataset = tmp_path / "dataset"
    (dataset / "masks").mkdir(parents=True)
    shutil.copy(Path(real_store).parent / "source_mask.nii.gz", dataset / "masks" / "source_mask.nii.gz")
    config = EvalConfig(save_nifti=True, max_cases=1)
    evaluate_segmenter(run.best_checkpoint, relative, config=config, out_dir=tmp_path / "without", device="cpu")
    assert not (tmp_path / "without" / "predictions_original").exists()
    evaluate_segmenter(
        run.best_checkpoint, relative, config=config, out_dir=tmp_path / "with", device="cpu", dataset=dataset
    )
    assert [nib.load(str(p)).shape for p in (tmp_path / "with" / "predictions_original").iterdir()] == [(20, 20, 12)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["dice"]["n"] == 2 and "mama_mia_score" in summary
    # a "perfect" evaluation: predicting each case's truth gives Dice 1 and zero distances
    for row in result.rows:
        truth = store.read_array(row["case_id"], "mask")
        m = segmentation_metrics(truth, truth, (1.0, 1.0, 1.0))
        assert (m.dice, m.hd95, m.msd) == (1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="multiple of"):
        evaluate_segmenter(run.best_checkpoint, real_store, config=EvalConfig(window=(18, 16, 16)), device="cpu")


def test_table1_runs_arms_and_skips_missing_stores(real_store: str, tmp_path: Path) -> None:
    synbt = _write_store(tmp_path / "synbt.zarr", n_train=3, n_test=0, kind="synthetic", seed=5)
    cfg = Table1Config(
        real=real_store,
        models=("unet",),
        preset="tiny",
        arms=("patch-real", "volume-real", "volume-syntumor", "volume-synbt"),
        synbt_store=synbt,
        syntumor_store=str(tmp_path / "missing.zarr"),
        patch_crop=(16, 16, 16),
        volume_crop=(32, 32, 24),
        epochs=1,
        samples_per_epoch=2,
        device="cpu",
    )
    result = table1(cfg, tmp_path / "t1")
    methods = [r["method"] for r in result.rows]
    assert methods == ["patch-UNet", "Volume-UNet", "SynTumor-UNet", "SynBT-UNet"]
    assert "does not exist" in result.rows[2]["skipped"]
    md = result.markdown_path.read_text()
    assert "| Method | DSC ↑ | 95HD (mm) ↓ | MSD (mm) ↓ |" in md and "| SynBT-UNet | " in md and " ± " in md
    with open(result.cases_csv_path) as fh:
        cases = list(csv.DictReader(fh))
    assert len(cases) == 3 * 2 and {c["method"] for c in cases} == {"patch-UNet", "Volume-UNet", "SynBT-UNet"}
    synbt_train = json.loads((tmp_path / "t1" / "volume-synbt" / "unet" / "train" / "config.json").read_text())
    assert synbt_train["data"]["mix"] == 0.5 and synbt_train["synthetic"] == synbt
    # re-running reuses finished arms (no retraining: checkpoints untouched)
    ckpt = tmp_path / "t1" / "patch-real" / "unet" / "train" / "best.pt"
    before = ckpt.stat().st_mtime_ns
    again = table1(cfg, tmp_path / "t1")
    assert ckpt.stat().st_mtime_ns == before
    assert again.rows[0]["metrics"]["dice"]["mean"] == pytest.approx(result.rows[0]["metrics"]["dice"]["mean"])
    assert method_name("patch-synbt", "dynunet") == "patch-SynBT-nnUNet"


def test_cli_train_then_eval(real_store: str, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from cli.segment import segment_eval, segment_train

    app = typer.Typer()
    app.command("train")(segment_train)
    app.command("eval")(segment_eval)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "train",
            "--real",
            real_store,
            "--out",
            str(tmp_path / "r"),
            "--patch",
            "16",
            "--steps",
            "2",
            "--preset",
            "tiny",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "best.pt").exists()
    res = runner.invoke(app, ["train", "--real", real_store, "--out", str(tmp_path / "r2"), "--mix", "0.5"])
    assert res.exit_code == 2 and "--synthetic" in res.output
    res = runner.invoke(
        app,
        ["eval", "--ckpt", str(tmp_path / "r" / "best.pt"), "--data", real_store, "--device", "cpu", "--split", "val"],
    )
    assert res.exit_code == 0, res.output
    assert "mean ± std" in res.output


def test_a_missing_real_store_leaves_no_empty_run_folder(tmp_path: Path) -> None:
    """``synbt segment train --mix 0.5 --data WRONG --synthetic …`` failed on the store but left runs/seg behind."""
    size = (16, 16, 16)
    config = SegTrainConfig(
        model=SegmenterConfig(name="unet", preset="tiny", patch_size=size),
        data=MixConfig(crop=size),
        real=str(tmp_path / "missing.zarr"),
        max_steps=1,
    )
    with pytest.raises(Exception, match="missing.zarr"):
        train_segmenter(config, tmp_path / "runs" / "seg", device="cpu")
    assert not (tmp_path / "runs").exists()
