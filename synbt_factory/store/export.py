"""``synbt store export``: NIfTI (MAMA-MIA layout), nnU-Net raw, HDF5.

Every format is written so that an interrupted export never leaves a half file that looks
complete: NIfTI files and the HDF5 file are written to ``*.partial`` names and renamed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np

from synbt_factory.progress import ProgressFn, report
from synbt_factory.store.case_store import CaseStore

__all__ = ["export_store", "ExportFormat"]

log = logging.getLogger(__name__)

ExportFormat = Literal["nifti", "nnunet", "hdf5"]


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.nii.gz")
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=2)
    nib.save(img, str(tmp))
    os.replace(tmp, path)


def _nnunet_folder(out: Path, dataset_id: int, name: str) -> Path:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"nnU-Net dataset id must be in 1..999, got {dataset_id}")
    safe = "".join(ch for ch in name if ch.isalnum() or ch in "_-") or "SynBT"
    return out / f"Dataset{dataset_id:03d}_{safe}"


def export_store(
    location: str | Path,
    out: Path,
    *,
    fmt: ExportFormat,
    dataset_id: int = 501,
    dataset_name: str = "SynBT",
    progress: ProgressFn | None = None,
) -> Path:
    """Export every complete case; returns the written folder or file.

    - ``nifti``: ``out/images/<ID>/<ID>_0000.nii.gz`` (pre), ``_0001`` (post),
      ``out/segmentations/expert/<ID>.nii.gz`` (and ``segmentations/synthetic/`` when present):
      the MAMA-MIA layout, so ``synbt data prepare`` reads it back.
    - ``nnunet``: ``out/DatasetXXX_Name/{imagesTr,labelsTr,dataset.json}`` (nnU-Net v2 raw).
    - ``hdf5``: one file ``out`` (``.h5``) with ``/cases/<ID>/{image,mask,...}``, written by one writer to a
      temporary file and renamed.
    """
    store = CaseStore.open(location)
    case_ids = store.case_ids()
    out = Path(out)
    if fmt == "hdf5":
        return _export_hdf5(store, case_ids, out, progress)
    if fmt == "nnunet":
        root = _nnunet_folder(out, dataset_id, dataset_name)
    elif fmt == "nifti":
        root = out
    else:
        raise ValueError(f"format must be nifti, nnunet or hdf5, got {fmt!r}")
    for i, case_id in enumerate(case_ids):
        names = [n for n in ("image", "mask", "synthetic_mask") if n in store.array_names(case_id)]
        arrays, attrs = store.read_case(case_id, names)
        affine = np.asarray(attrs["affine"], dtype=np.float64)
        image = arrays["image"].astype(np.float32)
        if fmt == "nnunet":
            for ch in range(image.shape[0]):
                _save_nifti(root / "imagesTr" / f"{case_id}_{ch:04d}.nii.gz", image[ch], affine)
            _save_nifti(root / "labelsTr" / f"{case_id}.nii.gz", arrays["mask"].astype(np.uint8), affine)
        else:
            for ch in range(image.shape[0]):
                _save_nifti(root / "images" / case_id / f"{case_id}_{ch:04d}.nii.gz", image[ch], affine)
            _save_nifti(root / "segmentations" / "expert" / f"{case_id}.nii.gz", arrays["mask"].astype(np.uint8), affine)
            if "synthetic_mask" in arrays:
                _save_nifti(root / "segmentations" / "synthetic" / f"{case_id}.nii.gz",
                            arrays["synthetic_mask"].astype(np.uint8), affine)
        report(progress, i + 1, len(case_ids))
    if fmt == "nnunet":
        dataset_json = {
            "channel_names": {"0": "pre_contrast", "1": "post_contrast"},
            "labels": {"background": 0, "tumor": 1},
            "numTraining": len(case_ids),
            "file_ending": ".nii.gz",
            "name": dataset_name,
            "description": "Exported from a synbt store; synthetic cases carry synthetic tumors.",
            "synthetic": store.attrs.get("synthetic", False),
        }
        (root / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    elif fmt == "nifti":
        with open(root / "train_test_splits.csv", "w") as fh:
            fh.write("train_split,test_split\n")
            for case_id in case_ids:
                split = store.case_attrs(case_id).get("split")
                fh.write(f"{case_id}," if split != "test" else f",{case_id}")
                fh.write("\n")
    return root


def _export_hdf5(store: CaseStore, case_ids: list[str], out: Path, progress: ProgressFn | None) -> Path:
    import h5py

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with h5py.File(tmp, "w") as h5:
        h5.attrs["card"] = json.dumps({k: v for k, v in store.attrs.items() if k != "case_ids"})
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
    os.replace(tmp, out)
    return out
