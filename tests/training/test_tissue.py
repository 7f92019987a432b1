"""Tissue model: label → image synthesis, training on a tiny config, prediction and store writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synbt_factory.checkpoint import load_checkpoint
from synbt_factory.models.tissue import TissueModelConfig, build_tissue_model, tissue_preset
from synbt_factory.store import CaseStore
from synbt_factory.tissue.config import TissueTrainConfig
from synbt_factory.tissue.data import TissueBatches, load_label_cases
from synbt_factory.tissue.infer import add_tissue_to_store, load_tissue_model, postprocess_tissue, predict_tissue
from synbt_factory.tissue.synth import TissueSynthConfig, generation_labels, synthesize_tissue_image
from synbt_factory.tissue.train import train_tissue

SHAPE = (48, 40, 32)


def _labels(seed: int):
    rng = np.random.default_rng(seed)
    x, y, z = np.indices(SHAPE)
    chest = (y >= 3) & (y < 18) & (x >= 2) & (x < 46) & (z >= 2) & (z < 30)
    breast = np.zeros(SHAPE, bool)
    for cx in (13, 35):
        breast |= ((x - cx) ** 2 + (y - 18) ** 2 + (z - 16) ** 2 < 11**2) & (y >= 18)
    fgt = breast & (np.sin(x / 2.5 + rng.uniform(0, 6)) * np.sin(z / 2.5 + rng.uniform(0, 6)) > 0.0) & (y < 26)
    tissue = np.zeros(SHAPE, np.uint8)
    tissue[fgt] = 2
    tissue[breast & (np.abs(x - 13) <= 1) & (np.abs(z - 10) <= 1)] = 1
    body = chest | breast
    pre = np.where(body, 0.5, 0.02) + np.where(breast & ~fgt, 0.4, 0.0) + rng.normal(0, 0.02, SHAPE)
    post = pre * np.where(fgt, 1.3, 1.0)
    return tissue, breast.astype(np.uint8), np.abs(np.stack([pre, post])).astype(np.float32)


@pytest.fixture(scope="module")
def label_store(tmp_path_factory) -> CaseStore:
    store = CaseStore.create(tmp_path_factory.mktemp("tissue") / "p.zarr", kind="prepared", card={})
    for i in range(4):
        tissue, breast, image = _labels(i)
        store.write_case(
            f"L{i}",
            {"image": image.astype(np.float16), "mask": np.zeros(SHAPE, np.uint8), "tissue": tissue, "breast": breast},
            {"affine": np.eye(4).tolist(), "spacing": [1.0] * 3, "split": "train" if i < 3 else "test"},
        )
    return store


def test_synthesised_images_have_random_contrast_and_fixed_targets() -> None:
    tissue, breast, image = _labels(0)
    a, ta, pa = synthesize_tissue_image(tissue, breast, np.random.default_rng(0), image=image)
    b, tb, _ = synthesize_tissue_image(tissue, breast, np.random.default_rng(1), image=image)
    assert a.shape == (2, *SHAPE) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(ta, tb)
    assert set(np.unique(ta)) == {0, 1, 2, 3}
    assert np.percentile(a[0], 99.5) == pytest.approx(1.0, rel=1e-3)  # prepared-store normalisation
    fgt, fat = ta == 3, ta == 1
    contrast = [float(x[0][fgt].mean() - x[0][fat].mean()) for x in (a, b)]
    assert not np.allclose(contrast[0], contrast[1], atol=0.05)
    assert 2 <= pa["clusters"] <= 8


@pytest.mark.parametrize("features", ["image", "position"])
def test_kmeans_splits_the_rest_of_the_body_into_2_to_8_clusters(features: str) -> None:
    tissue, breast, image = _labels(0)
    config = TissueSynthConfig(cluster_features=features)
    for seed in range(4):
        gen, n = generation_labels(tissue, breast, np.random.default_rng(seed), config, image=image)
        outside = gen[breast == 0]
        k = len(np.unique(outside[outside >= 4]))
        assert 2 <= k <= 8 and n - 4 >= k
        assert np.all(gen[breast > 0] <= 3)


def test_batches_are_reproducible(label_store: CaseStore) -> None:
    cases = load_label_cases(label_store.location)
    config = TissueTrainConfig.preset("tiny")
    batches = TissueBatches(cases, config)
    x1, y1 = batches.make_batch(5)
    x2, y2 = batches.make_batch(5)
    assert x1.shape == (2, 2, 32, 32, 32) and y1.shape == (2, 1, 32, 32, 32)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_loss_falls_on_a_tiny_config(label_store: CaseStore, tmp_path: Path) -> None:
    config = TissueTrainConfig.preset("tiny", steps=60, log_every=10)
    result = train_tissue(label_store.location, tmp_path / "run", config, device="cpu")
    losses = [h["loss"] for h in result.history if h["event"] == "train"]
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0]
    assert result.best_path.is_file() and result.last_path.is_file()
    ckpt = load_checkpoint(result.best_path, kind="tissue")
    assert ckpt["config"] == {
        "in_channels": 2,
        "out_channels": 4,
        "channels": [8, 16, 32],
        "strides": [2, 2],
        "num_res_units": 1,
        "norm": "INSTANCE",
        "dropout": 0.0,
    }
    assert result.best_val_dice is not None and 0.0 <= result.best_val_dice <= 1.0

    model, loaded = load_tissue_model(result.best_path)
    assert loaded == config
    _, _, image = _labels(3)
    fgt, breast = predict_tissue(model, image, roi=32, sw_batch_size=2)
    assert fgt.shape == SHAPE and breast.shape == SHAPE and fgt.dtype == np.uint8
    assert not (fgt.astype(bool) & ~breast.astype(bool)).any()

    summary = add_tissue_to_store(result.best_path, label_store.location, device="cpu")
    assert summary["written"] == 4
    store = CaseStore.open(label_store.location)
    for case_id in store.case_ids():
        assert {"tissue_pred", "breast_pred"} <= set(store.array_names(case_id))
    again = add_tissue_to_store(result.best_path, label_store.location, device="cpu")
    assert again["skipped"] == 4

    # an addition a crash left unfinished (array written, checksum entry not yet) is redone, not skipped
    import zarr

    group = zarr.open_group(str(label_store.location), mode="r+")["cases"]["L0"]
    sha = dict(group.attrs["sha256"])
    del sha["tissue_pred"]
    group.attrs.update({"sha256": sha})
    redo = add_tissue_to_store(result.best_path, label_store.location, device="cpu")
    assert redo["written"] == 1 and redo["skipped"] == 3
    assert "tissue_pred" in CaseStore.open(label_store.location).case_attrs("L0")["sha256"]


def test_data_tissue_waits_for_no_other_writer(label_store: CaseStore, tmp_path: Path) -> None:
    """Writing tissue maps takes the store's writer lock: a second writer is refused, naming the holder."""
    import multiprocessing

    from synbt_factory.store import StoreError
    from synbt_factory.store.lock import writer_lock

    config = TissueTrainConfig.preset("tiny", steps=2, log_every=1)
    result = train_tissue(label_store.location, tmp_path / "run", config, device="cpu")
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(label_store.location), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(StoreError, match=str(holder.pid)):
            add_tissue_to_store(result.best_path, label_store.location, device="cpu", overwrite=True)
    finally:
        release.set()
        holder.join(60)
    with writer_lock(str(label_store.location), command="test"):
        pass


def _hold_lock(location: str, ready, release) -> None:
    from synbt_factory.store.lock import writer_lock

    with writer_lock(location, command="other writer"):
        ready.set()
        release.wait(60)


def test_postprocessing_keeps_fgt_inside_the_breast_away_from_its_edge() -> None:
    labels = np.zeros(SHAPE, np.uint8)
    labels[10:30, 10:30, 5:25] = 1
    labels[12:28, 12:28, 7:23] = 3  # FGT reaching within 2 voxels of the breast edge
    labels[40:44, 2:4, 2:4] = 3  # FGT outside any breast
    labels[1:3, 1:3, 1:3] = 1  # a speck of breast
    fgt, breast = postprocess_tissue(labels)
    assert breast[1, 1, 1] == 0 and breast[20, 20, 15] == 1
    assert fgt[42, 3, 3] == 0
    assert fgt[20, 20, 15] == 1 and fgt[12, 20, 15] == 0  # 3 mm margin to the breast boundary


def test_postprocessing_drops_breast_like_blobs_away_from_the_anterior_skin() -> None:
    _, breast, image = _labels(0)
    labels = np.where(breast > 0, 1, 0).astype(np.uint8)
    heart = np.zeros(SHAPE, bool)
    heart[10:38, 3:9, 4:28] = True  # deep in the chest block, >= 9 mm from the anterior surface
    labels[heart] = 3
    _, kept_without_image = postprocess_tissue(labels)
    assert kept_without_image[heart].all()  # it is one of the two largest components
    fgt, kept = postprocess_tissue(labels, image=image)
    assert not kept[heart].any() and not fgt[heart].any()
    assert kept[breast > 0].mean() > 0.99


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="patch"):
        TissueTrainConfig(model=tissue_preset("small"), patch=20)
    with pytest.raises(ValueError, match="out_channels"):
        TissueModelConfig(out_channels=3)
    net = build_tissue_model(tissue_preset("tiny"))
    assert net(torch.zeros(1, 2, 16, 16, 16)).shape == (1, 4, 16, 16, 16)


def test_final_pt_ctrl_c_and_opt_in_resume(label_store: CaseStore, tmp_path: Path) -> None:
    """train tissue writes final.pt like the other trainers (it wrote only best.pt / last.pt); Ctrl-C saves the
    step it stopped at; a rerun without resume refuses to overwrite the run (it used to resume or start over)."""
    import signal

    from synbt_factory.training.runs import TrainingInterrupted

    config = TissueTrainConfig.preset("tiny", steps=4, log_every=1, val_every=0)
    out = tmp_path / "run"

    def ctrl_c_at_2(done: int, total: int, metrics: object) -> None:
        if done == 2:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted) as stopped:
        train_tissue(label_store.location, out, config, device="cpu", progress=ctrl_c_at_2)
    assert stopped.value.step == 2 and load_checkpoint(out / "last.pt", kind="tissue")["step"] == 2
    assert not (out / "final.pt").exists()
    with pytest.raises(FileExistsError, match="last.pt"):
        train_tissue(label_store.location, out, config, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        train_tissue(
            label_store.location,
            out,
            TissueTrainConfig.preset("tiny", steps=4, batch_size=1),
            device="cpu",
            resume=True,
        )
    result = train_tissue(label_store.location, out, config, device="cpu", resume=True)
    assert result.steps == 4 and result.final_path == out / "final.pt"
    assert load_checkpoint(out / "final.pt", kind="tissue")["step"] == 4 and result.best_path.is_file()
    model, loaded = load_tissue_model(out / "final.pt")
    assert loaded == config
