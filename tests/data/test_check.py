"""check reports every defect of every case in one run, naming case, file and fix."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from conftest import make_case, write_nifti, write_splits
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.data.check import check_dataset
from synbt_factory.data.mamamia import index_dataset


def _defective_dataset(root: Path) -> dict[str, str]:
    """One defect per case; returns case id → a word its message must contain."""
    expected = {}
    make_case(root, "OK_001")
    make_case(root, "NOPRE_002")
    (root / "images/NOPRE_002/NOPRE_002_0000.nii.gz").unlink()
    expected["NOPRE_002"] = "pre-contrast"
    make_case(root, "NOPOST_003", n_post=1)
    (root / "images/NOPOST_003/NOPOST_003_0001.nii.gz").unlink()
    expected["NOPOST_003"] = "post-contrast"
    c = make_case(root, "GEOM_004")
    write_nifti(root / "images/GEOM_004/GEOM_004_0002.nii.gz", np.zeros((80, 90, 31)), c["affine"])
    expected["GEOM_004"] = "geometry differs"
    c = make_case(root, "MASK_005")
    shifted = c["affine"].copy()
    shifted[0, 3] += 5.0
    write_nifti(root / "segmentations/expert/MASK_005.nii.gz", c["tumor"].astype(np.uint8), shifted, dtype=np.uint8)
    expected["MASK_005"] = "mask shape"
    c = make_case(root, "NAN_006", slope=None)
    data = np.full((80, 90, 30), 100.0, np.float32)
    data[3, 3, 3] = np.nan
    write_nifti(root / "images/NAN_006/NAN_006_0001.nii.gz", data, c["affine"], dtype=np.float32)
    expected["NAN_006"] = "NaN"
    make_case(root, "TRUNC_007")
    p = root / "images/TRUNC_007/TRUNC_007_0001.nii.gz"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    expected["TRUNC_007"] = "unreadable"
    c = make_case(root, "EMPTY_008")
    write_nifti(root / "segmentations/expert/EMPTY_008.nii.gz", np.zeros((80, 90, 30)), c["affine"], dtype=np.uint8)
    expected["EMPTY_008"] = "empty"
    make_case(root, "bad id 009")
    expected["BAD ID 009"] = "safe path"
    write_splits(root, ["OK_001"], [])
    return expected


def test_check_names_every_defect_once_per_case(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    expected = _defective_dataset(root)
    reports = {r.case_id: r for r in check_dataset(index_dataset(root))}
    assert reports["OK_001"].problems == ()
    for case_id, word in expected.items():
        messages = " | ".join(f"{p.file}: {p.message} {p.fix}" for p in reports[case_id].problems)
        assert word.lower() in messages.lower(), (case_id, messages)
        assert all(p.case_id == case_id and p.fix for p in reports[case_id].problems)
    assert reports["EMPTY_008"].usable  # warning only ...
    strict = {r.case_id: r for r in check_dataset(index_dataset(root), strict=True)}
    assert not strict["EMPTY_008"].usable  # ... error with --strict
    trunc = reports["TRUNC_007"].problems[0]
    assert trunc.file.endswith("TRUNC_007_0001.nii.gz")


def test_truncated_gzip_header_is_still_readable_but_check_catches_it(tmp_path: Path) -> None:
    root = tmp_path / "t"
    make_case(root, "TRUNC_001")
    p = root / "images/TRUNC_001/TRUNC_001_0001.nii.gz"
    raw = gzip.decompress(p.read_bytes())
    packed = gzip.compress(raw)
    p.write_bytes(packed[: len(packed) // 2])
    import nibabel as nib

    assert nib.load(str(p)).shape == (80, 90, 30)  # the header alone looks fine
    (report,) = [r for r in check_dataset(index_dataset(root)) if r.case_id == "TRUNC_001"]
    assert not report.usable


def test_cli_check_exit_codes(tmp_path: Path, small_dataset: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["data", "check", str(small_dataset)])
    assert ok.exit_code == 0, ok.output
    root = tmp_path / "bad"
    _defective_dataset(root)
    bad = runner.invoke(app, ["data", "check", str(root)])
    assert bad.exit_code == 1
    for case_id in ("NOPRE_002", "NOPOST_003", "GEOM_004", "MASK_005", "NAN_006", "TRUNC_007", "EMPTY_008"):
        assert case_id in bad.output
