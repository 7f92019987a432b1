"""The procedural phantom: reproducible bytes, MAMA-MIA's layout, sane geometry and contrast."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from synbt_factory.phantom import PRESETS, PhantomConfig, make_phantom_case, write_phantom, write_preview
from synbt_factory.phantom.case import is_healthy

SEED = 5
N = 7  # index 3 is lower-case (PHANTOM_004), index 6 is stored sagittal-like


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom") / "ds"
    write_phantom(root, n=N, seed=SEED, size="tiny", healthy_fraction=0.3)
    return root


@pytest.fixture(scope="module")
def tumor_cases() -> list:
    config = dataclasses.replace(PRESETS["tiny"], healthy_fraction=0.0)
    return [make_phantom_case(i, seed=11, config=config) for i in range(6)]


def _case_dirs(root: Path) -> list[Path]:
    return sorted((p for p in (root / "images").iterdir() if p.is_dir()), key=lambda p: p.name.upper())


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(phantom: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_phantom(again, n=N, seed=SEED, size="tiny", healthy_fraction=0.3)
    first, second = _hashes(phantom), _hashes(again)
    assert set(first) == set(second)
    assert first == second


def test_different_seed_gives_different_images(phantom: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_phantom(other, n=2, seed=SEED + 1, size="tiny", healthy_fraction=0.3)
    a, b = _hashes(phantom), _hashes(other)
    name = "images/PHANTOM_001/PHANTOM_001_0000.nii.gz"
    assert a[name] != b[name]


def test_case_content_does_not_depend_on_n(phantom: Path, tmp_path: Path) -> None:
    fewer = tmp_path / "fewer"
    write_phantom(fewer, n=2, seed=SEED, size="tiny", healthy_fraction=0.3)
    a, b = _hashes(phantom), _hashes(fewer)
    shared = [k for k in b if "PHANTOM_00" in k or "phantom_00" in k]
    assert len(shared) >= 10
    assert all(a[k] == b[k] for k in shared)


# --- layout ----------------------------------------------------------------------------------


def test_layout_matches_mamamia(phantom: Path) -> None:
    dirs = _case_dirs(phantom)
    assert [d.name.upper() for d in dirs] == [f"PHANTOM_{i:03d}" for i in range(1, N + 1)]
    assert (phantom / "images" / "phantom_004" / "phantom_004_0000.nii.gz").is_file()
    for d in dirs:
        stem = d.name
        assert (d / "SYNAPSE_METADATA_MANIFEST.tsv").is_file()
        assert "\t" in (d / "SYNAPSE_METADATA_MANIFEST.tsv").read_text()
        phases = sorted(d.glob(f"{stem}_*.nii.gz"))
        assert [p.name for p in phases] == [f"{stem}_{k:04d}.nii.gz" for k in range(len(phases))]
        assert len(phases) >= 3, "pre-contrast and at least two post-contrast phases"
        for rel in ("segmentations/expert", "segmentations/automatic", "tissue/labels", "tissue/breast"):
            assert (phantom / rel / f"{stem}.nii.gz").is_file(), rel
        assert (phantom / "patient_info_files" / f"{stem.lower()}.json").is_file()
    readme = (phantom / "README.md").read_text()
    assert "PHANTOM" in readme and "NOT patient data" in readme and f"seed: {SEED}" in readme


def test_splits_csv_is_wide_and_padded(phantom: Path) -> None:
    with open(phantom / "train_test_splits.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["train_split", "test_split"]
    body = rows[1:]
    assert all(len(r) == 2 for r in body)
    train = [r[0] for r in body if r[0]]
    test = [r[1] for r in body if r[1]]
    assert sorted(train + test) == [f"PHANTOM_{i:03d}" for i in range(1, N + 1)]
    assert 1 <= len(test) < len(train)
    assert any(r[1] == "" for r in body), "the shorter column is padded with empty cells"


def test_patient_info_json_has_mamamia_keys(phantom: Path) -> None:
    for d in _case_dirs(phantom):
        info = json.loads((phantom / "patient_info_files" / f"{d.name.lower()}.json").read_text())
        assert info["patient_id"] == d.name.upper()
        assert {"age", "menopausal_status", "breast_density"} <= set(info["clinical_data"])
        assert info["clinical_data"]["breast_density"] in {"a", "b", "c", "d"}
        imaging = info["imaging_data"]
        assert imaging["dataset"] == "PHANTOM" and imaging["bilateral"] is True
        for key in ("site", "site_profile", "scanner_manufacturer", "field_strength", "fat_suppressed"):
            assert key in imaging
        n_phases = len(list(d.glob("*.nii.gz")))
        assert len(imaging["acquisition_times"]) == n_phases
        assert imaging["acquisition_times"][0] == 0.0 and 60 <= imaging["acquisition_times"][1] <= 90
        bc = info["primary_lesion"]["breast_coordinates"]
        shape = nib.load(str(d / f"{d.name}_0000.nii.gz")).shape
        # MAMA-MIA convention: x ↔ NIfTI axis 2, y ↔ axis 1, z ↔ axis 0; max exclusive.
        assert 0 <= bc["x_min"] < bc["x_max"] <= shape[2]
        assert 0 <= bc["y_min"] < bc["y_max"] <= shape[1]
        assert 0 <= bc["z_min"] < bc["z_max"] <= shape[0]
        mask = np.asarray(nib.load(str(phantom / "segmentations/expert" / f"{d.name}.nii.gz")).dataobj)
        assert info["primary_lesion"]["tumor_count"] == len(info["phantom"]["tumors"])
        assert (info["primary_lesion"]["tumor_count"] > 0) == bool(mask.any())
        if mask.any():
            inside = mask[bc["z_min"] : bc["z_max"], bc["y_min"] : bc["y_max"], bc["x_min"] : bc["x_max"]]
            assert inside.sum() / mask.sum() > 0.9, "the bounding box is the tumor-bearing breast"


def test_files_share_geometry_and_dtypes(phantom: Path) -> None:
    for d in _case_dirs(phantom):
        ref = nib.load(str(d / f"{d.name}_0000.nii.gz"))
        assert ref.get_data_dtype() == np.int16
        assert int(ref.header["qform_code"]) > 0 and int(ref.header["sform_code"]) > 0
        for p in sorted(d.glob("*.nii.gz")):
            img = nib.load(str(p))
            assert img.shape == ref.shape and np.allclose(img.affine, ref.affine)
            assert np.asarray(img.dataobj).min() >= 0
        for rel, values in (
            ("segmentations/expert", {0, 1}),
            ("segmentations/automatic", {0, 1}),
            ("tissue/breast", {0, 1}),
            ("tissue/labels", {0, 1, 2}),
        ):
            img = nib.load(str(phantom / rel / f"{d.name}.nii.gz"))
            assert img.get_data_dtype() == np.uint8
            assert img.shape == ref.shape and np.allclose(img.affine, ref.affine, atol=1e-5), rel
            assert set(np.unique(np.asarray(img.dataobj)).tolist()) <= values


def test_spacing_is_anisotropic_and_orientations_vary(phantom: Path) -> None:
    codes = set()
    for d in _case_dirs(phantom):
        img = nib.load(str(d / f"{d.name}_0000.nii.gz"))
        zooms = np.asarray(img.header.get_zooms()[:3])
        assert zooms.max() / zooms.min() > 1.2
        assert np.abs(img.affine[:3, 3]).max() > 1.0, "a scanner-like, non-zero origin"
        codes.add(nib.aff2axcodes(img.affine))
    assert ("R", "A", "S") in codes
    assert len(codes - {("R", "A", "S")}) >= 2, f"expected LPS and a permuted orientation, got {codes}"


def test_scl_slope_keeps_intensities_consistent() -> None:
    config = PRESETS["tiny"]
    cases = [make_phantom_case(i, seed=SEED, config=config) for i in range(6)]
    sloped = [c for c in cases if c.scl_slope != 1.0]
    plain = [c for c in cases if c.scl_slope == 1.0 and c.fat_suppressed == sloped[0].fat_suppressed]
    assert sloped and plain
    # Stored integers are divided by the slope; after applying it the intensity scale matches.
    for c in sloped:
        assert np.percentile(c.phases[0], 99) < 0.7 * np.percentile(c.phase_float(0), 99)
    p_sloped = np.median([np.percentile(c.phase_float(0), 99.5) for c in sloped])
    p_plain = np.median([np.percentile(c.phase_float(0), 99.5) for c in plain])
    assert 0.5 < p_sloped / p_plain < 2.0


def test_mamamia_index_reads_the_phantom(phantom: Path) -> None:
    from synbt_factory.data.mamamia import index_dataset

    index = index_dataset(phantom)
    assert len(index) == N
    assert index.dataset_name() == "PHANTOM"
    for case in index.cases:
        assert case.n_post_phases >= 2 and case.expert_mask is not None and case.tissue_labels is not None
        assert case.split in {"train", "test"}
        assert case.unexpected_files == ()


# --- anatomy and contrast ----------------------------------------------------------------------


def _ratio(case, code: int, *, core: bool = False) -> float:
    """Mean post1 / mean pre inside a class (``core``: away from its border, no partial volume)."""
    pre, post = case.phase_float(0), case.phase_float(1)
    sel = case.class_map == code
    if core:
        sel = ndi.binary_erosion(sel)
    return float(post[sel].mean() / pre[sel].mean())


def test_enhancement_orders_tumor_over_fgt_over_fat(tumor_cases: list) -> None:
    small = make_phantom_case(0, seed=2, config=dataclasses.replace(PRESETS["small"], healthy_fraction=0.0))
    for case in [*tumor_cases, small]:
        tumor, fgt, fat = _ratio(case, 8), _ratio(case, 2, core=True), _ratio(case, 1, core=True)
        assert tumor > 1.6, (case.case_id, tumor)
        assert tumor > fgt + 0.4, (case.case_id, tumor, fgt)
        assert fgt > fat + 0.03, (case.case_id, fgt, fat)
        assert 0.97 < fat < 1.1, (case.case_id, fat)
        assert _ratio(case, 1) < 1.3, "fat stays nearly flat even with partial volume"


def test_tumors_sit_in_the_breast(tumor_cases: list) -> None:
    for case in tumor_cases:
        mask = case.expert_mask.astype(bool)
        assert mask.any(), case.case_id
        breast = case.breast_mask.astype(bool)
        assert (mask & breast).sum() / mask.sum() > 0.95
        assert case.automatic_mask.any() and not np.array_equal(case.automatic_mask, case.expert_mask)
        assert np.isin(case.class_map[mask], (8, 9)).all()
        # Tissue labels describe healthy tissue: FGT and vessels only inside the breast.
        assert not (case.tissue_labels[~breast] > 0).any()
        assert (case.tissue_labels == 2).any()


def test_tumor_mask_matches_its_recorded_position_in_every_orientation() -> None:
    config = dataclasses.replace(PRESETS["tiny"], healthy_fraction=0.0)
    seen = set()
    for index in (0, 1, 6):  # RAS, LPS, SAG
        case = make_phantom_case(index, seed=SEED, config=config)
        seen.add(case.orientation)
        primary = case.tumors[0]
        centre_vox = np.argwhere(case.expert_mask).mean(axis=0)
        centre_mm = nib.affines.apply_affine(case.affine, centre_vox)
        tolerance = 0.5 * primary["equivalent_diameter_mm"] + 2.0
        assert np.linalg.norm(centre_mm - np.asarray(primary["centre_ras_mm"])) < tolerance
    assert seen == {"RAS", "LPS", "SAG"}


def test_tumor_records_in_the_json_replay_the_tumor(phantom: Path) -> None:
    from synbt_factory.phantom.tumors import TumorSpec, render_tumor

    replayed = 0
    for path in sorted((phantom / "patient_info_files").glob("*.json")):
        info = json.loads(path.read_text())
        grid = info["phantom"]["world_grid"]
        for record in info["phantom"]["tumors"]:
            rendered = render_tumor(TumorSpec.from_record(record), tuple(grid["shape"]), grid["spacing_mm"])
            assert rendered is not None
            assert rendered.volume_mm3 == pytest.approx(record["volume_mm3"], abs=0.01)
            assert rendered.equivalent_diameter_mm == pytest.approx(record["target_diameter_mm"], rel=0.25)
            replayed += 1
    assert replayed >= 3


def test_parallel_workers_write_the_same_bytes(phantom: Path, tmp_path: Path) -> None:
    parallel = tmp_path / "parallel"
    write_phantom(parallel, n=3, seed=SEED, size="tiny", healthy_fraction=0.3, workers=2)
    a, b = _hashes(phantom), _hashes(parallel)
    case_files = [k for k in b if k not in ("README.md", "train_test_splits.csv")]
    assert case_files and all(a[k] == b[k] for k in case_files)


def test_healthy_cases_have_no_tumor() -> None:
    config = dataclasses.replace(PRESETS["tiny"], healthy_fraction=1.0)
    case = make_phantom_case(2, seed=SEED, config=config)
    assert case.healthy and not case.tumors
    assert not case.expert_mask.any() and not case.automatic_mask.any()
    assert not np.isin(case.class_map, (8, 9)).any()
    assert case.info["primary_lesion"]["tumor_count"] == 0
    # The anatomy does not depend on being healthy: same breast mask as the tumor version.
    sick = make_phantom_case(2, seed=SEED, config=dataclasses.replace(config, healthy_fraction=0.0))
    assert np.array_equal(case.breast_mask, sick.breast_mask)


def test_healthy_fraction_is_spread_evenly() -> None:
    flags = [is_healthy(i, SEED, 0.1) for i in range(40)]
    assert sum(flags) == 4
    assert sum(is_healthy(i, SEED, 0.0) for i in range(40)) == 0


# --- writer behaviour, preview, config ----------------------------------------------------------


def test_rewrite_clears_previous_phantom_but_refuses_foreign_folders(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_phantom(root, n=3, seed=1, size="tiny")
    write_phantom(root, n=1, seed=1, size="tiny")
    assert len(_case_dirs(root)) == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        write_phantom(foreign, n=1, seed=1, size="tiny")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_preview_writes_a_png(phantom: Path, tmp_path: Path) -> None:
    out = write_preview(phantom, tmp_path / "preview.png", max_cases=2)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_config_validation_names_the_argument() -> None:
    with pytest.raises(ValueError, match="n_post_range"):
        dataclasses.replace(PRESETS["tiny"], n_post_range=(1, 3))
    with pytest.raises(ValueError, match="site_profiles"):
        dataclasses.replace(PRESETS["tiny"], site_profiles=("nope",))
    with pytest.raises(ValueError, match="tumor_diameter_mm"):
        PhantomConfig(name="x", fov_mm=(64.0, 64.0, 48.0))  # default 5-40 mm tumors do not fit
    with pytest.raises(ValueError, match="size"):
        write_phantom(Path("unused"), n=1, size="huge")
    assert set(PRESETS) == {"tiny", "small", "default"}
