"""``synbt store verify`` lists every kind of damage, in every case, and never crashes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner
from zarr.codecs import GzipCodec

from cli.main import app
from synbt_factory.store import CaseStore, StoreLayout, array_sha256
from synbt_factory.store.verify import verify_store

SHAPE = (16, 16, 12)
IDS = tuple(f"CASE_{i:03d}" for i in range(12))


def _store(
    path: Path,
    ids: tuple[str, ...] = IDS,
    *,
    kind: str = "prepared",
    card: dict | None = None,
    seed: int = 0,
    extra: Callable[[str], dict] | None = None,
) -> Path:
    rng = np.random.default_rng(seed)
    store = CaseStore.create(path, kind=kind, card=card or {}, layout=StoreLayout(chunk=8))  # type: ignore[arg-type]
    for case_id in ids:
        image = (rng.random((2, *SHAPE)) + 0.5).astype(np.float16)
        attrs = {"affine": np.diag([0.8, 0.8, 2.0, 1.0]).tolist(), "spacing": [0.8, 0.8, 2.0], "split": "train"}
        attrs.update(extra(case_id) if extra else {})
        store.write_case(case_id, {"image": image, "mask": (image[1] > 1.3).astype(np.uint8)}, attrs)
    return path


def _edit(path: Path, edit: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _replace(store: Path, case_id: str, name: str, data: np.ndarray, *, record: bool, **create) -> None:
    group = zarr.open_group(str(store / "cases" / case_id), mode="r+", zarr_format=3)
    if name in group:
        del group[name]
    group.create_array(
        name, shape=data.shape, dtype=data.dtype, chunks=tuple(min(8, s) for s in data.shape), fill_value=0, **create
    )[...] = data
    if record:
        group.attrs.update({"sha256": {**group.attrs["sha256"], name: array_sha256(data)}})


def _read(store: Path, case_id: str, name: str) -> np.ndarray:
    return np.asarray(zarr.open_array(str(store / "cases" / case_id / name), mode="r")[...])


def _nan_image(s: Path) -> None:
    image = _read(s, "CASE_008", "image")
    image[1, 2, 3, 4] = np.nan
    _replace(s, "CASE_008", "image", image, record=True)


# case → (damage, what verify must say about it)
DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "CASE_000": (
        lambda s: sorted((s / "cases/CASE_000/image/c").rglob("*"))[-1].unlink(),
        "array 'image' does not match its checksum",
    ),
    "CASE_001": (
        lambda s: (s / "cases/CASE_001/zarr.json").write_text("{not json"),
        "cases/CASE_001/zarr.json is not valid JSON",
    ),
    "CASE_002": (
        lambda s: _edit(
            s / "cases/CASE_002/image/zarr.json",
            lambda d: d["codecs"].__setitem__(1, {"name": "lz77", "configuration": {}}),
        ),
        "uses codec(s) ['lz77'] outside the allowed set",
    ),
    "CASE_003": (
        lambda s: _replace(s, "CASE_003", "mask", _read(s, "CASE_003", "mask"), record=False, compressors=GzipCodec()),
        "uses codec(s) ['gzip'] outside the allowed set",
    ),
    "CASE_004": (
        lambda s: _replace(s, "CASE_004", "mask", np.zeros((16, 16, 10), np.uint8), record=True),
        "array 'mask' has shape [16, 16, 10], which does not match the image's spatial shape [16, 16, 12]",
    ),
    "CASE_005": (
        lambda s: _edit(
            s / "cases/CASE_005/zarr.json", lambda d: d["attributes"].__setitem__("affine", np.eye(3).tolist())
        ),
        "attribute 'affine' is not a finite 4×4 matrix",
    ),
    "CASE_006": (
        lambda s: _edit(
            s / "cases/CASE_006/zarr.json", lambda d: d["attributes"]["affine"][1].__setitem__(3, float("inf"))
        ),
        "attribute 'affine' is not a finite 4×4 matrix",
    ),
    "CASE_007": (
        lambda s: _edit(s / "cases/CASE_007/zarr.json", lambda d: d["attributes"].pop("spacing")),
        "attribute 'spacing' is missing",
    ),
    "CASE_008": (_nan_image, "array 'image' holds 1 NaN/Inf value(s)"),
    "CASE_009": (
        lambda s: _edit(
            s / "cases/CASE_009/image/zarr.json", lambda d: d.__setitem__("shape", [2, 10**5, 10**5, 10**5])
        ),
        "array 'image' declares shape [2, 100000, 100000, 100000]",
    ),
    "CASE_010": (
        lambda s: _replace(s, "CASE_010", "tissue_pred", np.zeros(SHAPE, np.uint8), record=False),
        "unfinished array tissue_pred (rerun the command that adds it)",
    ),
    "..escape": (lambda s: shutil.copytree(s / "cases/CASE_011", s / "cases/..escape"), "unsafe case group name"),
    "A B": (lambda s: shutil.copytree(s / "cases/CASE_011", s / "cases/A B"), "unsafe case group name"),
    "-rf": (lambda s: shutil.copytree(s / "cases/CASE_011", s / "cases/-rf"), "unsafe case group name"),
}


@pytest.mark.parametrize("case_id", sorted(DAMAGES))
def test_each_damage_is_reported_alone(tmp_path: Path, case_id: str) -> None:
    path = _store(tmp_path / "s.zarr")
    damage, message = DAMAGES[case_id]
    damage(path)
    result = verify_store(path)
    assert list(result.bad_cases) == [case_id] and not result.ok
    assert any(message in p for p in result.bad_cases[case_id]), result.bad_cases


def test_cli_lists_every_bad_case_of_a_store_with_many_damages(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    for damage, _ in DAMAGES.values():
        damage(path)
    run = CliRunner().invoke(app, ["store", "verify", str(path)], env={"COLUMNS": "300"})
    assert run.exit_code == 1
    assert "Traceback" not in run.output and not isinstance(run.exception, (KeyError, ValueError, MemoryError))
    for case_id, (_, message) in DAMAGES.items():
        assert f"bad {case_id}: " in run.output and message in run.output, case_id
    assert "CASE_011: " not in run.output  # the intact case is not blamed
    assert f"verified {len(IDS) - 1} cases: {len(DAMAGES)} bad" in run.output


def test_damaged_root_metadata_is_reported_not_raised(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr", IDS[:1])
    (path / "zarr.json").write_text('{"zarr_format": 3,')
    run = CliRunner().invoke(app, ["store", "verify", str(path)], env={"COLUMNS": "300"})
    assert run.exit_code == 1 and "zarr.json is not valid JSON" in run.output and "bad store" in run.output


def test_store_info_counts_damaged_groups(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr", IDS[:3])
    DAMAGES["CASE_001"][0](path)
    run = CliRunner().invoke(app, ["store", "info", str(path), "--json"])
    assert run.exit_code == 0, run.output
    info = json.loads(run.stdout)
    assert info["complete_cases"] == 2 and info["damaged_case_groups"] == 1


def test_symlinked_case_group_is_reported(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr", IDS[:2])
    shutil.move(str(path / "cases/CASE_001"), tmp_path / "elsewhere")
    (path / "cases/CASE_001").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    result = verify_store(path)
    assert list(result.bad_cases) == ["CASE_001"] and "symbolic link" in result.bad_cases["CASE_001"][0]


def _synthetic_from(prepared: Path, out: Path) -> Path:
    """A synthetic store written by the generator's own writer, one case per prepared background."""
    from synbt_factory.generate.jobs import CaseJob
    from synbt_factory.generate.pipeline import write_synthetic_case
    from synbt_factory.generate.placing import PlacedCase

    src = CaseStore.open(prepared)
    CaseStore.create(out, kind="synthetic", card={"synthetic": True, "run_identity": {"prepared": str(prepared)}})
    for i, background in enumerate(src.case_ids()):
        arrays, attrs = src.read_case(background)
        placed = PlacedCase(
            job=CaseJob(index=i, case_id=f"SYN_{i:06d}", background=background, seed=0),
            background=background,
            image=arrays["image"].astype(np.float32),
            mask=arrays["mask"],
            synthetic_mask=np.zeros(SHAPE, np.uint8),
            source_attrs=attrs,
            placement={},
        )
        write_synthetic_case(str(out), placed, (arrays["image"].astype(np.float32), {}, {}), "syntumor")
    return out


def test_synthetic_case_whose_background_changed_is_reported(tmp_path: Path) -> None:
    prepared = _store(tmp_path / "p.zarr", IDS[:2])
    synthetic = _synthetic_from(prepared, tmp_path / "syn.zarr")
    assert verify_store(synthetic).ok
    other = _store(tmp_path / "other.zarr", IDS[1:2], seed=5)  # CASE_001 prepared again, from other data
    shutil.rmtree(prepared / "cases/CASE_001")
    shutil.copytree(other / "cases/CASE_001", prepared / "cases/CASE_001")
    assert verify_store(prepared).ok  # the prepared store itself is intact
    result = verify_store(synthetic)
    assert list(result.bad_cases) == ["SYN_000001"]
    assert "made from a background that has since changed" in result.bad_cases["SYN_000001"][0]
    run = CliRunner().invoke(app, ["store", "verify", str(synthetic)], env={"COLUMNS": "300"})
    assert run.exit_code == 1 and "bad SYN_000001: made from a background that has since changed" in run.output


def test_unreachable_source_is_a_note_and_source_overrides_it(tmp_path: Path) -> None:
    prepared = _store(tmp_path / "p.zarr", IDS[:2])
    synthetic = _synthetic_from(prepared, tmp_path / "syn.zarr")
    moved = tmp_path / "moved.zarr"
    shutil.move(str(prepared), moved)
    result = verify_store(synthetic)
    assert result.ok and len(result.notes) == 1 and "not reachable" in result.notes[0]
    _edit(moved / "cases/CASE_000/zarr.json", lambda d: d["attributes"]["sha256"].__setitem__("image", "0" * 64))
    run = CliRunner().invoke(app, ["store", "verify", str(synthetic), "--source", str(moved)], env={"COLUMNS": "300"})
    assert run.exit_code == 1 and "bad SYN_000000: made from a background that has since changed" in run.output
