"""The MAMA-MIA indexer: casing, decoys, phase order, wide splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_files import write_splits
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.data.mamamia import DatasetLayoutError, index_dataset


def test_index_finds_cases_case_insensitively_and_orders_phases(small_dataset: Path) -> None:
    # an out-of-order extra phase and a stray NIfTI with a foreign name
    case_dir = small_dataset / "images" / "TEST_001"
    (case_dir / "TEST_001_0001.nii.gz").rename(case_dir / "TEST_001_0010.nii.gz")
    index = index_dataset(small_dataset)
    assert [c.case_id for c in index.cases] == ["TEST_001", "TEST_002", "TEST_003"]
    c1 = index.get("test_001")
    assert c1.phase_numbers == (0, 2, 10)
    assert c1.phases[0].name == "TEST_001_0000.nii.gz"
    c2 = index.get("TEST_002")
    assert c2.folder_name == "test_002" and c2.n_post_phases == 3
    assert c2.expert_mask is not None and c2.expert_mask.name == "test_002.nii.gz"
    assert c2.info()["patient_id"] == "TEST_002"
    assert {c.case_id: c.split for c in index.cases} == {"TEST_001": "train", "TEST_002": "train", "TEST_003": "test"}
    assert all(p.name.endswith(".nii.gz") for c in index.cases for p in c.phases)  # manifest .tsv ignored


def test_index_rejects_folder_without_images(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="images/"):
        index_dataset(tmp_path)


def test_cli_index_json_lists_every_case(small_dataset: Path) -> None:
    result = CliRunner().invoke(app, ["data", "index", str(small_dataset), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["case_id"] for r in rows] == ["TEST_001", "TEST_002", "TEST_003"]
    assert set(rows[0]) == {"case_id", "n_phases", "shape", "spacing", "split", "tumor_voxels"}
    assert rows[1]["n_phases"] == 4 and rows[0]["shape"] == [80, 90, 30]
    assert rows[0]["spacing"] == [0.8, 0.8, 2.0] and rows[0]["tumor_voxels"] > 0


def test_dataset_name_skips_patient_info_that_is_not_an_object(small_dataset: Path) -> None:
    (small_dataset / "patient_info_files/test_001.json").write_text('["TESTSET"]')
    index = index_dataset(small_dataset)
    with pytest.raises(ValueError, match="test_001.json: patient info JSON is a list"):
        index.get("TEST_001").info()
    assert index.dataset_name() == "TESTSET"  # from the next case, no traceback


def test_index_keeps_phase_entries_that_are_broken_links_or_folders(small_dataset: Path) -> None:
    folder = small_dataset / "images/TEST_001"
    (folder / "TEST_001_0001.nii.gz").unlink()
    (folder / "TEST_001_0001.nii.gz").symlink_to("TEST_001_0001.nii.gz")  # a loop
    (folder / "TEST_001_0002.nii.gz").unlink()
    (folder / "TEST_001_0002.nii.gz").mkdir()
    case = index_dataset(small_dataset).get("TEST_001")
    # nothing renumbered: _0002 never becomes the "first post-contrast"
    assert case.phase_numbers == (0, 1, 2)


def test_splits_record_every_split_that_lists_a_case(small_dataset: Path) -> None:

    write_splits(small_dataset, ["TEST_001", "TEST_002"], ["TEST_003", "TEST_002"])
    index = index_dataset(small_dataset)
    leak = index.get("TEST_002")
    assert leak.listed_splits == ("train", "test") and leak.split is None
    assert index.get("TEST_003").split == "test"


def test_splits_with_byte_order_mark_keep_split_names(small_dataset: Path) -> None:
    splits = small_dataset / "train_test_splits.csv"
    splits.write_bytes(b"\xef\xbb\xbf" + splits.read_bytes())
    assert index_dataset(small_dataset).get("TEST_001").split == "train"


def test_cli_index_reports_an_unreadable_splits_file_without_traceback(small_dataset: Path) -> None:
    (small_dataset / "train_test_splits.csv").write_bytes(b"train_split,test_split\nTEST_\xff01,\n")
    result = CliRunner().invoke(app, ["data", "index", str(small_dataset)], env={"COLUMNS": "300"})
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "train_test_splits.csv: cannot read the splits file: not UTF-8" in result.output
