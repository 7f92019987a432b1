"""Training data of the tissue model: label maps and endless batches of images synthesised from them.

Label maps (tissue 0/1/2 + breast mask) are read from a prepared store's ``tissue``/``breast``
arrays or from NIfTI files ``<dir>/tissue/labels/<ID>.nii.gz`` and ``<dir>/tissue/breast/<ID>.nii.gz``
(resampled to 1 mm RAS, nearest) by :func:`load_label_cases`. :class:`TissueBatches` draws patches
and turns each into a new random-contrast pre/post image (:mod:`synbt_factory.tissue.synth`): the real
images are never needed for training (when present they only shape the k-means clusters outside the
breast, the paper's recipe; their intensities never reach the network).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synbt_factory.rng import case_generator
from synbt_factory.store import CaseStore
from synbt_factory.tissue.config import TissueTrainConfig
from synbt_factory.tissue.synth import synthesize_tissue_image

__all__ = ["LabelCase", "load_label_cases", "TissueBatches"]


@dataclass(eq=False)
class LabelCase:
    """One label map: tissue (X, Y, Z) uint8 0/1/2, breast (X, Y, Z) uint8, optional real image
    (2, X, Y, Z) float32 (used only to shape k-means clusters, or for validation)."""

    case_id: str
    tissue: np.ndarray
    breast: np.ndarray
    image: np.ndarray | None = None
    split: str | None = None
    dataset: str | None = None


def _load_nifti_labels(path: Path) -> np.ndarray:
    from monai.transforms import Compose, LoadImage, Orientation, Spacing

    load = Compose(
        [
            LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True, dtype=np.float32),
            Orientation(axcodes="RAS"),
            Spacing(pixdim=(1.0, 1.0, 1.0), mode="nearest", padding_mode="zeros", dtype=np.float32),
        ]
    )
    return np.rint(np.asarray(load(str(path))[0])).astype(np.uint8)


def load_label_cases(
    source: str | Path,
    *,
    with_images: bool = True,
    splits: Sequence[str | None] | None = None,
) -> list[LabelCase]:
    """Label maps of a prepared store (cases with ``tissue`` and ``breast``) or a MAMA-MIA-layout folder.

    Args:
        source: prepared Zarr store, or a dataset folder with ``tissue/labels`` and ``tissue/breast``.
        with_images: also read the real images (prepared stores only).
        splits: keep only cases whose split is listed (None: all).

    Raises:
        FileNotFoundError / ValueError: naming the source when it holds no label maps.
    """
    src = Path(str(source))
    cases: list[LabelCase] = []
    is_store = (src / "zarr.json").is_file() or "://" in str(source)
    if is_store:
        store = CaseStore.open(source)
        for case_id in store.case_ids():
            names = store.array_names(case_id)
            if "tissue" not in names or "breast" not in names:
                continue
            attrs = store.case_attrs(case_id)
            if splits is not None and attrs.get("split") not in splits:
                continue
            image = store.read_array(case_id, "image").astype(np.float32) if with_images else None
            cases.append(
                LabelCase(
                    case_id=case_id,
                    tissue=store.read_array(case_id, "tissue"),
                    breast=store.read_array(case_id, "breast"),
                    image=image,
                    split=attrs.get("split"),
                    dataset=attrs.get("dataset"),
                )
            )
        if not cases:
            raise ValueError(
                f"{source} has no case with 'tissue' and 'breast' arrays; prepare a dataset that has "
                "tissue/labels and tissue/breast NIfTI files (e.g. the phantom)"
            )
        return cases
    if not src.is_dir():
        raise FileNotFoundError(f"{source} is neither a prepared store nor a dataset folder")
    from synbt_factory.data.mamamia import index_dataset

    index = index_dataset(src)
    for rec in index.cases:
        if rec.tissue_labels is None or rec.breast_mask is None:
            continue
        if splits is not None and rec.split not in splits:
            continue
        tissue = _load_nifti_labels(rec.tissue_labels)
        breast = _load_nifti_labels(rec.breast_mask)
        if tissue.shape != breast.shape:
            raise ValueError(f"{rec.case_id}: tissue {tissue.shape} and breast {breast.shape} labels differ in shape")
        cases.append(LabelCase(case_id=rec.case_id, tissue=tissue, breast=breast, split=rec.split))
    if not cases:
        raise ValueError(f"{source} has no tissue/labels/<ID>.nii.gz with a matching tissue/breast/<ID>.nii.gz")
    return cases


def _crop(arrays: list[np.ndarray | None], start: np.ndarray, size: int) -> list[np.ndarray | None]:
    """The ``size``³ cube at ``start`` (may reach outside) of each (..., X, Y, Z) array, zero-padded outside it."""
    out: list[np.ndarray | None] = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        spatial = a.shape[-3:]
        lead = a.ndim - 3
        pad = [(0, 0)] * lead + [(max(0, -s), max(0, s + size - d)) for s, d in zip(start, spatial, strict=True)]
        sl = tuple(
            [slice(None)] * lead + [slice(max(0, s), min(d, s + size)) for s, d in zip(start, spatial, strict=True)]
        )
        piece = a[sl]
        if any(p != (0, 0) for p in pad):
            piece = np.pad(piece, pad)
        out.append(piece)
    return out


class TissueBatches(torch.utils.data.IterableDataset):
    """Endless synthetic batches: image (B, 2, P, P, P) float32, target (B, 1, P, P, P) int64.

    Batch ``j`` is drawn from ``case_generator(seed, j, "tissue-batch")`` and worker ``w`` of
    ``W`` makes batches ``j ≡ w (mod W)``; with ``batch_size=None`` in the DataLoader the
    sequence of batches is the same for any number of workers.
    """

    def __init__(self, cases: list[LabelCase], config: TissueTrainConfig, *, start_batch: int = 0) -> None:
        super().__init__()
        if not cases:
            raise ValueError("no label cases to train on")
        self.cases = cases
        self.config = config
        self.start_batch = start_batch

    def make_batch(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``j``: image (B, 2, P, P, P) float32 and target (B, 1, P, P, P) int64 (classes 0..3).

        Drawn only from ``case_generator(config.seed, j, "tissue-batch")``, so batch ``j`` is the same in any
        worker and after a resume.
        """
        cfg = self.config
        rng = case_generator(cfg.seed, j, "tissue-batch")
        images, targets = [], []
        for _ in range(cfg.batch_size):
            case = self.cases[int(rng.integers(0, len(self.cases)))]
            shape = np.asarray(case.tissue.shape)
            if rng.random() < cfg.breast_centre_prob and case.breast.any():
                flat = np.flatnonzero(case.breast)
                centre = np.asarray(np.unravel_index(int(flat[int(rng.integers(0, flat.size))]), case.breast.shape))
            else:
                centre = np.array([int(rng.integers(0, s)) for s in shape])
            start = centre - cfg.patch // 2
            tissue, breast, image = _crop([case.tissue, case.breast, case.image], start, cfg.patch)
            img, target, _ = synthesize_tissue_image(tissue, breast, rng, cfg.synth, image=image)  # type: ignore[arg-type]
            if rng.random() < 0.5:  # left-right flip
                img, target = img[:, ::-1], target[::-1]
            images.append(np.ascontiguousarray(img))
            targets.append(np.ascontiguousarray(target)[None])
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        j = self.start_batch + wid
        while True:
            yield self.make_batch(j)
            j += nw
