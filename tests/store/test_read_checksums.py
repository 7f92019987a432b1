"""Readers check what they read: damage is refused with a StoreError naming the case, never passed on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import GzipCodec

from synbt_factory.data.mixing import MixConfig, MixedDataset, load_case
from synbt_factory.store import CaseStore, StoreError, StoreLayout, array_sha256

SHAPE = (24, 24, 16)
AFFINE = np.diag([0.8, 0.8, 2.0, 1.0]).tolist()


def _prepared(path: Path, n: int = 2) -> Path:
    """A prepared store of ``n`` cases: a body block (all breast) holding a small enhancing ball; chunks of 8."""
    rng = np.random.default_rng(0)
    store = CaseStore.create(path, kind="prepared", card={}, layout=StoreLayout(chunk=8))
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0)
    body = np.zeros(SHAPE, np.uint8)
    body[1:-1, 1:-1, 1:-1] = 1
    for i in range(n):
        mask = (np.linalg.norm(grid - np.array([7, 7, 7]), axis=-1) <= 3).astype(np.uint8)
        pre = np.where(body > 0, rng.random(SHAPE) * 0.1 + 0.4, 0.0).astype(np.float32)
        post = np.where(mask > 0, pre * 2.5, pre * 1.05)
        arrays = {"image": np.stack([pre, post]).astype(np.float16), "mask": mask, "breast": body}
        store.write_case(f"CASE_{i:03d}", arrays, {"affine": AFFINE, "spacing": [0.8, 0.8, 2.0], "split": "train"})
    return path


def _image_chunk(path: Path, case_id: str = "CASE_000") -> Path:
    chunks = sorted(p for p in (path / "cases" / case_id / "image" / "c").rglob("*") if p.is_file())
    return chunks[len(chunks) // 2]


def _group(path: Path, case_id: str) -> zarr.Group:
    return zarr.open_group(str(path / "cases" / case_id), mode="r+", zarr_format=3)


def test_deleted_chunk_is_refused_by_every_whole_array_reader(tmp_path: Path) -> None:
    path = _prepared(tmp_path / "p.zarr")
    _image_chunk(path).unlink()  # zarr reads it back as zeros, without an error
    store = CaseStore.open(path)
    for read in (
        lambda: store.read_array("CASE_000", "image"),
        lambda: store.read_case("CASE_000"),
        lambda: load_case(store, "CASE_000"),
    ):
        with pytest.raises(StoreError, match=r"CASE_000: array 'image' does not match its recorded sha256") as err:
            read()
        assert f"synbt store verify {path}" in str(err.value)
    # the other case and the undamaged mask still read; the opt-out returns what zarr reads
    assert store.read_case("CASE_001")[0]["image"].shape == (2, *SHAPE)
    assert store.read_array("CASE_000", "mask").sum() > 0
    assert not store.read_array("CASE_000", "image", verify=False).all()


def test_segment_training_sampler_refuses_a_damaged_case(tmp_path: Path) -> None:
    path = _prepared(tmp_path / "p.zarr", n=1)
    _image_chunk(path).unlink()
    dataset = MixedDataset(path, ["CASE_000"], config=MixConfig(crop=(8, 8, 8), augment=False), seed=0)
    with pytest.raises(StoreError, match="CASE_000.*'image'"):
        dataset[0]


def test_generation_refuses_a_damaged_background(tmp_path: Path) -> None:
    from synbt_factory.generate.jobs import CaseJob
    from synbt_factory.generate.placing import Placer
    from synbt_factory.synthesis.bank import build_bank

    path = _prepared(tmp_path / "p.zarr")
    build_bank(path, tmp_path / "bank.zarr", splits=("train",))
    placer = Placer(str(path), str(tmp_path / "bank.zarr"))
    placed = placer.place(CaseJob(index=0, case_id="SYN_000000", background="CASE_001", seed=0))
    assert placed.background == "CASE_001" and placed.synthetic_mask.any()
    _image_chunk(path, "CASE_001").unlink()  # damaged after its placement context was cached
    with pytest.raises(StoreError, match="CASE_001: array 'image' does not match"):
        placer.place(CaseJob(index=1, case_id="SYN_000001", background="CASE_001", seed=0))
    with pytest.raises(StoreError, match="CASE_001: array 'image' does not match"):  # a fresh worker
        Placer(str(path), str(tmp_path / "bank.zarr")).place(
            CaseJob(index=1, case_id="SYN_000001", background="CASE_001", seed=0)
        )


def test_truncated_chunk_becomes_a_store_error(tmp_path: Path) -> None:
    path = _prepared(tmp_path / "p.zarr")
    chunk = _image_chunk(path)
    chunk.write_bytes(chunk.read_bytes()[:5])
    with pytest.raises(StoreError, match=r"CASE_000: array 'image' cannot be read"):
        CaseStore.open(path).read_array("CASE_000", "image")


def test_array_without_checksum_is_an_unfinished_addition(tmp_path: Path) -> None:
    path = _prepared(tmp_path / "p.zarr")
    _group(path, "CASE_000").create_array("tissue_pred", shape=SHAPE, dtype="uint8", fill_value=0)
    store = CaseStore.open(path)
    for read in (
        lambda: store.read_array("CASE_000", "tissue_pred"),
        lambda: store.open_array("CASE_000", "tissue_pred"),
    ):
        with pytest.raises(StoreError, match=r"unfinished array tissue_pred \(rerun the command that adds it\)"):
            read()
    assert store.read_case("CASE_000")[0]["mask"].shape == SHAPE  # the recorded arrays stay readable


def test_codecs_outside_the_promised_list_are_refused(tmp_path: Path) -> None:
    path = _prepared(tmp_path / "p.zarr")
    group = _group(path, "CASE_000")
    mask = np.asarray(group["mask"][...])
    del group["mask"]
    group.create_array(
        "mask", shape=mask.shape, dtype=mask.dtype, chunks=(8, 8, 8), compressors=GzipCodec(), fill_value=0
    )[...] = mask
    assert group.attrs["sha256"]["mask"] == array_sha256(mask)  # same data: only the codec is wrong
    with pytest.raises(StoreError, match=r"codec\(s\) \['gzip'\] outside the allowed set \['blosc', 'bytes', 'zstd'\]"):
        CaseStore.open(path).read_array("CASE_000", "mask")


def test_huge_declared_shape_is_refused_before_any_allocation(tmp_path: Path) -> None:
    path = _prepared(tmp_path / "p.zarr")
    meta_path = path / "cases" / "CASE_000" / "image" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [2, 100_000, 100_000, 100_000]
    meta_path.write_text(json.dumps(meta))
    store = CaseStore.open(path)
    with pytest.raises(StoreError, match=r"'image' declares shape \[2, 100000, 100000, 100000\].*over the"):
        store.read_array("CASE_000", "image")
    with pytest.raises(StoreError, match=r"'mask' has shape \[24, 24, 16\], which does not match"):
        store.read_array("CASE_000", "mask")


def test_read_case_refuses_a_missing_or_broken_affine(tmp_path: Path) -> None:
    path = _prepared(tmp_path / "p.zarr")
    _group(path, "CASE_000").attrs.update({"affine": np.eye(3).tolist()})
    _group(path, "CASE_001").attrs.update({"affine": [[float("nan")] * 4] * 4})
    store = CaseStore.open(path)
    for case_id in ("CASE_000", "CASE_001"):
        with pytest.raises(StoreError, match=rf"{case_id}: attribute 'affine' is not a finite 4×4 matrix"):
            store.read_case(case_id)


def test_unreadable_and_unsafe_groups_are_skipped_and_listed(tmp_path: Path) -> None:
    import shutil

    path = _prepared(tmp_path / "p.zarr", n=3)
    (path / "cases" / "CASE_001" / "zarr.json").write_text("{not json")
    shutil.copytree(path / "cases" / "CASE_002", path / "cases" / "-rf")
    store = CaseStore.open(path)
    assert store.case_ids() == ["CASE_000", "CASE_002"] and store.incomplete_case_ids() == []
    damaged = store.damaged_case_groups()
    assert sorted(damaged) == ["-rf", "CASE_001"]
    assert "not valid JSON" in damaged["CASE_001"] and "unsafe case group name" in damaged["-rf"]
    with pytest.raises(StoreError, match="CASE_001: cases/CASE_001/zarr.json is not valid JSON"):
        store.read_case("CASE_001")


def test_damage_error_survives_worker_processes(tmp_path: Path) -> None:
    import pickle

    path = _prepared(tmp_path / "p.zarr", n=1)
    _image_chunk(path).unlink()
    with pytest.raises(StoreError) as err:
        CaseStore.open(path).read_array("CASE_000", "image")
    back = pickle.loads(pickle.dumps(err.value))  # as Dask and DataLoader workers hand errors back
    assert isinstance(back, StoreError) and str(back) == str(err.value)
    assert back.case_id == "CASE_000" and "does not match its recorded sha256" in back.problem
