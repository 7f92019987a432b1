"""The real + synthetic training loader: mixing ratio, determinism, crops, phases, on-the-fly hook, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synbt_factory.data.mixing import MixConfig, MixedDataset, case_splits, load_case
from synbt_factory.store import CaseStore


def _store(
    path: Path,
    *,
    n: int,
    kind: str = "prepared",
    shape=(36, 36, 20),
    phases: int = 0,
    splits: list[str | None] | None = None,
    seed: int = 0,
    prefix: str = "CASE",
) -> CaseStore:
    rng = np.random.default_rng(seed)
    store = CaseStore.create(path, kind=kind, card={})  # type: ignore[arg-type]
    for i in range(n):
        image = rng.uniform(0.2, 0.4, (2, *shape)).astype(np.float32)
        mask = np.zeros(shape, np.uint8)
        c = [int(rng.integers(6, s - 6)) for s in shape]
        mask[c[0] - 3 : c[0] + 3, c[1] - 3 : c[1] + 3, c[2] - 2 : c[2] + 2] = 1
        image[1][mask > 0] += 0.6
        arrays = {"image": image.astype(np.float16), "mask": mask}
        if phases:
            # phase p has post-contrast scaled by (1 + p): identifiable after loading
            arrays["phases"] = np.stack([image[1] * (1 + p) for p in range(phases)]).astype(np.float16)
        if kind == "synthetic":
            arrays["synthetic_mask"] = mask
        split = splits[i] if splits else "train"
        store.write_case(
            f"{prefix}_{i:03d}", arrays, {"affine": np.eye(4).tolist(), "spacing": [1, 1, 1], "split": split}
        )
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str], str]:
    root = tmp_path_factory.mktemp("mix")
    real = _store(root / "real.zarr", n=5, phases=3)
    _store(root / "syn.zarr", n=3, kind="synthetic", seed=1, prefix="SYN")
    return str(root / "real.zarr"), real.case_ids(), str(root / "syn.zarr")


def test_synthetic_fraction_matches_mix_per_batch_and_overall(stores) -> None:
    real, ids, syn = stores
    for mix in (0.25, 0.5, 0.7):
        ds = MixedDataset(
            real, ids, config=MixConfig(crop=(16, 16, 16), mix=mix, samples_per_epoch=400), seed=3, synthetic=syn
        )
        for epoch in (0, 1):
            flags = [ds.is_synthetic(epoch, i) for i in range(400)]
            assert abs(sum(flags) - mix * 400) <= 1
            for b in range(0, 400, 4):  # every batch of 4 holds floor or ceil of 4·mix synthetic samples
                assert int(np.floor(4 * mix)) <= sum(flags[b : b + 4]) <= int(np.ceil(4 * mix))
    ds = MixedDataset(
        real, ids, config=MixConfig(crop=(16, 16, 16), mix=0.3, samples_per_epoch=60), seed=0, synthetic=syn
    )
    sources = [ds[i]["source"] for i in range(60)]
    assert abs(sources.count("synthetic") / 60 - 0.3) <= 1 / 60
    assert all(ds[i]["case_id"].startswith("SYN") == (sources[i] == "synthetic") for i in range(10))


def test_each_real_case_once_per_epoch(stores) -> None:
    real, ids, _ = stores
    ds = MixedDataset(real, ids, config=MixConfig(crop=(16, 16, 16)), seed=0)
    assert len(ds) == len(ids)
    for epoch in range(3):
        assert sorted(ds.case_of(epoch, i)[1] for i in range(len(ds))) == sorted(ids)
    orders = {tuple(ds.case_of(e, i)[1] for i in range(len(ds))) for e in range(6)}
    assert len(orders) > 1  # the order changes between epochs


def test_samples_are_deterministic_per_seed_epoch_index(stores) -> None:
    real, ids, syn = stores
    cfg = MixConfig(crop=(24, 24, 16), mix=0.5, samples_per_epoch=8, rotate_prob=0.5)
    a = MixedDataset(real, ids, config=cfg, seed=7, synthetic=syn)
    b = MixedDataset(real, ids, config=cfg, seed=7, synthetic=syn)
    a.set_epoch(2)
    b.set_epoch(2)
    for i in (5, 0, 3):  # order of access does not matter
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
        assert x["case_id"] == y["case_id"]
    c = MixedDataset(real, ids, config=cfg, seed=8, synthetic=syn)
    c.set_epoch(2)
    assert any(not torch.equal(a[i]["image"], c[i]["image"]) for i in range(4))
    a.set_epoch(3)
    assert any(not torch.equal(a[i]["image"], b[i]["image"]) for i in range(4))


def test_crops_pad_small_volumes_and_centre_on_tumor(stores) -> None:
    real, ids, _ = stores
    cfg = MixConfig(crop=(48, 40, 24), tumor_prob=1.0, augment=False, random_phase=False)
    ds = MixedDataset(real, ids, config=cfg, seed=0)
    item = ds[0]
    assert item["image"].shape == (2, 48, 40, 24) and item["image"].dtype == torch.float32
    assert item["label"].shape == (1, 48, 40, 24) and item["label"].dtype == torch.int64
    assert item["label"].sum() == 6 * 6 * 4  # the whole tumor survives padding
    small = MixedDataset(real, ids, config=MixConfig(crop=(12, 12, 12), tumor_prob=1.0, augment=False), seed=0)
    for i in range(len(ids)):
        assert small[i]["label"].sum() > 0  # tumor-centred crops always hold tumor


def test_training_uses_random_phase_and_eval_uses_phase_one(stores) -> None:
    real, ids, _ = stores
    store = CaseStore.open(real)
    image, _, _ = load_case(store, ids[0])
    stored = store.read_array(ids[0], "image").astype(np.float32)
    assert np.array_equal(image, stored)  # phase 1 = image[1] as stored
    p2, _, _ = load_case(store, ids[0], phase=2)
    assert np.allclose(p2[1], store.read_array(ids[0], "phases")[2].astype(np.float32))
    ds = MixedDataset(real, ids, config=MixConfig(crop=(16, 16, 16), samples_per_epoch=30), seed=0)
    phases = {ds[i]["phase"] for i in range(30)}
    assert phases == {0, 1, 2}
    fixed = MixedDataset(real, ids, config=MixConfig(crop=(16, 16, 16), random_phase=False), seed=0)
    assert fixed[0]["phase"] == -1


def test_onthefly_hook_applies_to_a_fraction_of_real_samples(stores) -> None:
    real, ids, _ = stores
    calls = []

    def hook(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        calls.append(1)
        out = image.copy()
        out[:, :4] = 5.0
        new = mask.copy()
        new[:4] = 1
        return out, new

    cfg = MixConfig(crop=(36, 36, 20), onthefly_fraction=0.5, samples_per_epoch=40, augment=False, tumor_prob=1.0)
    ds = MixedDataset(real, ids, config=cfg, seed=0, onthefly=hook)
    items = [ds[i] for i in range(40)]
    fly = [it for it in items if it["source"] == "onthefly"]
    assert len(calls) == len(fly) and 10 <= len(fly) <= 30
    assert all(it["label"][0, :4].all() for it in fly)
    with pytest.raises(ValueError, match="on-the-fly hook"):
        MixedDataset(real, ids, config=cfg, seed=0)


def test_config_and_dataset_validation(stores) -> None:
    real, ids, _ = stores
    with pytest.raises(ValueError, match="mix"):
        MixConfig(mix=1.5)
    with pytest.raises(ValueError, match="synthetic store"):
        MixedDataset(real, ids, config=MixConfig(mix=0.5), seed=0)
    with pytest.raises(ValueError, match="no real training cases"):
        MixedDataset(real, [], config=MixConfig(), seed=0)


def test_case_splits_divide_test_cases_into_val_and_test(tmp_path: Path) -> None:
    splits = ["train", "train", None, "test", "test", "test", "test", "test", "test"]
    store = _store(tmp_path / "s.zarr", n=9, shape=(16, 16, 16), splits=splits)
    s = case_splits(store, val_fraction=1 / 3, split_seed=0)
    assert len(s.train) == 3 and len(s.val) == 2 and len(s.test) == 4
    assert not set(s.val) & set(s.test)
    assert case_splits(store, val_fraction=1 / 3, split_seed=0) == s
    explicit = _store(tmp_path / "e.zarr", n=3, shape=(16, 16, 16), splits=["train", "val", "test"])
    e = case_splits(explicit)
    assert (e.train, e.val, e.test) == (("CASE_000",), ("CASE_001",), ("CASE_002",))
