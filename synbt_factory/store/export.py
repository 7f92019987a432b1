"""``synbt store export``: NIfTI (MAMA-MIA layout), nnU-Net raw, HDF5.

Every file is written to a ``*.partial`` name and renamed, so an interrupted export never leaves a
half file that looks complete; a failing export removes its partial file, and a rerun removes the
ones a killed export left.

An export never overwrites, deletes or mixes files it did not write:

- Its folder (``out`` for nifti, ``out/DatasetXXX_Name`` for nnunet) must be new, empty, or hold an
  export of the same store, recognised by the marker :data:`EXPORT_MARKER`: the store's location,
  kind and card hash, the format, the files the export writes, and ``complete``. The marker is
  written before the first file with ``complete: false``, so an interrupted export is resumed by a
  rerun, and rewritten last with ``complete: true``. A rerun rewrites its own files and removes
  those of cases the store no longer has, so two versions never mix.
- ``into_nonempty`` allows a folder holding other files; a file the export would write that exists
  and was not written by an export of this store stops it, naming the file.
- The HDF5 file carries the marker as its ``synbt_export`` attribute; an existing file without it,
  or from another store, is refused.
- The output must not be, lie inside or contain the exported store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from synbt_factory import __version__
from synbt_factory.io import atomic_path
from synbt_factory.progress import ProgressFn, report
from synbt_factory.store.case_store import CaseStore
from synbt_factory.store.outputs import OutputError, check_output_vs_inputs

__all__ = ["EXPORT_MARKER", "ExportFormat", "export_store"]

log = logging.getLogger(__name__)

ExportFormat = Literal["nifti", "nnunet", "hdf5"]
#: Marker file of an export folder (and attribute name of an HDF5 export).
EXPORT_MARKER = "synbt_export.json"
_HDF5_MARKER_ATTR = "synbt_export"
_EXTRA_FILE = {"nifti": "train_test_splits.csv", "nnunet": "dataset.json"}
_CASE_FOLDERS = {"nifti": ("images", "segmentations"), "nnunet": ("imagesTr", "labelsTr")}

# (relative path, array name, image channel or None) of one exported file
_FilePlan = tuple[str, str, int | None]


def _partial_suffix(path: Path) -> str:
    """What is appended to ``path``'s name while it is written (NIfTI keeps its extension so nibabel picks the
    format)."""
    return ".partial.nii.gz" if path.name.endswith(".nii.gz") else ".partial"


def _partial(path: Path) -> Path:
    """The temporary name ``path`` is written under."""
    return path.with_name(path.name + _partial_suffix(path))


def _atomic(path: Path) -> contextlib.AbstractContextManager[Path]:
    """The temporary sibling to write (:func:`synbt_factory.io.atomic_path`): it replaces ``path`` on success and
    is removed on failure."""
    return atomic_path(path, suffix=_partial_suffix(path))


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=2)
    with _atomic(path) as tmp:
        nib.save(img, str(tmp))


def _write_text(path: Path, text: str) -> None:
    with _atomic(path) as tmp:
        tmp.write_text(text)


def _nnunet_folder(out: Path, dataset_id: int, name: str) -> Path:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"nnU-Net dataset id must be in 1..999, got {dataset_id}")
    safe = "".join(ch for ch in name if ch.isalnum() or ch in "_-") or "SynBT"
    return out / f"Dataset{dataset_id:03d}_{safe}"


def _identity(store: CaseStore) -> dict[str, Any]:
    """What names the exported store: its absolute location and kind (compared), its card hash (recorded)."""
    loc = store.location
    where = loc if "://" in loc else str(Path(loc).expanduser().resolve())
    card = json.dumps(store.attrs, sort_keys=True, default=str)
    return {"store": where, "store_kind": store.kind, "card_sha256": hashlib.sha256(card.encode()).hexdigest()}


def _same_export(marker: dict[str, Any] | None, identity: dict[str, Any], fmt: str) -> bool:
    return (
        marker is not None
        and marker.get("store") == identity["store"]
        and marker.get("store_kind") == identity["store_kind"]
        and marker.get("format") == fmt
    )


def _read_marker(root: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((root / EXPORT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "store" in doc else None


def _own_files(root: Path, marker: dict[str, Any], fmt: str) -> set[str]:
    """The files a previous export listed, keeping only paths of this layout inside ``root``."""
    files = marker.get("files")
    if not isinstance(files, list):
        return set()
    allowed_top = {*_CASE_FOLDERS[fmt], _EXTRA_FILE[fmt]}
    own = set()
    for rel in files:
        if not isinstance(rel, str):
            continue
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts or parts[0] not in allowed_top:
            continue
        own.add(rel)
    return own


def _occupied(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _claim_folder(root: Path, identity: dict[str, Any], fmt: str, planned: set[str], into_nonempty: bool) -> set[str]:
    """Check that writing ``planned`` into ``root`` overwrites nothing this store's exports did not write.

    Returns:
        The files a previous export of this store wrote there (rewritten or, if no longer planned, removed).

    Raises:
        OutputError: naming the folder or the first file in the way, and the fix.
    """
    store = identity["store"]
    if _occupied(root) and not root.is_dir():
        raise OutputError(f"{root} is a file; --format {fmt} writes a folder: choose another --out")
    marker = _read_marker(root) if root.is_dir() else None
    if marker is not None and not _same_export(marker, identity, fmt):
        raise OutputError(
            f"{root} holds a {marker.get('format')} export of another store ({marker.get('store')}); "
            f"exporting {store} there would mix their cases: choose another --out"
        )
    owned = _own_files(root, marker, fmt) if marker is not None else set()
    if marker is None and root.is_dir() and any(root.iterdir()) and not into_nonempty:
        raise OutputError(
            f"{root} is not empty and holds no export of {store} (no {EXPORT_MARKER}); choose an empty "
            "or new --out, or pass --into-nonempty to add the export next to what is there (existing "
            "files are never overwritten)"
        )
    conflicts = [EXPORT_MARKER] if marker is None and _occupied(root / EXPORT_MARKER) else []
    for rel in sorted(planned - owned):
        conflicts += [str(p.relative_to(root)) for p in (root / rel, _partial(root / rel)) if _occupied(p)]
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise OutputError(
            f"{root / conflicts[0]}{more} exists and was not written by an export of {store}; synbt "
            "does not overwrite it: move it or choose another --out"
        )
    return owned


def _write_marker(
    root: Path, identity: dict[str, Any], fmt: str, files: set[str], *, complete: bool, cases: int
) -> None:
    doc = {
        **identity,
        "format": fmt,
        "synbt_version": __version__,
        "cases": cases,
        "complete": complete,
        "files": sorted(files),
    }
    _write_text(root / EXPORT_MARKER, json.dumps(doc, indent=2) + "\n")


def _remove_own(root: Path, rels: set[str], *, partial_only: bool) -> int:
    """Remove files (or only their ``*.partial`` leftovers) that this store's exports wrote; empty folders go too."""
    removed = 0
    for rel in sorted(rels):
        target = root / rel
        path = _partial(target) if partial_only else target
        if _occupied(path):
            path.unlink()
            removed += 1
            parent = path.parent
            while parent != root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
    return removed


def _case_files(fmt: str, case_id: str, channels: int, has_synthetic: bool, *, test: bool = False) -> list[_FilePlan]:
    if fmt == "nnunet":
        # nnU-Net trains on every case of imagesTr: test cases go to imagesTs (their labels to labelsTs, for scoring)
        images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
        files: list[_FilePlan] = [(f"{images}/{case_id}_{ch:04d}.nii.gz", "image", ch) for ch in range(channels)]
        files.append((f"{labels}/{case_id}.nii.gz", "mask", None))
        return files
    files = [(f"images/{case_id}/{case_id}_{ch:04d}.nii.gz", "image", ch) for ch in range(channels)]
    files.append((f"segmentations/expert/{case_id}.nii.gz", "mask", None))
    if has_synthetic:
        files.append((f"segmentations/synthetic/{case_id}.nii.gz", "synthetic_mask", None))
    return files


def export_store(
    location: str | Path,
    out: Path,
    *,
    fmt: ExportFormat,
    dataset_id: int = 501,
    dataset_name: str = "SynBT",
    into_nonempty: bool = False,
    progress: ProgressFn | None = None,
) -> Path:
    """Export every complete case; returns the written folder or file.

    - ``nifti``: ``out/images/<ID>/<ID>_0000.nii.gz`` (pre), ``_0001`` (post),
      ``out/segmentations/expert/<ID>.nii.gz`` (and ``segmentations/synthetic/`` when present):
      the MAMA-MIA layout, so ``synbt data prepare`` reads it back.
    - ``nnunet``: ``out/DatasetXXX_Name/{imagesTr,labelsTr,dataset.json}`` (nnU-Net v2 raw); cases of the
      ``test`` split go to ``imagesTs`` / ``labelsTs``.
    - ``hdf5``: one file ``out`` (``.h5``) with ``/cases/<ID>/{image,mask,...}``, written by one writer to a
      temporary file and renamed.

    Args:
        into_nonempty: write into a folder that holds other files (never overwriting any of them).

    Raises:
        OutputError: the output touches the store, holds another store's export, is a non-empty folder
            (without ``into_nonempty``), or a file in the way was not written by an export of this store.
        StoreError: the store cannot be read.
    """
    if fmt not in ("nifti", "nnunet", "hdf5"):
        raise ValueError(f"format must be nifti, nnunet or hdf5, got {fmt!r}")
    store = CaseStore.open(location)
    case_ids = store.case_ids()
    out = Path(out)
    identity = _identity(store)
    if fmt == "hdf5":
        check_output_vs_inputs(out, [store.location])
        return _export_hdf5(store, case_ids, out, identity, progress)
    root = _nnunet_folder(out, dataset_id, dataset_name) if fmt == "nnunet" else out
    check_output_vs_inputs(root, [store.location])
    plans = {}
    splits = {case_id: store.case_attrs(case_id).get("split") for case_id in case_ids}
    for case_id in case_ids:
        has_synthetic = fmt == "nifti" and "synthetic_mask" in store.array_names(case_id)
        plans[case_id] = _case_files(
            fmt,
            case_id,
            int(store.open_array(case_id, "image").shape[0]),
            has_synthetic,
            test=splits[case_id] == "test",
        )
    planned = {rel for files in plans.values() for rel, _, _ in files} | {_EXTRA_FILE[fmt]}
    owned = _claim_folder(root, identity, fmt, planned, into_nonempty)
    if _remove_own(root, planned | owned, partial_only=True):
        log.info("removed the partial files an interrupted export left in %s", root)
    _write_marker(root, identity, fmt, planned | owned, complete=False, cases=len(case_ids))
    for i, case_id in enumerate(case_ids):
        files = plans[case_id]
        arrays, attrs = store.read_case(case_id, sorted({name for _, name, _ in files}))
        affine = np.asarray(attrs["affine"], dtype=np.float64)
        for rel, name, channel in files:
            data = arrays[name][channel].astype(np.float32) if channel is not None else arrays[name].astype(np.uint8)
            _save_nifti(root / rel, data, affine)
        report(progress, i + 1, len(case_ids))
    if fmt == "nnunet":
        dataset_json = {
            "channel_names": {"0": "pre_contrast", "1": "post_contrast"},
            "labels": {"background": 0, "tumor": 1},
            "numTraining": sum(splits[c] != "test" for c in case_ids),
            "file_ending": ".nii.gz",
            "name": dataset_name,
            "description": "Exported from a synbt store; synthetic cases carry synthetic tumors.",
            "synthetic": store.attrs.get("synthetic", False),
        }
        _write_text(root / "dataset.json", json.dumps(dataset_json, indent=2))
    else:
        lines = ["train_split,test_split"]
        for case_id in case_ids:
            lines.append(f"{case_id}," if splits[case_id] != "test" else f",{case_id}")
        _write_text(root / "train_test_splits.csv", "\n".join(lines) + "\n")
    stale = _remove_own(root, owned - planned, partial_only=False)
    if stale:
        log.info(
            "removed %d file(s) of cases %s no longer has from its previous export in %s",
            stale,
            identity["store"],
            root,
        )
    _write_marker(root, identity, fmt, planned, complete=True, cases=len(case_ids))
    return root


def _hdf5_marker(path: Path) -> dict[str, Any] | None:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            doc = json.loads(h5.attrs[_HDF5_MARKER_ATTR])
    except Exception:  # not HDF5, no marker attribute, or not JSON: not an export of synbt
        return None
    return doc if isinstance(doc, dict) else None


def _export_hdf5(
    store: CaseStore, case_ids: list[str], out: Path, identity: dict[str, Any], progress: ProgressFn | None
) -> Path:
    import h5py

    if out.is_dir():
        raise OutputError(
            f"{out} is a folder; --format hdf5 writes one file: give a file path such as {out / 'export.h5'}"
        )
    if _occupied(out) and not _same_export(_hdf5_marker(out), identity, "hdf5"):
        raise OutputError(
            f"{out} exists and is not an HDF5 export of {identity['store']}; synbt does not overwrite "
            "it: choose another --out"
        )
    if _occupied(_partial(out)):
        _partial(out).unlink()
        log.info("removed the partial file an interrupted export left: %s", _partial(out))
    marker = {**identity, "format": "hdf5", "synbt_version": __version__, "cases": len(case_ids), "complete": True}
    with _atomic(out) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["card"] = json.dumps({k: v for k, v in store.attrs.items() if k != "case_ids"})
        h5.attrs[_HDF5_MARKER_ATTR] = json.dumps(marker)
        cases = h5.create_group("cases")
        for i, case_id in enumerate(case_ids):
            group = cases.create_group(case_id)
            for name in store.array_names(case_id):
                data = store.read_array(case_id, name)
                chunks = tuple(min(64, s) for s in data.shape)
                group.create_dataset(name, data=data, chunks=chunks, compression="gzip", compression_opts=4)
            group.attrs["attrs"] = json.dumps(store.case_attrs(case_id))
            report(progress, i + 1, len(case_ids))
        h5.flush()
    return out
