"""Write phantom cases to disk in MAMA-MIA's layout, byte-for-byte reproducibly.

Layout (``<ID>`` = ``PHANTOM_001`` …, lower-case for every 4th case as in some releases)::

    images/<ID>/<ID>_0000.nii.gz                 pre-contrast; _0001 first post-contrast; _0002 ...
    images/<ID>/SYNAPSE_METADATA_MANIFEST.tsv    a decoy non-NIfTI file, as in the real download
    segmentations/expert/<ID>.nii.gz             tumor ground truth (0/1 uint8; empty when healthy)
    segmentations/automatic/<ID>.nii.gz          a perturbed copy
    patient_info_files/<id>.json                 lower-case file name
    train_test_splits.csv                        wide: train_split,test_split (shorter column padded)
    tissue/labels/<ID>.nii.gz                    0 background, 1 vessels, 2 dense FGT (not in MAMA-MIA)
    tissue/breast/<ID>.nii.gz                    breast mask 0/1 (not in MAMA-MIA)
    README.md                                    says this is a procedural phantom and how it was made

NIfTI files are serialised by nibabel in memory and gzipped with ``mtime=0`` and no file name,
so the same seed and arguments give identical bytes.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import logging
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from synbt_factory import __version__
from synbt_factory.io import atomic_write_bytes
from synbt_factory.phantom.anatomy import CLASS_NAMES
from synbt_factory.phantom.case import PhantomCase, case_id_for, is_test, make_phantom_case
from synbt_factory.phantom.info import BREAST_COORDINATES_CONVENTION
from synbt_factory.phantom.presets import PhantomConfig, phantom_config
from synbt_factory.phantom.site_doc import site_b_markdown
from synbt_factory.phantom.sites import SITES
from synbt_factory.progress import ProgressFn, report

__all__ = ["write_phantom", "write_case", "nifti_bytes", "README_MARKER"]

log = logging.getLogger(__name__)

README_MARKER = "procedural PHANTOM"
_CASE_DIRS = ("images", "segmentations", "patient_info_files", "tissue")


def nifti_bytes(
    data: np.ndarray, affine: np.ndarray, *, slope: float = 1.0, compress_level: int = 1, description: str = ""
) -> bytes:
    """A gzipped NIfTI-1 file of ``data`` (its dtype kept) as bytes, deterministic.

    The affine goes to both the qform and the sform (code 1, scanner); with ``slope`` != 1 the
    header carries ``scl_slope`` (intensity = stored value × slope).
    """
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(data.dtype)
    if description:
        img.header["descrip"] = description.encode("ascii")[:79]
    if slope != 1.0:
        img.header.set_slope_inter(float(slope), 0.0)
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=compress_level, mtime=0)


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write ``payload`` through ``<path>.partial`` and rename; not fsynced (a phantom is regenerated, not kept
    durable, and a folder holds thousands of files)."""
    atomic_write_bytes(path, payload, fsync=False)


def _manifest(stem: str, names: list[str]) -> str:
    lines = ["path\tparent\tname\tsynapseStore\tcontentType\tused"]
    for i, name in enumerate(names):
        lines.append(f"{stem}/{name}\tsynPHANTOM{i:04d}\t{name}\tTRUE\tapplication/x-gzip\t")
    return "\n".join(lines) + "\n"


def write_case(out_dir: Path, case: PhantomCase, *, compress_level: int = 1) -> list[Path]:
    """Write one in-memory case into ``out_dir`` (MAMA-MIA layout). Returns the files written."""
    out_dir = Path(out_dir)
    stem = case.file_stem
    desc = "synbt procedural PHANTOM - not patient data"
    written: list[Path] = []
    image_dir = out_dir / "images" / stem
    names = []
    for k, phase in enumerate(case.phases):
        name = f"{stem}_{k:04d}.nii.gz"
        path = image_dir / name
        _atomic_write(
            path, nifti_bytes(phase, case.affine, slope=case.scl_slope, compress_level=compress_level, description=desc)
        )
        written.append(path)
        names.append(name)
    manifest = image_dir / "SYNAPSE_METADATA_MANIFEST.tsv"
    _atomic_write(manifest, _manifest(stem, names).encode())
    written.append(manifest)
    for rel, array in (
        (Path("segmentations") / "expert", case.expert_mask),
        (Path("segmentations") / "automatic", case.automatic_mask),
        (Path("tissue") / "labels", case.tissue_labels),
        (Path("tissue") / "breast", case.breast_mask),
    ):
        path = out_dir / rel / f"{stem}.nii.gz"
        _atomic_write(
            path, nifti_bytes(array.astype(np.uint8, copy=False), case.affine, compress_level=6, description=desc)
        )
        written.append(path)
    info_path = out_dir / "patient_info_files" / f"{case.case_id.lower()}.json"
    _atomic_write(info_path, (json.dumps(case.info, indent=2) + "\n").encode())
    written.append(info_path)
    return written


def _case_summary(case: PhantomCase) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "healthy": case.healthy,
        "n_post": case.n_post,
        "shape": list(case.shape),
        "spacing": [round(s, 4) for s in case.spacing],
        "orientation": case.orientation,
        "tumors": len(case.tumors),
    }


def _make_and_write(out_dir: str, index: int, seed: int, config: PhantomConfig) -> dict[str, Any]:
    case = make_phantom_case(index, seed=seed, config=config)
    write_case(Path(out_dir), case, compress_level=config.compress_level)
    return _case_summary(case)


def _prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir``; clear the case folders of a previous phantom; refuse to mix with other data."""
    if out_dir.exists() and any(out_dir.iterdir()):
        readme = out_dir / "README.md"
        if not (readme.is_file() and README_MARKER in readme.read_text(errors="replace")):
            raise FileExistsError(
                f"{out_dir} is not empty and is not a phantom written by synbt; choose an empty or new folder"
            )
        for name in _CASE_DIRS:
            if (out_dir / name).is_dir():
                shutil.rmtree(out_dir / name)
        for name in ("train_test_splits.csv", "README.md"):
            (out_dir / name).unlink(missing_ok=True)
        log.info("cleared the previous phantom in %s", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def _write_splits(out_dir: Path, train: list[str], test: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["train_split", "test_split"])
    for i in range(max(len(train), len(test))):
        writer.writerow([train[i] if i < len(train) else "", test[i] if i < len(test) else ""])
    _atomic_write(out_dir / "train_test_splits.csv", buf.getvalue().encode())


def _readme(
    config: PhantomConfig,
    *,
    n: int,
    seed: int,
    size: str,
    healthy_fraction: float,
    test_fraction: float | None,
    summaries: list[dict[str, Any]],
) -> str:
    fields = dataclasses.asdict(config)
    if config.site == "A":
        del fields["site"]  # site A's README stays as it was before sites existed
    cfg = json.dumps(fields, indent=2)
    codes = "\n".join(f"| {k} | {v} |" for k, v in CLASS_NAMES.items())
    n_healthy = sum(1 for s in summaries if s["healthy"])
    site_line = "" if config.site == "A" else f"- site: `{config.site}` (external test family, see below)\n"
    site_flags = "" if config.site == "A" else f" --site {config.site}"
    if test_fraction is not None:
        site_flags += f" --test-fraction {test_fraction}"
    site_section = "" if config.site == "A" else "\n" + site_b_markdown(size)
    regenerate = (
        f"synbt data phantom --out <dir> --n {n} --seed {seed} --size {size} --healthy-fraction {healthy_fraction}"
        f"{site_flags}"
    )
    orientations = "RAS, LPS or sagittal (permuted)" if config.site == "A" else "LPS, LAS or coronal (permuted)"
    return f"""# synbt {README_MARKER} — synthetic, NOT patient data

This folder holds a **{README_MARKER}**: breast DCE-MRI volumes drawn by a program
(`synbt_factory.phantom`, synbt {__version__}), not images of any person. It copies the layout of
the public MAMA-MIA dataset so that the same loader reads both. Do not use it to draw clinical
conclusions; it exists to test and demonstrate the pipeline and to pre-train models.

- generator: `synbt_factory.phantom.write_phantom`
  (synbt {__version__}, numpy {np.__version__}, nibabel {nib.__version__})
- seed: {seed}
- size preset: `{size}`
{site_line}- cases: {n} ({n_healthy} without tumor; healthy_fraction = {healthy_fraction})
- regenerate: `{regenerate}`
  (same seed and arguments give byte-identical files)

## Layout (MAMA-MIA's, plus `tissue/`)

```
images/<ID>/<ID>_0000.nii.gz        pre-contrast; _0001 first post-contrast; _0002 ...
images/<ID>/SYNAPSE_METADATA_MANIFEST.tsv   decoy non-NIfTI file (as in the real download)
segmentations/expert/<ID>.nii.gz    tumor ground truth 0/1 (all zero for healthy cases)
segmentations/automatic/<ID>.nii.gz perturbed copy (dilated/eroded, shifted 1-2 voxels)
patient_info_files/<id>.json        patient_id, clinical_data, primary_lesion, imaging_data, phantom
train_test_splits.csv               wide: train_split,test_split (shorter column padded)
tissue/labels/<ID>.nii.gz           0 background, 1 vessels, 2 dense fibroglandular tissue
tissue/breast/<ID>.nii.gz           breast mask 0/1
```

IDs are `PHANTOM_001`, `PHANTOM_002`, ...; every {config.lowercase_every}th case uses lower-case
file and folder names, as some MAMA-MIA releases do. Images are int16 (some files carry
`scl_slope` = 2), anisotropic, with {orientations} affines written as both qform
and sform. Tumor voxels are not part of the tissue labels.

`primary_lesion.breast_coordinates` is the bounding box of the tumor-bearing breast (both breasts
for healthy cases), {BREAST_COORDINATES_CONVENTION}.

The JSON's `phantom` block records every tumor parameter, the site profile, the noise and bias
levels. Class codes of the phantom's full tissue map (kept in memory, `PhantomCase.class_map`):

| code | class |
|---|---|
{codes}

## Configuration

```json
{cfg}
```
{site_section}"""


def write_phantom(
    out_dir: Path,
    *,
    n: int,
    seed: int = 0,
    size: str = "small",
    healthy_fraction: float = 0.1,
    progress: ProgressFn | None = None,
    workers: int = 1,
    site: str = "A",
    test_fraction: float | None = None,
) -> list[str]:
    """Write ``n`` phantom cases into ``out_dir`` in MAMA-MIA's layout.

    Args:
        out_dir: target folder; created if missing. A folder holding a previous phantom is
            cleared first; any other non-empty folder is refused (``FileExistsError``).
        n: number of cases (>= 1); case ``i`` is ``PHANTOM_{{i+1:03d}}`` and its content
            depends only on ``(seed, i, size, healthy_fraction, site)``.
        seed: run seed (>= 0).
        size: preset name in :data:`PRESETS` (``tiny``, ``small``, ``default``).
        healthy_fraction: fraction of cases without a tumor, evenly spread over the indices.
        progress: called as ``progress(done, total, {})`` after each case (:data:`~synbt_factory.progress.ProgressFn`).
        workers: processes generating cases in parallel (each writes its own case's files).
        site: ``"A"`` (the training phantom) or ``"B"`` (the external test family: other anatomy,
            kinetics, tumors, noise, bias field, slices and stored orientations; documented in the
            README it writes).
        test_fraction: share of cases listed in ``test_split`` (evenly spread over the indices),
            in [0, 1); None keeps the preset's value (0.2).

    Returns:
        the case ids, in index order.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if site not in SITES:
        raise ValueError(f"site must be one of {list(SITES)}, got {site!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if test_fraction is not None and not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    config = dataclasses.replace(phantom_config(size, site), healthy_fraction=float(healthy_fraction))
    if test_fraction is not None:
        config = dataclasses.replace(config, test_fraction=float(test_fraction))
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    log.debug("writing %d %s site-%s phantom cases (seed %d) to %s", n, size, site, seed, out_dir)

    summaries: dict[int, dict[str, Any]] = {}
    if workers == 1 or n == 1:
        for i in range(n):
            summaries[i] = _make_and_write(str(out_dir), i, seed, config)
            report(progress, i + 1, n)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, n)) as pool:
            futures = {pool.submit(_make_and_write, str(out_dir), i, seed, config): i for i in range(n)}
            for done, fut in enumerate(as_completed(futures), start=1):
                summaries[futures[fut]] = fut.result()
                report(progress, done, n)

    ids = [case_id_for(i) for i in range(n)]
    test = [cid for i, cid in enumerate(ids) if is_test(i, seed, config.test_fraction)]
    train = [cid for cid in ids if cid not in set(test)]
    _write_splits(out_dir, train, test)
    ordered = [summaries[i] for i in range(n)]
    _atomic_write(
        out_dir / "README.md",
        _readme(
            config,
            n=n,
            seed=seed,
            size=size,
            healthy_fraction=healthy_fraction,
            test_fraction=test_fraction,
            summaries=ordered,
        ).encode(),
    )
    log.info("wrote %d cases (%d train, %d test) to %s", n, len(train), len(test), out_dir)
    return ids
