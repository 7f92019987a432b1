"""Site B of the phantom: an external test family that differs from site A in documented ways."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.data.check import check_dataset
from synbt_factory.data.mamamia import index_dataset
from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
from synbt_factory.phantom import PRESETS, PhantomConfig, SiteStyle, phantom_config, write_phantom, write_preview
from synbt_factory.phantom.anatomy import DENSITY_FGT_FRACTION
from synbt_factory.phantom.sites import TUMOR_KINDS
from synbt_factory.phantom.tumors import TumorSpec, render_tumor
from synbt_factory.store import CaseStore

SEED = 4
N = 8  # one full cycle of site B's orientations (LPS, LAS, COR)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def site_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site_b") / "ds"
    write_phantom(root, n=N, seed=SEED, size="tiny", healthy_fraction=0.0, site="B")
    return root


@pytest.fixture(scope="module")
def site_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site_a") / "ds"
    write_phantom(root, n=N, seed=SEED, size="tiny", healthy_fraction=0.0)
    return root


def _infos(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "patient_info_files").glob("*.json"))]


def _images(root: Path) -> dict[str, list[Path]]:
    """Case id → phase files (pre-contrast first)."""
    return {d.name.upper(): sorted(d.glob("*.nii.gz")) for d in sorted((root / "images").iterdir()) if d.is_dir()}


def _expert(root: Path, case_id: str) -> Path:
    (path,) = [p for p in (root / "segmentations" / "expert").iterdir() if p.name.upper() == f"{case_id}.NII.GZ"]
    return path


def _test_split(root: Path) -> list[str]:
    with open(root / "train_test_splits.csv", newline="") as fh:
        return [row["test_split"] for row in csv.DictReader(fh) if row["test_split"]]


# --- determinism ---------------------------------------------------------------------------------


def test_site_b_is_byte_identical_per_seed_and_differs_across_seeds(site_b: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_phantom(again, n=N, seed=SEED, size="tiny", healthy_fraction=0.0, site="B")
    assert _hashes(again) == _hashes(site_b)
    other = tmp_path / "other"
    write_phantom(other, n=2, seed=SEED + 1, size="tiny", healthy_fraction=0.0, site="B")
    name = "images/PHANTOM_001/PHANTOM_001_0000.nii.gz"
    assert _hashes(other)[name] != _hashes(site_b)[name]


# --- the documented differences, measured from the written files ---------------------------------


def test_stored_orientations_differ(site_a: Path, site_b: Path) -> None:
    def codes(root: Path) -> set[str]:
        return {"".join(nib.aff2axcodes(nib.load(str(files[0])).affine)) for files in _images(root).values()}

    a, b = codes(site_a), codes(site_b)
    assert "RAS" in a and "RAS" not in b, (a, b)
    assert {"LAS", "LSA"} <= b and not ({"LAS", "LSA"} & a), (a, b)


def test_slice_thickness_noise_and_bias_ranges_do_not_overlap(site_a: Path, site_b: Path) -> None:
    def thickest(root: Path) -> list[float]:
        return [float(max(nib.load(str(files[0])).header.get_zooms()[:3])) for files in _images(root).values()]

    assert min(thickest(site_b)) > max(thickest(site_a)) + 0.2
    for key in ("noise_sigma_relative", "bias_strength"):
        a = [info["phantom"][key] for info in _infos(site_a)]
        b = [info["phantom"][key] for info in _infos(site_b)]
        assert min(b) > max(a), key


def test_site_b_is_mostly_not_fat_suppressed(site_a: Path, site_b: Path) -> None:
    share_a = np.mean([info["imaging_data"]["fat_suppressed"] for info in _infos(site_a)])
    share_b = np.mean([info["imaging_data"]["fat_suppressed"] for info in _infos(site_b)])
    assert share_b <= 0.25 and share_a >= share_b + 0.25, (share_a, share_b)


def test_anatomy_has_thicker_skin_larger_and_fattier_breasts(site_a: Path, site_b: Path) -> None:
    a, b = _infos(site_a), _infos(site_b)

    def values(infos: list[dict], key: str) -> list[float]:
        return [i["phantom"]["anatomy"][key] for i in infos]

    assert min(values(b, "skin_mm")) > max(values(a, "skin_mm"))
    assert np.median(values(b, "breast_projection_mm")) > np.median(values(a, "breast_projection_mm")) + 2.0

    def fgt_share(info: dict) -> float:
        """The achieved fibroglandular fraction relative to the middle of its ACR density class's range."""
        lo, hi = DENSITY_FGT_FRACTION[info["clinical_data"]["breast_density"]]
        return info["phantom"]["fgt_fraction_of_breast"] / (0.5 * (lo + hi))

    assert np.median([fgt_share(i) for i in b]) < 0.8 * np.median([fgt_share(i) for i in a])


def test_site_b_does_not_reuse_site_a_draws(site_a: Path, site_b: Path) -> None:
    # Same seed and index, yet other patients: site B draws from its own per-case streams.
    ages_a = [i["clinical_data"]["age"] for i in _infos(site_a)]
    ages_b = [i["clinical_data"]["age"] for i in _infos(site_b)]
    assert sum(x == y for x, y in zip(ages_a, ages_b, strict=True)) <= 2, (ages_a, ages_b)


def test_tumors_are_larger_and_of_every_site_b_kind(site_a: Path, site_b: Path) -> None:
    def diameters(root: Path) -> list[float]:
        return [t["equivalent_diameter_mm"] for info in _infos(root) for t in info["phantom"]["tumors"]]

    assert max(diameters(site_b)) > max(max(diameters(site_a)), PRESETS["tiny"].tumor_diameter_mm[1]) + 0.5
    kinds = [info["phantom"]["tumor_shape_kind"] for info in _infos(site_b)]
    assert set(kinds) == set(TUMOR_KINDS), kinds
    for info in _infos(site_b):
        primary = info["phantom"]["tumors"][0]
        kind = info["phantom"]["tumor_shape_kind"]
        assert kind != "rim" or primary["enhancement"] in ("rim", "necrotic")
        assert kind != "non_mass" or (primary["shape"] == "non_mass" and len(primary["lobes"]) >= 6)
        assert info["primary_lesion"]["shape"] == primary["shape"]


def test_tumor_enhancement_is_lower(site_a: Path, site_b: Path) -> None:
    def median_ratio(root: Path) -> float:
        ratios = []
        for case_id, files in _images(root).items():
            mask = np.asarray(nib.load(str(_expert(root, case_id))).dataobj) > 0
            pre, post = (np.asarray(nib.load(str(f)).get_fdata(dtype=np.float32)) for f in files[:2])
            ratios.append(float(post[mask].mean() / pre[mask].mean()))
        return float(np.median(ratios))

    ratio_a, ratio_b = median_ratio(site_a), median_ratio(site_b)
    assert ratio_b > 1.3, "site-B tumors still enhance"
    assert ratio_b < ratio_a - 0.3, (ratio_a, ratio_b)


def test_json_records_site_and_shape_kind(site_a: Path, site_b: Path) -> None:
    for info in _infos(site_b):
        assert info["phantom"]["site"] == "B"
        assert info["phantom"]["tumor_shape_kind"] in TUMOR_KINDS
        assert info["imaging_data"]["site"] == "PHANTOM_EXTERNAL_B"
        assert info["imaging_data"]["view"] == ("coronal" if info["imaging_data"]["orientation"] == "LSA" else "axial")
        grid = info["phantom"]["world_grid"]
        for record in info["phantom"]["tumors"]:  # the records replay every tumor, non-mass ones included
            rendered = render_tumor(TumorSpec.from_record(record), tuple(grid["shape"]), grid["spacing_mm"])
            assert rendered is not None and rendered.volume_mm3 == pytest.approx(record["volume_mm3"], abs=0.01)
    # Site A keeps its JSON as it was: no site keys (their absence means site A).
    for info in _infos(site_a):
        assert "site" not in info["phantom"] and "tumor_shape_kind" not in info["phantom"]


def test_readme_documents_site_b(site_a: Path, site_b: Path) -> None:
    readme = (site_b / "README.md").read_text()
    assert "## Site B" in readme and "--site B" in readme
    for text in ("2.8–3.6 mm", "1.5–2.5 mm", "6–19 mm", "5–12 mm", "0.035–0.06", "70–110 s", "non_mass", "LSA"):
        assert text in readme, text
    readme_a = (site_a / "README.md").read_text()
    assert "Site B" not in readme_a and '"site"' not in readme_a


# --- the project's own check and prepare accept site B --------------------------------------------


def test_check_and_prepare_accept_site_b(site_b: Path, tmp_path: Path) -> None:
    reports = check_dataset(index_dataset(site_b))
    assert len(reports) == N
    assert all(r.usable and not r.problems for r in reports), [str(p) for r in reports for p in r.problems]

    ids = ["PHANTOM_001", "PHANTOM_002", "PHANTOM_003"]  # LPS, LAS, COR
    out = tmp_path / "p.zarr"
    result = prepare_dataset(site_b, out, config=PrepareConfig(fov_mm=(64, 64, 48)), workers=1, case_ids=ids)
    assert sorted(result.prepared) == ids and not result.failed
    store = CaseStore.open(out)
    for case_id in ids:
        arrays, attrs = store.read_case(case_id, names=("image", "mask"))
        affine = np.asarray(attrs["affine"])
        assert nib.aff2axcodes(affine) == ("R", "A", "S")
        source = nib.load(str(_expert(site_b, case_id)))
        truth = nib.affines.apply_affine(source.affine, np.argwhere(np.asarray(source.dataobj) > 0).mean(axis=0))
        got = nib.affines.apply_affine(affine, np.argwhere(arrays["mask"] > 0).mean(axis=0))
        assert np.linalg.norm(got - truth) < 2.0, (case_id, got, truth)


def test_preview_reads_site_b(site_b: Path, tmp_path: Path) -> None:
    out = write_preview(site_b, tmp_path / "b.png", case_ids=["PHANTOM_003"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- options ---------------------------------------------------------------------------------------


def test_test_fraction_sets_the_test_share(site_b: Path, tmp_path: Path) -> None:
    assert len(_test_split(site_b)) in (1, 2), "default: the preset's 0.2 of 8 cases"
    half = tmp_path / "half"
    write_phantom(half, n=4, seed=SEED, size="tiny", test_fraction=0.5)
    assert len(_test_split(half)) == 2
    assert "--test-fraction 0.5" in (half / "README.md").read_text()
    none = tmp_path / "none"
    write_phantom(none, n=2, seed=SEED, size="tiny", site="B", test_fraction=0.0)
    assert _test_split(none) == []


def test_bad_site_or_test_fraction_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="site"):
        write_phantom(tmp_path / "x", n=1, size="tiny", site="C")
    with pytest.raises(ValueError, match="test_fraction"):
        write_phantom(tmp_path / "x", n=1, size="tiny", test_fraction=1.0)
    assert not (tmp_path / "x").exists(), "nothing is written for bad arguments"
    with pytest.raises(ValueError, match="site"):
        PhantomConfig(name="x", fov_mm=(64.0, 64.0, 48.0), tumor_diameter_mm=(5.0, 12.0), site="C")
    with pytest.raises(ValueError, match="tumor_kinds"):
        SiteStyle(name="X", tumor_kinds=("blob",), tumor_kind_probabilities=(1.0,))
    assert phantom_config("tiny") is PRESETS["tiny"] and phantom_config("tiny", "B").site == "B"

    runner = CliRunner()
    for args, flag in ((["--site", "C"], "--site"), (["--test-fraction", "1.5"], "--test-fraction")):
        result = runner.invoke(
            app, ["data", "phantom", "--out", str(tmp_path / "cli"), "--n", "1", "--size", "tiny", *args]
        )
        assert result.exit_code == 2 and flag in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "cli").exists()
