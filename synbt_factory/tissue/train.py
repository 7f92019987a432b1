"""Train the fibroglandular-tissue model on synthesised images only (paper Sec. 3.1, Fig. 4 b).

Label maps (tissue 0/1/2 + breast mask) are read from a prepared store's ``tissue``/``breast``
arrays or from NIfTI files ``<dir>/tissue/labels/<ID>.nii.gz`` and ``<dir>/tissue/breast/<ID>.nii.gz``
(resampled to 1 mm RAS, nearest). Each training patch is a new random-contrast pre/post image
drawn from its labels (:mod:`synbt_factory.tissue.synth`): the real images are never
needed for training (when present they only shape the k-means clusters outside the breast, the
paper's recipe; their intensities never reach the network). Validation runs the model on real prepared
images (held-out cases) and scores FGT Dice against their ``tissue`` labels.

Run folder::

    <out>/last.pt        model + optimizer + step (resume point), atomic
    <out>/best.pt        best validation FGT Dice so far (or last when there is no validation)
    <out>/final.pt       the model after the last step (as the other trainers write it)
    <out>/history.jsonl  one JSON object per log / validation event

Inference: :func:`predict_tissue` (sliding window, then post-processing: breast = classes ≥ 1,
the largest components that reach the body's anterior skin (so never the heart), holes filled;
FGT = class 3 inside the breast eroded by a skin/chest-wall margin, small components dropped).
:func:`add_tissue_to_store` writes ``tissue_pred`` and ``breast_pred`` into every case of a
prepared store for placement to read.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from synbt_factory.checkpoint import load_checkpoint, rebuilding_from, save_checkpoint
from synbt_factory.config import config_from_dict, config_to_dict
from synbt_factory.device import resolve_device
from synbt_factory.models.tissue import FGT_CLASS, TissueModelConfig, build_tissue_model, tissue_preset
from synbt_factory.progress import ProgressFn, report
from synbt_factory.rng import case_generator
from synbt_factory.store import CaseStore
from synbt_factory.tissue.synth import TissueSynthConfig, synthesize_tissue_image
from synbt_factory.training.runs import (
    FINAL_NAME,
    LAST_NAME,
    TrainingInterrupted,
    interrupted_run,
    stop_on_ctrl_c,
)

__all__ = [
    "CHECKPOINT_KIND",
    "LabelCase",
    "TissueTrainConfig",
    "TissuePostConfig",
    "TissueTrainResult",
    "load_label_cases",
    "TissueBatches",
    "train_tissue",
    "load_tissue_model",
    "segment_tissue",
    "postprocess_tissue",
    "predict_tissue",
    "dice",
    "evaluate_tissue",
    "add_tissue_to_store",
]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "tissue"


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True, kw_only=True)
class TissuePostConfig:
    """Post-processing of the tissue model's labels.

    Args:
        breast_min_fraction: breast components smaller than this fraction of the largest are dropped.
        max_breasts: at most this many breast components are kept.
        margin_mm: FGT is kept only farther than this from the breast boundary (skin, chest wall).
        min_fgt_voxels: FGT components smaller than this are dropped.
        skin_contact_mm: with the image known, a breast component must come this close to the
            body's anterior surface (else it is not a breast: heart, mediastinum).
        anterior_axis / anterior_sign: index axis and direction pointing anterior (RAS: 1, +1).
    """

    breast_min_fraction: float = 0.1
    max_breasts: int = 2
    margin_mm: float = 3.0
    min_fgt_voxels: int = 20
    skin_contact_mm: float = 8.0
    anterior_axis: int = 1
    anterior_sign: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.breast_min_fraction <= 1:
            raise ValueError(f"breast_min_fraction must be in [0, 1], got {self.breast_min_fraction}")
        if self.max_breasts < 1:
            raise ValueError(f"max_breasts must be >= 1, got {self.max_breasts}")
        if self.margin_mm < 0:
            raise ValueError(f"margin_mm must be >= 0, got {self.margin_mm}")
        if self.min_fgt_voxels < 0:
            raise ValueError(f"min_fgt_voxels must be >= 0, got {self.min_fgt_voxels}")
        if self.skin_contact_mm <= 0:
            raise ValueError(f"skin_contact_mm must be > 0, got {self.skin_contact_mm}")
        if self.anterior_axis not in (0, 1, 2):
            raise ValueError(f"anterior_axis must be 0, 1 or 2, got {self.anterior_axis}")
        if self.anterior_sign not in (-1, 1):
            raise ValueError(f"anterior_sign must be -1 or 1, got {self.anterior_sign}")


@dataclass(frozen=True, kw_only=True)
class TissueTrainConfig:
    """A tissue-model training run.

    Args:
        model: the U-Net.
        synth: the label → image generator.
        post: inference post-processing (stored in the checkpoint for :func:`predict_tissue`).
        steps: optimizer steps.
        batch_size: patches per step.
        patch: training patch edge (multiple of the model's stride product).
        breast_centre_prob: probability a patch is centred on a breast voxel.
        lr: Adam learning rate (cosine decay to 10 %).
        seed: run seed (per-batch streams from :func:`synbt_factory.rng.case_generator`).
        val_every: steps between validations (0: only at the end).
        val_cases: at most this many held-out real cases are validated.
        roi: sliding-window size at validation / inference.
        sw_batch_size: windows per forward pass (≥ 2: batch-1 3D convolution is slow on CPU).
        workers: DataLoader worker processes for synthesis (results do not depend on it).
        log_every: steps between history lines.
    """

    model: TissueModelConfig = field(default_factory=lambda: tissue_preset("small"))
    synth: TissueSynthConfig = field(default_factory=TissueSynthConfig)
    post: TissuePostConfig = field(default_factory=TissuePostConfig)
    steps: int = 2000
    batch_size: int = 2
    patch: int = 96
    breast_centre_prob: float = 0.8
    lr: float = 2e-3
    seed: int = 0
    val_every: int = 250
    val_cases: int = 4
    roi: int = 96
    sw_batch_size: int = 2
    workers: int = 1
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        div = self.model.divisor
        if self.patch < div or self.patch % div:
            raise ValueError(f"patch must be a positive multiple of {div} (the model's strides), got {self.patch}")
        if self.roi < div or self.roi % div:
            raise ValueError(f"roi must be a positive multiple of {div}, got {self.roi}")
        if not 0 <= self.breast_centre_prob <= 1:
            raise ValueError(f"breast_centre_prob must be in [0, 1], got {self.breast_centre_prob}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.val_every < 0:
            raise ValueError(f"val_every must be >= 0, got {self.val_every}")
        if self.val_cases < 0:
            raise ValueError(f"val_cases must be >= 0, got {self.val_cases}")
        if self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")

    @classmethod
    def preset(cls, name: str, **changes: Any) -> TissueTrainConfig:
        """``tiny`` (tests: 32³ patches, 8-16-32 U-Net) or ``small`` (96³, 16-32-64-128)."""
        if name == "tiny":
            base: dict[str, Any] = {"model": tissue_preset("tiny"), "patch": 32, "roi": 32, "batch_size": 2,
                                    "steps": 60, "val_every": 0, "workers": 0, "lr": 3e-3}
        elif name == "small":
            base = {"model": tissue_preset("small")}
        else:
            raise ValueError(f"preset must be 'tiny' or 'small', got {name!r}")
        base.update(changes)
        return cls(**base)


# ----------------------------------------------------------------------------- data
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

    load = Compose([
        LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True, dtype=np.float32),
        Orientation(axcodes="RAS"),
        Spacing(pixdim=(1.0, 1.0, 1.0), mode="nearest", padding_mode="zeros", dtype=np.float32),
    ])
    return np.rint(np.asarray(load(str(path))[0])).astype(np.uint8)


def load_label_cases(source: str | Path, *, with_images: bool = True, splits: Sequence[str | None] | None = None,
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
            cases.append(LabelCase(case_id=case_id, tissue=store.read_array(case_id, "tissue"),
                                   breast=store.read_array(case_id, "breast"), image=image,
                                   split=attrs.get("split"), dataset=attrs.get("dataset")))
        if not cases:
            raise ValueError(f"{source} has no case with 'tissue' and 'breast' arrays; prepare a dataset that has "
                             "tissue/labels and tissue/breast NIfTI files (e.g. the phantom)")
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
    out: list[np.ndarray | None] = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        spatial = a.shape[-3:]
        lead = a.ndim - 3
        pad = [(0, 0)] * lead + [(max(0, -s), max(0, s + size - d)) for s, d in zip(start, spatial, strict=True)]
        sl = tuple([slice(None)] * lead
                   + [slice(max(0, s), min(d, s + size)) for s, d in zip(start, spatial, strict=True)])
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


# ----------------------------------------------------------------------------- inference
def segment_tissue(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    roi: int = 96,
    sw_batch_size: int = 2,
    overlap: float = 0.25,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Raw tissue classes (X, Y, Z) uint8 (0 other, 1 fat, 2 vessel, 3 FGT) by sliding-window inference.

    Args:
        model: the tissue U-Net.
        image: (2, X, Y, Z) pre/post (prepared-store normalisation).
        roi: window edge (multiple of the model's stride product).
        sw_batch_size: windows per forward pass.
    """
    from monai.inferers import sliding_window_inference

    if device is None:
        device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
    model.eval()
    with torch.inference_mode():
        logits = sliding_window_inference(x, (roi,) * 3, sw_batch_size, model, overlap=overlap, mode="gaussian")
        labels = torch.argmax(logits, dim=1)[0]
    return labels.to(torch.uint8).cpu().numpy()


def _skin_depth(image: np.ndarray, anterior_axis: int, anterior_sign: int) -> np.ndarray:
    """(X, Y, Z) float32: distance in voxels from each voxel to the body's anterior surface along
    the anterior axis (inf in columns without body)."""
    from synbt_factory.synthesis.placement import body_mask

    body = np.moveaxis(body_mask(image), anterior_axis, 1)
    if anterior_sign < 0:
        body = body[:, ::-1]
    ny = body.shape[1]
    has = body.any(axis=1)
    front = np.where(has, ny - 1 - np.argmax(body[:, ::-1], axis=1), -1).astype(np.float32)  # (X, Z)
    depth = np.where(has[:, None, :], front[:, None, :] - np.arange(ny, dtype=np.float32)[None, :, None], np.inf)
    if anterior_sign < 0:
        depth = depth[:, ::-1]
    return np.ascontiguousarray(np.moveaxis(depth, 1, anterior_axis), dtype=np.float32)


def postprocess_tissue(
    labels: np.ndarray, config: TissuePostConfig | None = None, *, image: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(fgt, breast) uint8 masks from raw tissue classes; see the module docstring.

    Args:
        labels: (X, Y, Z) classes of :func:`segment_tissue`.
        config: post-processing rules.
        image: (2, X, Y, Z) the image segmented; when given, breast components that do not reach
            within ``skin_contact_mm`` of the body's anterior surface are dropped (a breast lies
            under the anterior skin; the heart or mediastinum never does).
    """
    config = config or TissuePostConfig()
    breast = labels >= 1
    lab, n = ndimage.label(breast)
    if n:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        if image is not None:
            depth = _skin_depth(image, config.anterior_axis, config.anterior_sign)
            closest = ndimage.minimum(depth, lab, index=np.arange(1, n + 1))
            far = np.flatnonzero(np.asarray(closest) > config.skin_contact_mm) + 1
            sizes[far] = 0
        order = np.argsort(-sizes)[: config.max_breasts]
        keep = [int(i) for i in order if sizes[i] > 0 and sizes[i] >= config.breast_min_fraction * sizes.max()]
        breast = np.isin(lab, keep)
        breast = ndimage.binary_fill_holes(breast)
    fgt = (labels == FGT_CLASS) & breast
    if config.margin_mm > 0 and breast.any():
        inner = ndimage.distance_transform_edt(breast) > config.margin_mm
        fgt &= inner
    if config.min_fgt_voxels > 0 and fgt.any():
        lab, n = ndimage.label(fgt)
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        fgt = sizes[lab] >= config.min_fgt_voxels
    return fgt.astype(np.uint8), breast.astype(np.uint8)


def predict_tissue(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    post: TissuePostConfig | None = None,
    roi: int = 96,
    sw_batch_size: int = 2,
    overlap: float = 0.25,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """FGT and breast masks (X, Y, Z) uint8 of a (2, X, Y, Z) image (sliding window + post-processing).

    The breast mask comes from the model (classes ≥ 1), not from intensity thresholds.
    """
    labels = segment_tissue(model, image, roi=roi, sw_batch_size=sw_batch_size, overlap=overlap, device=device)
    return postprocess_tissue(labels, post, image=image)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom


def evaluate_tissue(
    model: torch.nn.Module,
    cases: Sequence[LabelCase],
    *,
    post: TissuePostConfig | None = None,
    roi: int = 96,
    sw_batch_size: int = 2,
    images: Sequence[np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Per case: FGT Dice raw (class 3 vs tissue == 2), FGT Dice after post-processing (vs
    tissue == 2 inside the breast eroded by the same margin) and breast Dice.

    Args:
        cases: label cases with real images (``image``), or pass ``images`` explicitly.
    """
    out = []
    for i, case in enumerate(cases):
        image = images[i] if images is not None else case.image
        if image is None:
            raise ValueError(f"case {case.case_id} has no image to evaluate on")
        labels = segment_tissue(model, image, roi=roi, sw_batch_size=sw_batch_size)
        fgt, breast = postprocess_tissue(labels, post, image=image)
        truth_fgt = case.tissue == 2
        margin = (post or TissuePostConfig()).margin_mm
        truth_inner = truth_fgt & (ndimage.distance_transform_edt(case.breast > 0) > margin)
        out.append({
            "case_id": case.case_id,
            "dataset": case.dataset,
            "dice_fgt_raw": dice(labels == FGT_CLASS, truth_fgt),
            "dice_fgt_post": dice(fgt, truth_inner),
            "dice_breast": dice(breast, case.breast),
            "fgt_fraction_true": float(truth_fgt.sum() / max(1, int((case.breast > 0).sum()))),
        })
    return out


# ----------------------------------------------------------------------------- training
@dataclass
class TissueTrainResult:
    best_path: Path
    last_path: Path
    steps: int
    history: list[dict[str, Any]]
    best_val_dice: float | None
    final_path: Path | None = None


def _checkpoint_payload(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, step: int,
                        config: TissueTrainConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": step,
        "train_config": config_to_dict(config),
        "metrics": metrics,
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    return payload


# may differ between a run and its continuation (``post`` only shapes inference)
_RESUMABLE_CHANGES = frozenset({"steps", "val_every", "val_cases", "workers", "log_every", "post"})


def _same_run(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    keys = (set(saved) | set(current)) - _RESUMABLE_CHANGES
    return all(saved.get(k) == current.get(k) for k in keys)


def train_tissue(
    labels: str | Path | list[LabelCase],
    out_dir: str | Path,
    config: TissueTrainConfig | None = None,
    *,
    val: str | Path | list[LabelCase] | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: ProgressFn | None = None,
) -> TissueTrainResult:
    """Train the tissue model on images synthesised from label maps.

    Args:
        labels: prepared store / dataset folder (see :func:`load_label_cases`) or loaded cases.
            From a store, training uses the ``train`` split (all cases if none is marked) and
            validation the others.
        out_dir: run folder.
        config: the run.
        val: validation cases with real images (default: the held-out cases of ``labels`` when
            it is a prepared store).
        device: ``auto`` | ``cpu`` | ``cuda``.
        resume: continue from ``out_dir/last.pt`` when it exists and its config differs at most
            in ``steps``, ``val_every``, ``val_cases``, ``workers``, ``log_every`` or ``post`` (so a
            run can be extended with more steps); another config is an error. Without it an existing
            ``last.pt`` is an error (a finished run is never overwritten).
        progress: ``(step, steps, {"loss": …, "val_dice": …})``.
    """
    config = config or TissueTrainConfig()
    dev = resolve_device(device)
    out = Path(out_dir)
    if not resume and (out / LAST_NAME).is_file():
        raise FileExistsError(f"{out} already holds a run ({LAST_NAME}); resume it or choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    all_cases = labels if isinstance(labels, list) else load_label_cases(labels, with_images=True)
    train_cases = [c for c in all_cases if c.split == "train"] or list(all_cases)
    train_ids = {id(c) for c in train_cases}
    held = [c for c in all_cases if id(c) not in train_ids and c.image is not None]
    if val is None:
        val_cases = held[: config.val_cases]
    else:
        val_cases = (val if isinstance(val, list) else load_label_cases(val, with_images=True))[: config.val_cases]
        val_cases = [c for c in val_cases if c.image is not None]
    log.info("tissue training: %d label maps, %d validation cases, device %s", len(train_cases), len(val_cases), dev)

    torch.manual_seed(config.seed)
    model = build_tissue_model(config.model).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start = 0
    best: float | None = None
    history: list[dict[str, Any]] = []
    last_path, best_path, final_path = out / LAST_NAME, out / "best.pt", out / FINAL_NAME
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, kind=CHECKPOINT_KIND, map_location=dev)
        if _same_run(ckpt.get("train_config", {}), config_to_dict(config)):
            model.load_state_dict(ckpt["model"])
            if "optimizer" in ckpt:
                optimizer.load_state_dict(ckpt["optimizer"])
            start = int(ckpt["step"])
            best = ckpt.get("metrics", {}).get("best_val_dice")
            log.info("resuming tissue training at step %d", start)
        else:
            changed = sorted(k for k in (set(ckpt.get("train_config", {})) | set(config_to_dict(config)))
                             - _RESUMABLE_CHANGES
                             if ckpt.get("train_config", {}).get(k) != config_to_dict(config).get(k))
            raise ValueError(f"cannot resume {last_path}: the configuration changed in {', '.join(changed)}; "
                             "rerun with its settings or choose another output folder")

    from monai.losses import DiceCELoss

    # batch=True: Dice over the whole batch, so a class absent from one patch (vessels) does not
    # add a constant loss of 1 per patch
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s + start) / config.steps))))
    batches = TissueBatches(train_cases, config, start_batch=start)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=config.workers,
                                         persistent_workers=False, pin_memory=dev.type == "cuda")
    hist_file = out / "history.jsonl"
    running: list[float] = []
    t0 = time.perf_counter()
    step = start

    def validate() -> float | None:
        if not val_cases:
            return None
        rows = evaluate_tissue(model, val_cases, post=config.post, roi=config.roi, sw_batch_size=config.sw_batch_size)
        model.train()
        return float(np.mean([r["dice_fgt_raw"] for r in rows]))

    def save(path: Path, metrics: dict[str, Any], with_opt: bool) -> None:
        save_checkpoint(path, _checkpoint_payload(model, optimizer if with_opt else None, step, config, metrics),
                        kind=CHECKPOINT_KIND, config=config_to_dict(config.model))

    model.train()
    saved: int | None = start if start else None
    with stop_on_ctrl_c() as stop:
        try:
            if step < config.steps:
                for image, target in loader:
                    image, target = image.to(dev, non_blocking=True), target.to(dev, non_blocking=True)
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(model(image), target)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    running.append(float(loss.detach()))
                    metrics: dict[str, float] = {"loss": float(np.mean(running[-config.log_every:]))}
                    if step % config.log_every == 0 or step == config.steps:
                        row = {"event": "train", "step": step, "loss": metrics["loss"],
                               "lr": optimizer.param_groups[0]["lr"], "elapsed_s": time.perf_counter() - t0}
                        history.append(row)
                        with open(hist_file, "a") as fh:
                            fh.write(json.dumps(row) + "\n")
                    is_last = step >= config.steps
                    if (config.val_every and step % config.val_every == 0) or is_last:
                        vd = validate()
                        row = {"event": "val", "step": step, "val_dice_fgt": vd}
                        history.append(row)
                        with open(hist_file, "a") as fh:
                            fh.write(json.dumps(row) + "\n")
                        if vd is not None:
                            metrics["val_dice"] = vd
                        improved = vd is not None and (best is None or vd > best)
                        if improved:
                            best = vd
                        save(last_path, {"best_val_dice": best, "loss": metrics["loss"]}, True)
                        saved = step
                        if improved or (vd is None and is_last) or not best_path.is_file():
                            save(best_path, {"val_dice_fgt": vd, "loss": metrics["loss"]}, False)
                        if is_last:
                            save(final_path, {"val_dice_fgt": vd, "loss": metrics["loss"]}, False)
                    report(progress, step, config.steps, metrics)
                    if is_last:
                        break
                    if stop.requested:
                        if saved != step:
                            save(last_path, {"best_val_dice": best, "loss": metrics["loss"]}, True)
                        raise interrupted_run(out, step)
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:
            raise interrupted_run(out, saved) from None
    return TissueTrainResult(best_path=best_path, last_path=last_path, steps=step, history=history,
                             best_val_dice=best, final_path=final_path if final_path.is_file() else None)


def load_tissue_model(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, TissueTrainConfig]:
    """Rebuild the tissue U-Net from a checkpoint (``weights_only`` load); returns (model in eval mode, run config)."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    ckpt = load_checkpoint(Path(path), kind=CHECKPOINT_KIND, map_location=dev)
    with rebuilding_from(path, "tissue model"):
        config = config_from_dict(TissueTrainConfig, ckpt["train_config"])
        model = build_tissue_model(config.model)
        model.load_state_dict(ckpt["model"])
    model.to(dev).eval()
    return model, config


def add_tissue_to_store(
    ckpt: str | Path,
    prepared_store: str | Path | CaseStore,
    progress: ProgressFn | None = None,
    *,
    device: str = "auto",
    overwrite: bool = False,
    case_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write ``tissue_pred`` (uint8 0/1 FGT, post-processed) and ``breast_pred`` into each prepared case, then the
    case's placement anatomy for the new breast mask (:mod:`~synbt_factory.synthesis.background_context`).

    Cases whose ``tissue_pred`` and ``breast_pred`` are finished (both have a checksum entry) are skipped
    unless ``overwrite``; an addition a crash left unfinished is redone. Runs under the store's writer lock.
    Returns counts and the per-case FGT fraction of the breast.
    """
    from synbt_factory.store.lock import writer_lock
    from synbt_factory.synthesis.background_context import store_placement_anatomy

    model, config = load_tissue_model(ckpt, device=device)
    store = prepared_store if isinstance(prepared_store, CaseStore) else CaseStore.open(prepared_store, mode="r+")
    if not store.writable:
        store = CaseStore.open(store.location, mode="r+")
    ids = list(case_ids) if case_ids is not None else store.case_ids()
    done, skipped, fractions = 0, 0, {}
    with writer_lock(store.location, command="data tissue"):
        for i, case_id in enumerate(ids, start=1):
            finished = store.case_attrs(case_id).get("sha256", {})
            if not overwrite and {"tissue_pred", "breast_pred"} <= set(finished):
                skipped += 1
                store_placement_anatomy(store, [case_id])  # no-op unless a kill or an older release left none
                report(progress, i, len(ids), {"skipped": float(skipped)})
                continue
            image = store.read_array(case_id, "image").astype(np.float32)
            fgt, breast = predict_tissue(model, image, post=config.post, roi=config.roi,
                                         sw_batch_size=config.sw_batch_size)
            store.add_arrays(case_id, {"tissue_pred": fgt, "breast_pred": breast})
            store_placement_anatomy(store, [case_id])  # the new breast mask changes where tumors may go
            fractions[case_id] = float(fgt.sum() / max(1, int(breast.sum())))
            done += 1
            report(progress, i, len(ids), {"fgt_fraction": fractions[case_id]})
        store.update_card(tissue_model={"checkpoint": str(ckpt), "post": config_to_dict(config.post)})
    return {"written": done, "skipped": skipped, "fgt_fraction": fractions}
