"""check reports every defect of every case in one run, naming case, file and fix."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from dataset_files import make_case, write_nifti, write_splits
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


# --- defects check used to pass (each builds one damaged case next to an intact one) ---------------------------


def _set_header(path: Path, **fields: object) -> None:
    """Rewrite raw header fields (nibabel's loader would silently 'fix' a zero or negative pixdim)."""
    import io

    import nibabel as nib

    raw = gzip.decompress(path.read_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    for key, value in fields.items():
        header[key] = value
    path.write_bytes(gzip.compress(header.binaryblock + raw[348:]))


def _problems(root: Path, case_id: str) -> str:
    (report,) = [r for r in check_dataset(index_dataset(root)) if r.case_id == case_id]
    assert not report.usable
    return " | ".join(f"{p.severity} {p.file}: {p.message}" for p in report.errors)


def test_check_rejects_a_4d_series(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_case(root, "OK_001")
    c = make_case(root, "SERIES_002", slope=None)
    write_nifti(root / "images/SERIES_002/SERIES_002_0001.nii.gz", np.full((80, 90, 30, 2), 100.0), c["affine"])
    assert "SERIES_002_0001.nii.gz: 4D image" in _problems(root, "SERIES_002")
    assert next(r for r in check_dataset(index_dataset(root)) if r.case_id == "OK_001").usable


@pytest.mark.parametrize(
    "pixdim, word",
    [
        ((1.0, 0.0, 0.8, 2.0), "pixdim (0.0, 0.8, 2.0)"),
        ((1.0, 0.8, -0.8, 2.0), "pixdim (0.8, -0.8, 2.0)"),
        ((1.0, 0.8, 0.8, float("nan")), "not positive and finite"),
    ],
)
def test_check_rejects_zero_negative_or_nan_voxel_size_in_every_file(tmp_path: Path, pixdim: tuple, word: str) -> None:
    # the whole case carries the same bad pixdim, so the files still agree with one another
    root = tmp_path / "ds"
    make_case(root, "PIX_001")
    for path in sorted(root.rglob("PIX_001*.nii.gz")):
        full = np.ones(8, np.float32)
        full[: len(pixdim)] = pixdim
        _set_header(path, pixdim=full, sform_code=0)
    assert word in _problems(root, "PIX_001")


def test_check_rejects_a_singular_affine(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_case(root, "SING_001")
    for path in sorted(root.rglob("SING_001*.nii.gz")):  # no third voxel axis; nibabel would refuse to write it
        _set_header(path, srow_z=np.array([0.0, 0.0, 0.0, -40.0], np.float32), qform_code=0, sform_code=1)
    assert "affine is singular" in _problems(root, "SING_001")


@pytest.mark.parametrize(
    "kind, cause",
    [
        ("loop", "cannot open: Too many levels of symbolic links"),
        ("dangling", "cannot open: No such file or directory (a broken link)"),
        ("folder", "is a folder, not a NIfTI file"),
    ],
)
def test_check_names_a_phase_that_is_a_broken_link_or_a_folder(tmp_path: Path, kind: str, cause: str) -> None:
    root = tmp_path / "ds"
    make_case(root, "LINK_001")
    phase = root / "images/LINK_001/LINK_001_0001.nii.gz"
    phase.unlink()
    if kind == "loop":
        phase.symlink_to(phase.name)
    elif kind == "dangling":
        phase.symlink_to("gone.nii.gz")
    else:
        phase.mkdir()
    messages = _problems(root, "LINK_001")
    assert f"images/LINK_001/LINK_001_0001.nii.gz: unreadable: {cause}" in messages
    assert "missing" not in messages  # the phase is reported as broken, not renumbered away


def test_check_rejects_a_gap_in_the_phase_numbers(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_case(root, "GAP_001", n_post=2)
    (root / "images/GAP_001/GAP_001_0001.nii.gz").unlink()
    assert "phases 0, 2: _0001 is missing" in _problems(root, "GAP_001")


@pytest.mark.parametrize("value", [0.0, 100.0])
def test_check_rejects_a_constant_pre_contrast_phase(tmp_path: Path, value: float) -> None:
    root = tmp_path / "ds"
    c = make_case(root, "FLAT_001", slope=None)
    write_nifti(root / "images/FLAT_001/FLAT_001_0000.nii.gz", np.full((80, 90, 30), value), c["affine"])
    assert "FLAT_001_0000.nii.gz: pre-contrast phase is constant" in _problems(root, "FLAT_001")


def test_check_rejects_tissue_labels_on_another_grid(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    c = make_case(root, "TIS_001")
    write_nifti(root / "tissue/labels/TIS_001.nii.gz", np.zeros((80, 90, 29)), c["affine"], dtype=np.uint8)
    assert "tissue/labels/TIS_001.nii.gz: tissue labels shape" in _problems(root, "TIS_001")


def test_check_rejects_a_case_listed_in_train_and_test(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_case(root, "OK_001")
    make_case(root, "LEAK_002")
    write_splits(root, ["OK_001", "LEAK_002"], ["LEAK_002"])
    messages = _problems(root, "LEAK_002")
    assert "train_test_splits.csv: LEAK_002 is listed in train and test" in messages
    assert next(r for r in check_dataset(index_dataset(root)) if r.case_id == "OK_001").usable


@pytest.mark.parametrize(
    "damage, cause",
    [
        (b"OK_001,\nOK_\x00002,\n", "NUL byte on line 3"),
        (b"OK_001,\nPatient_\xe9,\n", "not UTF-8"),
    ],
)
def test_unreadable_splits_file_is_one_dataset_error_not_a_traceback(tmp_path: Path, damage: bytes, cause: str) -> None:
    root = tmp_path / "ds"
    make_case(root, "OK_001")
    (root / "train_test_splits.csv").write_bytes(b"train_split,test_split\n" + damage)
    from synbt_factory.data.check import dataset_problems

    (problem,) = dataset_problems(index_dataset(root))
    assert problem.severity == "error" and problem.file == "train_test_splits.csv" and cause in problem.message
    result = CliRunner().invoke(app, ["data", "check", str(root)], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and not isinstance(result.exception, (UnicodeDecodeError, ValueError)), result.output
    assert result.output.count("train_test_splits.csv: cannot read the splits file") == 1


def test_patient_info_that_is_a_list_is_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_case(root, "INFO_001")
    (root / "patient_info_files/info_001.json").write_text("[1, 2, 3]")
    (report,) = check_dataset(index_dataset(root))
    assert report.usable
    (problem,) = report.problems
    assert problem.severity == "warning" and problem.file == "patient_info_files/info_001.json"
    assert "is a list, not an object" in problem.message


def test_an_unexpected_failure_is_reported_for_its_case_not_raised(tmp_path: Path, monkeypatch) -> None:
    import synbt_factory.data.check as check_module

    root = tmp_path / "ds"
    make_case(root, "OK_001")
    make_case(root, "ODD_002")
    real = check_module.read_full

    def flaky(path: Path):
        if "ODD_002_0001" in path.name:
            raise MemoryError("declared shape too large")
        return real(path)

    monkeypatch.setattr(check_module, "read_full", flaky)
    reports = {r.case_id: r for r in check_dataset(index_dataset(root))}
    assert reports["OK_001"].usable
    (problem,) = reports["ODD_002"].problems
    assert problem.severity == "error" and "MemoryError: declared shape too large" in problem.message
