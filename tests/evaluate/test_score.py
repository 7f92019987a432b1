"""Scoring NIfTI predictions against NIfTI truths: matching, spacing from the truth, clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synbt_factory.evaluate.score import ScoreError, index_nifti_folder, score_predictions

AFFINE = np.diag([-0.8, -0.8, 2.0, 1.0])


def _write(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), str(path))
    return path


def _mask(shape=(20, 20, 10), lo=(5, 5, 3), hi=(12, 14, 7)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return m


def test_perfect_predictions_match_case_insensitively(tmp_path: Path) -> None:
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    _write(truth / "DUKE_001.nii.gz", _mask())
    _write(truth / "ISPY1_1001.nii.gz", _mask(lo=(2, 3, 1)))
    _write(pred / "duke_001.nii", _mask())  # other casing and extension
    _write(pred / "Ispy1_1001.NII.GZ", _mask(lo=(2, 3, 1)))
    result = score_predictions(pred, truth)
    assert [r["case_id"] for r in result.rows] == ["DUKE_001", "ISPY1_1001"]
    for r in result.rows:
        assert r["dice"] == 1.0 and r["hd95"] == 0.0 and r["msd"] == 0.0
    assert result.summary["metrics"]["dice"]["mean"] == 1.0
    assert result.unmatched_predictions == [] and result.unmatched_truths == []


def test_distances_use_truth_spacing_and_unmatched_are_listed(tmp_path: Path) -> None:
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    t = np.zeros((10, 10, 10), np.uint8)
    p = np.zeros_like(t)
    t[2, 2, 2] = 1
    p[2, 2, 5] = 1  # 3 slices apart at 2.0 mm → 6 mm
    _write(truth / "NACT_01.nii.gz", t)
    _write(pred / "NACT_01.nii.gz", p)
    _write(pred / "EXTRA_9.nii.gz", p)
    _write(truth / "DUKE_777.nii.gz", t)
    (pred / "notes.txt").write_text("ignored")
    result = score_predictions(pred, truth, mama_mia=True)
    (row,) = result.rows
    assert row["hd95"] == pytest.approx(6.0) and row["msd"] == pytest.approx(6.0) and row["dice"] == 0.0
    assert row["mama_mia_norm_hd"] == pytest.approx(6.0 / 150.0)
    assert [p.name for p in result.unmatched_predictions] == ["EXTRA_9.nii.gz"]
    assert [p.name for p in result.unmatched_truths] == ["DUKE_777.nii.gz"]
    assert result.summary["mama_mia_score"] == pytest.approx(0.5 * (0.0 + 1 - 6.0 / 150.0))


def test_empty_prediction_follows_rule(tmp_path: Path) -> None:
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    _write(truth / "A_1.nii.gz", _mask())
    _write(pred / "A_1.nii.gz", np.zeros((20, 20, 10), np.uint8))
    row = score_predictions(pred, truth).rows[0]
    diag = math.sqrt((20 * 0.8) ** 2 + (20 * 0.8) ** 2 + (10 * 2.0) ** 2)
    assert row["dice"] == 0.0 and row["hd95"] == pytest.approx(diag)
    nan_row = score_predictions(pred, truth, empty_penalty="nan").rows[0]
    assert math.isnan(nan_row["msd"])


def test_grid_mismatches_name_the_file(tmp_path: Path) -> None:
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    _write(truth / "B_2.nii.gz", _mask())
    _write(pred / "B_2.nii.gz", _mask(shape=(20, 20, 11)))
    with pytest.raises(ScoreError, match=r"B_2\.nii\.gz has shape"):
        score_predictions(pred, truth)
    shifted = AFFINE.copy()
    shifted[0, 3] = 5.0
    _write(pred / "B_2.nii.gz", _mask(), shifted)
    with pytest.raises(ScoreError, match="different affines"):
        score_predictions(pred, truth)


def test_no_match_and_duplicates_are_errors(tmp_path: Path) -> None:
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    _write(truth / "C_3.nii.gz", _mask())
    _write(pred / "D_4.nii.gz", _mask())
    with pytest.raises(ScoreError, match="matches a truth"):
        score_predictions(pred, truth)
    _write(pred / "d_4.nii", _mask())
    with pytest.raises(ScoreError, match="same case"):
        index_nifti_folder(pred)


def test_cli_json_output(tmp_path: Path) -> None:
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from cli.segment import segment_score

    truth, pred = tmp_path / "truth", tmp_path / "pred"
    _write(truth / "E_5.nii.gz", _mask())
    _write(pred / "e_5.nii.gz", _mask())
    app = typer.Typer()
    app.command()(segment_score)
    res = CliRunner().invoke(app, ["--pred", str(pred), "--truth", str(truth), "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["cases"] == [{"case_id": "E_5", "dice": 1.0, "hd95": 0.0, "msd": 0.0}]
    assert payload["mean"]["dice"] == 1.0
