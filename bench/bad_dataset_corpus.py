"""Bad-input corpus: one damaged case (next to an intact one) per defect, through the real CLI.

For each defect a two-case tiny phantom is copied, one file is damaged, and the commands a user
runs are started as subprocesses::

    python -m cli.main data check DIR
    python -m cli.main data prepare DIR --out DIR.zarr --fov 32 32 32

``check`` is classified as ``clear error`` / ``error, cause not named`` / ``traceback`` /
``silently passed`` (for defects that must be errors), or ``passed`` / ``passed, warned`` /
``rejected`` (for defects that are warnings or harmless). ``prepare`` is classified as
``refused, cause named`` / ``refused, cause hidden`` / ``traceback`` / ``silently written``, or
``written`` (warnings, harmless). The damaged case is looked up in the output store, so a case
written despite an error is counted whatever the exit status says.

    python -m bench.bad_dataset_corpus [--repo DIR] [--baseline RESULT.json] [--only NAME ...]

``--repo`` runs another checkout's CLI (``PYTHONPATH=DIR``), e.g. a ``git worktree`` of the code
before a change; ``--baseline`` embeds the totals and outcomes of such an earlier run.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

from bench.common import save_result

CASE = "PHANTOM_002"  # the damaged case
INTACT = "PHANTOM_001"
FOV = ("32", "32", "32")

Expect = Literal["error", "warning", "ok"]


@dataclass(frozen=True)
class Defect:
    """One kind of damage: ``damage(ds)`` edits the dataset copy; ``names`` must appear in the message."""

    name: str
    expect: Expect
    description: str
    damage: Callable[[Path], None]
    names: str
    dataset_level: bool = False
    needs_no_dac: bool = False  # run without root's permission override (permission tests)


def _phase(ds: Path, k: int, case: str = CASE) -> Path:
    return ds / "images" / case / f"{case}_{k:04d}.nii.gz"


def _mask(ds: Path, case: str = CASE) -> Path:
    return ds / "segmentations" / "expert" / f"{case}.nii.gz"


def _write(path: Path, data: np.ndarray, affine: np.ndarray, *, slope: float | None = None) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def _edit(path: Path, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    data, affine = _load(path)
    _write(path, fn(data.copy()).astype(np.float32), affine)


def _reaffine(path: Path, fn: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]) -> None:
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    _write(path, data, fn(np.asarray(img.affine, dtype=np.float64).copy(), data.shape))


def _header_field(path: Path, edit: Callable[[nib.Nifti1Header], None]) -> None:
    """Change raw header fields, bypassing nibabel's fixes (a loaded image would be re-validated)."""
    raw = gzip.decompress(path.read_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    edit(header)
    path.write_bytes(gzip.compress(header.binaryblock + raw[348:]))


def _set_pixdim(index: int, value: float) -> Callable[[nib.Nifti1Header], None]:
    def edit(h: nib.Nifti1Header) -> None:
        pixdim = np.array(h["pixdim"])
        pixdim[index] = value
        h["pixdim"] = pixdim
        h["sform_code"] = 0  # the affine then comes from the qform, i.e. from pixdim

    return edit


def _shift(mm: float, axis: int = 0) -> Callable[[np.ndarray, tuple[int, ...]], np.ndarray]:
    def fn(aff: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        aff[axis, 3] += mm
        return aff

    return fn


def _lr_flip(aff: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Same voxels, first voxel axis reversed: the mask lands mirrored left–right in world space."""
    flipped = aff.copy()
    flipped[:3, 0] = -aff[:3, 0]
    flipped[:3, 3] = aff[:3, 3] + aff[:3, 0] * (shape[0] - 1)
    return flipped


def _splits(ds: Path, train: list[str], test: list[str]) -> None:
    n = max(len(train), len(test))
    with open(ds / "train_test_splits.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["train_split", "test_split"])
        for i in range(n):
            w.writerow([train[i] if i < len(train) else "", test[i] if i < len(test) else ""])


def _rename_case(ds: Path, new: str) -> None:
    folder = ds / "images" / CASE
    for f in folder.iterdir():
        f.rename(folder / f.name.replace(CASE, new))
    folder.rename(ds / "images" / new)
    for sub in ("segmentations/expert", "segmentations/automatic", "tissue/labels", "tissue/breast"):
        p = ds / sub / f"{CASE}.nii.gz"
        if p.exists():
            p.rename(ds / sub / f"{new}.nii.gz")


def _4d(path: Path) -> None:
    data, affine = _load(path)
    _write(path, np.stack([data, data * 1.1], axis=-1), affine)


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _nan_voxels(data: np.ndarray) -> np.ndarray:
    data[10:14, 10:14, 5:14] = np.nan
    return data


def _singular_sform(h: nib.Nifti1Header) -> None:
    """A zero third voxel axis in the sform, no qform (nibabel refuses to build such an image)."""
    h["srow_z"] = np.array([0.0, 0.0, 0.0, float(h["srow_z"][3])], np.float32)
    h["qform_code"] = 0
    h["sform_code"] = 1


def _header_only(path: Path) -> None:
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:352]))


def _wrong_magic(path: Path) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[344:348] = b"xyz\x00"
    path.write_bytes(gzip.compress(bytes(raw)))


def _symlink_loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)


def _dangling(path: Path) -> None:
    path.unlink()
    path.symlink_to("does_not_exist.nii.gz")


def _dir_named_nifti(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_text("not an image\n")


def _duplicate_nii(path: Path) -> None:
    (path.parent / path.name.replace(".nii.gz", ".nii")).write_bytes(gzip.decompress(path.read_bytes()))


def _mask_shape(path: Path) -> None:
    data, affine = _load(path)
    _write(path, data[:, :, :-1].astype(np.uint8), affine)


def _mask_values(path: Path) -> None:
    data, affine = _load(path)
    out = data.astype(np.uint8) * 2
    out[np.nonzero(data)[0][:5], np.nonzero(data)[1][:5], np.nonzero(data)[2][:5]] = 255
    _write(path, out, affine)


def _int16_slope(path: Path) -> None:
    data, affine = _load(path)
    _write(path, np.rint(data / 0.25).astype(np.int16), affine, slope=0.25)


def _tissue_shape(ds: Path) -> None:
    p = ds / "tissue" / "labels" / f"{CASE}.nii.gz"
    data, affine = _load(p)
    _write(p, data[:-2].astype(np.uint8), affine)


def _splits_bom(ds: Path) -> None:
    p = ds / "train_test_splits.csv"
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())


def _splits_nul(ds: Path) -> None:
    p = ds / "train_test_splits.csv"
    p.write_bytes(p.read_bytes() + b"PHANTOM_0\x0003,\n")


def _splits_latin1(ds: Path) -> None:
    p = ds / "train_test_splits.csv"
    p.write_bytes(p.read_bytes() + "Patient_é,\n".encode("latin-1"))


def _chmod0(path: Path) -> None:
    path.chmod(0)


DEFECTS: list[Defect] = [
    # voxel values
    Defect(
        "nan_post",
        "error",
        "NaN voxels in the first post-contrast phase",
        lambda ds: _edit(_phase(ds, 1), _nan_voxels),
        f"{CASE}_0001",
    ),
    Defect(
        "all_nan_post",
        "error",
        "second post-contrast phase is all NaN",
        lambda ds: _edit(_phase(ds, 2), lambda d: np.full_like(d, np.nan)),
        f"{CASE}_0002",
    ),
    Defect(
        "inf_pre",
        "error",
        "+Inf voxels in the pre-contrast phase",
        lambda ds: _edit(_phase(ds, 0), lambda d: np.where(d > np.percentile(d, 99.9), np.inf, d)),
        f"{CASE}_0000",
    ),
    Defect(
        "pre_all_zero",
        "error",
        "pre-contrast phase all zero",
        lambda ds: _edit(_phase(ds, 0), np.zeros_like),
        f"{CASE}_0000",
    ),
    Defect(
        "pre_constant",
        "error",
        "pre-contrast phase constant 100",
        lambda ds: _edit(_phase(ds, 0), lambda d: np.full_like(d, 100.0)),
        f"{CASE}_0000",
    ),
    Defect(
        "mask_nan", "error", "NaN voxels in the expert mask", lambda ds: _edit(_mask(ds), _nan_voxels), f"{CASE}.nii.gz"
    ),
    # geometry
    Defect(
        "mask_lr_flipped_affine",
        "error",
        "mask affine L/R-flipped (same voxels)",
        lambda ds: _reaffine(_mask(ds), _lr_flip),
        f"{CASE}.nii.gz",
    ),
    Defect(
        "mask_shift_15mm",
        "error",
        "mask affine shifted 15 mm",
        lambda ds: _reaffine(_mask(ds), _shift(15.0)),
        f"{CASE}.nii.gz",
    ),
    Defect(
        "phase_shift_7mm",
        "error",
        "first post-contrast affine shifted 7 mm",
        lambda ds: _reaffine(_phase(ds, 1), _shift(7.0, axis=2)),
        f"{CASE}_0001",
    ),
    Defect(
        "mask_shape_mismatch",
        "error",
        "mask one slice shorter than the image",
        lambda ds: _mask_shape(_mask(ds)),
        f"{CASE}.nii.gz",
    ),
    Defect(
        "tissue_shape_mismatch",
        "error",
        "tissue labels on another grid than the image",
        _tissue_shape,
        f"{CASE}.nii.gz",
    ),
    Defect(
        "image_4d",
        "error",
        "post-contrast phase is a 4D series of 2 volumes",
        lambda ds: _4d(_phase(ds, 1)),
        f"{CASE}_0001",
    ),
    Defect(
        "pixdim_zero",
        "error",
        "pixdim[1] = 0 (affine from the qform)",
        lambda ds: _header_field(_phase(ds, 0), _set_pixdim(1, 0.0)),
        f"{CASE}_0000",
    ),
    Defect(
        "pixdim_zero_all_files",
        "error",
        "pixdim[1] = 0 in every NIfTI file of the case (qform affines)",
        lambda ds: [_header_field(p, _set_pixdim(1, 0.0)) for p in sorted(ds.rglob(f"{CASE}*.nii.gz"))],
        f"{CASE}_0000",
    ),
    Defect(
        "pixdim_negative",
        "error",
        "pixdim[2] = -1.2 (affine from the qform)",
        lambda ds: _header_field(_phase(ds, 1), _set_pixdim(2, -1.2)),
        f"{CASE}_0001",
    ),
    Defect(
        "pixdim_nan",
        "error",
        "pixdim[3] = NaN (affine from the qform)",
        lambda ds: _header_field(_mask(ds), _set_pixdim(3, float("nan"))),
        f"{CASE}.nii.gz",
    ),
    Defect(
        "singular_affine",
        "error",
        "sform with a zero column, no qform",
        lambda ds: _header_field(_phase(ds, 1), _singular_sform),
        f"{CASE}_0001",
    ),
    # phases and files
    Defect("phase_gap", "error", "_0001 deleted: phases 0, 2", lambda ds: _phase(ds, 1).unlink(), "_0001"),
    Defect(
        "symlink_loop_phase",
        "error",
        "_0001 is a link to itself",
        lambda ds: _symlink_loop(_phase(ds, 1)),
        f"{CASE}_0001",
    ),
    Defect(
        "dangling_symlink_phase",
        "error",
        "_0001 is a link to a missing file",
        lambda ds: _dangling(_phase(ds, 1)),
        f"{CASE}_0001",
    ),
    Defect(
        "dir_named_like_nifti",
        "error",
        "_0001.nii.gz is a folder",
        lambda ds: _dir_named_nifti(_phase(ds, 1)),
        f"{CASE}_0001",
    ),
    Defect(
        "duplicate_phase_nii_and_gz",
        "error",
        "_0001.nii next to _0001.nii.gz",
        lambda ds: _duplicate_nii(_phase(ds, 1)),
        CASE,
    ),
    Defect("missing_pre", "error", "_0000 deleted", lambda ds: _phase(ds, 0).unlink(), "_0000"),
    Defect(
        "missing_post",
        "error",
        "every post-contrast phase deleted",
        lambda ds: [p.unlink() for p in sorted((ds / "images" / CASE).glob(f"{CASE}_000[1-9].nii.gz"))],
        CASE,
    ),
    Defect("missing_mask", "error", "expert mask deleted", lambda ds: _mask(ds).unlink(), f"{CASE}.nii.gz"),
    Defect(
        "truncated_gz",
        "error",
        "first post-contrast .nii.gz cut in half",
        lambda ds: _truncate(_phase(ds, 1)),
        f"{CASE}_0001",
    ),
    Defect(
        "zero_byte",
        "error",
        "first post-contrast file is empty",
        lambda ds: _phase(ds, 1).write_bytes(b""),
        f"{CASE}_0001",
    ),
    Defect(
        "not_gzip",
        "error",
        "a text file named .nii.gz",
        lambda ds: _phase(ds, 1).write_text("this is not a NIfTI file\n"),
        f"{CASE}_0001",
    ),
    Defect(
        "header_only",
        "error",
        "gzip of the 352-byte header only",
        lambda ds: _header_only(_phase(ds, 1)),
        f"{CASE}_0001",
    ),
    Defect(
        "wrong_magic", "error", "NIfTI magic bytes overwritten", lambda ds: _wrong_magic(_phase(ds, 1)), f"{CASE}_0001"
    ),
    Defect(
        "mask_truncated", "error", "expert mask .nii.gz cut in half", lambda ds: _truncate(_mask(ds)), f"{CASE}.nii.gz"
    ),
    Defect(
        "permission_denied",
        "error",
        "first post-contrast file mode 000 (run without DAC override)",
        lambda ds: _chmod0(_phase(ds, 1)),
        f"{CASE}_0001",
        needs_no_dac=True,
    ),
    Defect(
        "unsafe_case_folder",
        "error",
        "case folder and files renamed 'PHANTOM 002'",
        lambda ds: _rename_case(ds, "PHANTOM 002"),
        "PHANTOM 002",
    ),
    # the splits file and patient info
    Defect(
        "splits_leakage",
        "error",
        "case listed in train and in test",
        lambda ds: _splits(ds, [INTACT, CASE], [CASE]),
        CASE,
    ),
    Defect(
        "splits_nul_byte",
        "error",
        "NUL byte in train_test_splits.csv",
        _splits_nul,
        "train_test_splits.csv",
        dataset_level=True,
    ),
    Defect(
        "splits_not_utf8",
        "error",
        "Latin-1 byte in train_test_splits.csv",
        _splits_latin1,
        "train_test_splits.csv",
        dataset_level=True,
    ),
    Defect(
        "splits_unknown_case",
        "warning",
        "splits list a case with no images",
        lambda ds: _splits(ds, [INTACT, CASE, "PHANTOM_999"], []),
        "PHANTOM_999",
        dataset_level=True,
    ),
    Defect(
        "patient_info_list",
        "warning",
        "patient info JSON is a list",
        lambda ds: (ds / "patient_info_files" / f"{CASE.lower()}.json").write_text("[1, 2, 3]\n"),
        f"{CASE.lower()}.json",
    ),
    Defect(
        "patient_info_invalid_json",
        "warning",
        "patient info JSON cut short",
        lambda ds: (ds / "patient_info_files" / f"{CASE.lower()}.json").write_text('{"patient_id": '),
        f"{CASE.lower()}.json",
    ),
    # tolerated, but must be handled right
    Defect(
        "mask_values_0_2_255", "warning", "mask values 0/2/255", lambda ds: _mask_values(_mask(ds)), f"{CASE}.nii.gz"
    ),
    Defect(
        "empty_mask", "warning", "expert mask all zero", lambda ds: _edit(_mask(ds), np.zeros_like), f"{CASE}.nii.gz"
    ),
    Defect(
        "stray_nifti_name",
        "warning",
        "an extra NIfTI file not named <ID>_NNNN",
        lambda ds: shutil.copy(_phase(ds, 1), ds / "images" / CASE / f"{CASE}_extra.nii.gz"),
        f"{CASE}_extra",
    ),
    Defect(
        "junk_non_nifti",
        "ok",
        "a non-NIfTI junk file in the case folder",
        lambda ds: (ds / "images" / CASE / "notes.txt").write_bytes(os.urandom(64)),
        "",
    ),
    Defect(
        "int16_scl_slope",
        "ok",
        "post-contrast phase as int16 with scl_slope 0.25",
        lambda ds: _int16_slope(_phase(ds, 1)),
        "",
    ),
    Defect("splits_utf8_bom", "ok", "splits file with a UTF-8 byte-order mark", _splits_bom, ""),
]

_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|Traceback")


def _run(cmd: list[str], env: dict[str, str], cwd: Path, no_dac: bool) -> tuple[int, str]:
    if no_dac and os.geteuid() == 0 and shutil.which("setpriv"):
        cmd = [
            "setpriv",
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
            *cmd,
        ]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def _message(output: str, names: str) -> str:
    """The line a user reads: the traceback's last line, else the first problem line naming ``names``."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if not lines:
        return ""
    if _TRACEBACK.search(output):
        return lines[-1][:400]
    problems = [ln for ln in lines if ln.startswith(("error", "failed", "warning"))]
    for ln in problems:
        if names and names in ln:
            return ln[:400]
    if problems:
        return problems[0][:400]
    summary = [ln for ln in lines if ln.startswith(("prepared ", f"{2} cases", "1 cases"))]
    return (summary or lines)[-1][:400]


def _classify_check(defect: Defect, rc: int, output: str) -> str:
    if _TRACEBACK.search(output):
        return "traceback"
    if defect.expect == "error":
        if rc == 0:
            return "silently passed"
        named = defect.names in output and "error" in output
        return "clear error" if named else "error, cause not named"
    if rc != 0:
        return "rejected"
    return "passed, warned" if defect.names and defect.names in output and "warning" in output else "passed"


def _stored(out: Path) -> set[str]:
    if not out.exists():
        return set()
    from synbt_factory.store import CaseStore

    try:
        return set(CaseStore.open(out).case_ids())
    except Exception:
        return set()


def _classify_prepare(defect: Defect, rc: int, output: str, stored: set[str]) -> str:
    damaged_written = any(c.upper() in {CASE, "PHANTOM 002"} for c in stored)
    if _TRACEBACK.search(output):
        return "traceback"
    if defect.expect == "error":
        if damaged_written:
            return "silently written"
        if rc == 0:
            return "silently skipped"
        hidden = defect.names not in output or "applying transform" in output
        return "refused, cause hidden" if hidden else "refused, cause named"
    if damaged_written and rc == 0:
        return "written"
    return "refused"


def _verify_store(defect: Defect, out: Path) -> str | None:
    """Extra content checks for harmless defects: the values a user expects in the store."""
    if defect.name != "splits_utf8_bom" or not out.exists():
        return None
    from synbt_factory.store import CaseStore

    split = CaseStore.open(out).case_attrs(CASE).get("split")
    return None if split == "train" else f"stored split is {split!r}, expected 'train'"


def main() -> None:
    from synbt_factory.phantom import write_phantom

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--repo", type=Path, default=None, help="Checkout whose CLI runs (PYTHONPATH); default: the installed one."
    )
    parser.add_argument("--baseline", type=Path, default=None, help="Result JSON of an earlier run to embed.")
    parser.add_argument("--only", nargs="*", default=None, help="Run only these defects.")
    parser.add_argument("--name", default="bad_dataset_corpus", help="Result name (bench/results/<name>.json).")
    args = parser.parse_args()
    env = dict(os.environ, COLUMNS="400", NO_COLOR="1", TERM="dumb")
    if args.repo is not None:
        env["PYTHONPATH"] = str(args.repo.resolve())
    defects = [d for d in DEFECTS if args.only is None or d.name in args.only]
    work = Path(tempfile.mkdtemp(prefix="synbt-bad-corpus-"))
    rows = []
    try:
        cli_file = subprocess.run(
            [sys.executable, "-c", "import cli; print(cli.__file__)"], cwd=work, env=env, capture_output=True, text=True
        ).stdout.strip()
        base = work / "base"
        write_phantom(base, n=2, seed=0, size="tiny", healthy_fraction=0.0)
        for defect in defects:
            t0 = time.perf_counter()
            folder = work / defect.name
            ds = folder / "ds"
            shutil.copytree(base, ds, symlinks=True)
            try:
                defect.damage(ds)
            except Exception as exc:  # a corpus bug must not hide the other defects
                rows.append({"defect": defect.name, "error": f"damage failed: {type(exc).__name__}: {exc}"})
                print(f"{defect.name:28s} damage failed: {exc}", flush=True)
                continue
            rc_c, out_c = _run(
                [sys.executable, "-m", "cli.main", "data", "check", str(ds)], env, folder, defect.needs_no_dac
            )
            out = folder / "prepared.zarr"
            rc_p, out_p = _run(
                [
                    sys.executable,
                    "-m",
                    "cli.main",
                    "data",
                    "prepare",
                    str(ds),
                    "--out",
                    str(out),
                    "--fov",
                    *FOV,
                    "--workers",
                    "1",
                ],
                env,
                folder,
                defect.needs_no_dac,
            )
            stored = _stored(out)
            row = {
                "defect": defect.name,
                "description": defect.description,
                "expected": defect.expect,
                "check": _classify_check(defect, rc_c, out_c),
                "check_exit": rc_c,
                "check_message": _message(out_c, defect.names),
                "prepare": _classify_prepare(defect, rc_p, out_p, stored),
                "prepare_exit": rc_p,
                "prepare_message": _message(out_p, defect.names),
                "intact_case_written": INTACT in stored,
                "seconds": round(time.perf_counter() - t0, 2),
            }
            problem = _verify_store(defect, out)
            if problem:
                row["prepare"] = "written wrong"
                row["prepare_message"] = problem
            rows.append(row)
            print(
                f"{defect.name:28s} check: {row['check']:24s} prepare: {row['prepare']:22s} "
                f"{row['prepare_message'][:90]}",
                flush=True,
            )
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    broken = [r for r in rows if "error" in r]
    rows = [r for r in rows if "error" not in r]
    errors = [r for r in rows if r["expected"] == "error"]
    totals = {
        "defects": len(rows),
        "expected_errors": len(errors),
        "expected_warnings_or_harmless": len(rows) - len(errors),
        "check": dict(Counter(r["check"] for r in rows)),
        "prepare": dict(Counter(r["prepare"] for r in rows)),
        "tracebacks": sum(r["check"] == "traceback" for r in rows) + sum(r["prepare"] == "traceback" for r in rows),
        "check_silently_passed_errors": sum(r["check"] == "silently passed" for r in errors),
        "prepare_silently_written": sum(r["prepare"] in ("silently written", "written wrong") for r in rows),
        "prepare_cause_hidden": sum(r["prepare"] == "refused, cause hidden" for r in rows),
        "intact_case_not_written": sum(not r["intact_case_written"] for r in rows),
        "damage_failed": [r["defect"] for r in broken],
    }
    figures: dict[str, object] = {"cli": cli_file, "fov": list(FOV), "totals": totals, "defects": rows}
    if args.baseline is not None:
        base_payload = json.loads(args.baseline.read_text())
        figures["baseline"] = {
            "cli": base_payload["figures"].get("cli"),
            "command": base_payload.get("command"),
            "totals": base_payload["figures"]["totals"],
            "outcomes": {
                r["defect"]: {
                    "check": r["check"],
                    "prepare": r["prepare"],
                    "check_message": r["check_message"],
                    "prepare_message": r["prepare_message"],
                }
                for r in base_payload["figures"]["defects"]
            },
        }
    command = (
        "python -m bench.bad_dataset_corpus"
        + (f" --repo {args.repo}" if args.repo else "")
        + (f" --baseline {args.baseline}" if args.baseline else "")
    )
    save_result(args.name, figures, command=command)


if __name__ == "__main__":
    main()
