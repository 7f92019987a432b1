"""The one-pass chunk writer stores exactly the files zarr itself writes, and what it cannot plan goes through zarr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import synbt_factory.store.case_store as case_store
from synbt_factory.store import CaseStore, StoreLayout, array_sha256
from synbt_factory.store.chunk_writer import array_plan
from synbt_factory.store.lock import writer_lock
from synbt_factory.store.verify import verify_store

ATTRS = {"affine": np.eye(4).tolist(), "spacing": [1.0, 1.0, 1.0]}

LAYOUTS = [
    StoreLayout(chunk=8),
    StoreLayout(chunk=8, level=3),
    StoreLayout(chunk=16, codec="blosc-lz4", level=5),
    StoreLayout(chunk=8, codec="blosc-zstd", level=1),
    StoreLayout(chunk=8, separator="."),
]


def _arrays(shape: tuple[int, int, int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 30, (2, *shape)).astype(np.float16)
    image[:, :3] = 0  # some empty chunks
    return {
        "image": image,
        "mask": (image[1] > 130).astype(np.uint8),
        "tissue": rng.integers(0, 4, shape).astype(np.int16),
        "depth": rng.random(shape).astype(np.float32),
        "flags": rng.random(shape) > 0.5,
    }


def _zarr_written(path: Path, arrays: dict[str, np.ndarray], layout: StoreLayout) -> None:
    """The same arrays written by zarr's own ``array[...] = data`` (what synbt did before the chunk writer)."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    keys = {} if layout.separator == "/" else {"chunk_key_encoding": {"name": "default", "separator": "."}}
    for name, data in arrays.items():
        array = group.create_array(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=layout.chunks_for(data.shape),
            compressors=layout.compressor(),
            fill_value=0,
            config={"write_empty_chunks": True},
            **keys,
        )
        array[...] = data


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: f"{lay.codec}-{lay.level}-c{lay.chunk}-{lay.separator}")
@pytest.mark.parametrize("shape", [(20, 24, 13), (8, 8, 8), (5, 6, 7)])
def test_arrays_are_byte_identical_to_zarrs_own_writes(tmp_path: Path, layout: StoreLayout, shape: tuple) -> None:
    arrays = _arrays(shape)
    store = CaseStore.create(tmp_path / "fast.zarr", kind="synthetic", card={}, layout=layout)
    store.write_case("C1", arrays, ATTRS)
    _zarr_written(tmp_path / "zarr.zarr", arrays, layout)
    for name in arrays:
        fast = _files(tmp_path / "fast.zarr" / "cases" / "C1" / name)
        reference = _files(tmp_path / "zarr.zarr" / name)
        assert fast.keys() == reference.keys(), name
        assert any(key.startswith(f"c{layout.separator}") for key in fast)
        for key in reference:
            assert fast[key] == reference[key], f"{name}/{key}"
    back = CaseStore.open(tmp_path / "fast.zarr")
    for name, data in arrays.items():
        read = back.read_array("C1", name)
        assert read.dtype == data.dtype and np.array_equal(read, data)


def test_arrays_without_a_plan_are_written_through_zarr(tmp_path: Path) -> None:
    layout = StoreLayout(chunk=8)
    arrays = _arrays((10, 9, 8))
    rng = np.random.default_rng(7)
    arrays["complex"] = (rng.random((10, 9, 8)) + 1j * rng.random((10, 9, 8))).astype(np.complex64)
    assert array_plan(arrays["complex"].shape, arrays["complex"].dtype, layout) is None
    assert array_plan(arrays["depth"].shape, arrays["depth"].dtype, layout) is not None
    store = CaseStore.create(tmp_path / "s.zarr", kind="synthetic", card={}, layout=layout)
    store.write_case("C1", arrays, ATTRS)
    attrs = store.case_attrs("C1")
    assert attrs["complete"] is True and set(attrs["sha256"]) == set(arrays)
    assert np.array_equal(store.read_array("C1", "complex"), arrays["complex"])
    assert store.read_array("C1", "image").dtype == np.float16
    assert verify_store(tmp_path / "s.zarr").ok


def test_big_endian_input_is_stored_native_and_verifies(tmp_path: Path) -> None:
    arrays = _arrays((10, 9, 8))
    swapped = {name: data.astype(data.dtype.newbyteorder(">")) for name, data in arrays.items()}
    store = CaseStore.create(tmp_path / "s.zarr", kind="synthetic", card={}, layout=StoreLayout(chunk=8))
    store.write_case("C1", swapped, ATTRS)
    assert store.case_attrs("C1")["sha256"]["depth"] == array_sha256(arrays["depth"])
    assert np.array_equal(store.read_array("C1", "depth"), arrays["depth"])
    assert verify_store(tmp_path / "s.zarr").ok


def test_a_store_written_by_zarrs_own_path_opens_verifies_and_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stores written before the chunk writer (every array through zarr, zstd level 3) stay readable, and
    cases added to them now use the level their card records."""
    path = tmp_path / "old.zarr"
    old = StoreLayout(level=3)
    with monkeypatch.context() as m:
        m.setattr(case_store, "array_plan", lambda *a, **k: None)
        store = CaseStore.create(path, kind="synthetic", card={}, layout=old)
        store.write_case("OLD", _arrays((12, 10, 9), seed=1), ATTRS)
    reopened = CaseStore.create(path, kind="synthetic", card={}, exist_ok=True)
    assert reopened.layout == old
    reopened.write_case("NEW", _arrays((12, 10, 9), seed=2), ATTRS)
    report = verify_store(path)
    assert report.ok and report.checked == 2
    levels = {
        case: zarr.open_array(path / "cases" / case / "image", mode="r").metadata.codecs[-1].level
        for case in ("OLD", "NEW")
    }
    assert levels == {"OLD": 3, "NEW": 3}
    arrays, attrs = CaseStore.open(path).read_case("OLD")
    assert attrs["sha256"]["image"] == array_sha256(arrays["image"])


def test_verify_catches_a_damaged_chunk_of_a_fast_written_case(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store = CaseStore.create(path, kind="synthetic", card={}, layout=StoreLayout(chunk=8))
    store.write_case("C1", _arrays((16, 16, 16)), ATTRS)
    store.write_case("C2", _arrays((16, 16, 16), seed=3), ATTRS)
    assert verify_store(path).ok
    (path / "cases" / "C1" / "image" / "c" / "1" / "0" / "1" / "0").unlink()  # a missing chunk reads as zeros
    report = verify_store(path)
    assert list(report.bad_cases) == ["C1"]
    assert any("image" in problem and "checksum" in problem for problem in report.bad_cases["C1"])


def test_a_failed_encoding_leaves_an_unmarked_case_that_resume_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import synbt_factory.store.chunk_writer as chunk_writer

    path = tmp_path / "s.zarr"
    store = CaseStore.create(path, kind="synthetic", card={}, layout=StoreLayout(chunk=8))
    store.write_case("C1", _arrays((16, 16, 16)), ATTRS)
    real = chunk_writer.encode_chunk
    calls = []

    def failing(plan, data, coords):  # noqa: ANN001, ANN202
        calls.append(coords)
        if len(calls) == 5:
            raise OSError("disk gone")
        return real(plan, data, coords)

    monkeypatch.setattr(chunk_writer, "encode_chunk", failing)
    with pytest.raises(OSError, match="disk gone"):
        store.write_case("C2", _arrays((16, 16, 16), seed=4), ATTRS)
    monkeypatch.undo()
    assert store.case_ids() == ["C1"] and store.incomplete_case_ids() == ["C2"]
    with writer_lock(str(path), command="test"):
        assert store.remove_incomplete() == ["C2"]
    arrays = _arrays((16, 16, 16), seed=4)
    store.write_case("C2", arrays, ATTRS)
    assert np.array_equal(store.read_array("C2", "image"), arrays["image"])
    assert verify_store(path).ok


def test_rewriting_a_case_replaces_it(tmp_path: Path) -> None:
    store = CaseStore.create(tmp_path / "s.zarr", kind="synthetic", card={}, layout=StoreLayout(chunk=8))
    store.write_case("C1", _arrays((16, 16, 16)), ATTRS)
    smaller = {k: v[..., :9] for k, v in _arrays((16, 16, 16), seed=5).items() if k in ("image", "mask")}
    store.write_case("C1", smaller, ATTRS)
    assert store.array_names("C1") == ["image", "mask"]
    assert np.array_equal(store.read_array("C1", "mask"), smaller["mask"])
    assert verify_store(tmp_path / "s.zarr").ok


def test_flat_chunk_keys_are_recorded_kept_and_verified(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    layout = StoreLayout(chunk=8, separator=".")
    store = CaseStore.create(path, kind="synthetic", card={}, layout=layout)
    assert store.attrs["layout"] == {"chunk": 8, "codec": "zstd", "level": 1, "separator": "."}
    assert CaseStore.create(tmp_path / "d.zarr", kind="synthetic", card={}).attrs["layout"] == {
        "chunk": 64,
        "codec": "zstd",
        "level": 1,
    }
    store.write_case("C1", _arrays((16, 16, 16)), ATTRS)
    reopened = CaseStore.create(path, kind="synthetic", card={}, exist_ok=True)
    assert reopened.layout == layout
    reopened.write_case("C2", _arrays((16, 16, 16), seed=6), ATTRS)
    image = path / "cases" / "C2" / "image"
    assert sorted(p.name for p in image.iterdir())[:2] == ["c.0.0.0.0", "c.0.0.0.1"]
    assert not any(p.is_dir() for p in image.iterdir())
    assert verify_store(path).ok
    (image / "c.1.0.1.0").unlink()
    assert list(verify_store(path).bad_cases) == ["C2"]


def test_layout_refuses_an_unknown_separator() -> None:
    with pytest.raises(ValueError, match="separator"):
        StoreLayout(separator="-")
