"""Inference of the tissue model: sliding-window labels, post-processing, evaluation and writing into a store.

:func:`predict_tissue` runs the U-Net over a whole (2, X, Y, Z) image (sliding window), then post-processes:
breast = classes ≥ 1, the largest components that reach the body's anterior skin (so never the heart),
holes filled; FGT = class 3 inside the breast eroded by a skin/chest-wall margin, small components
dropped. :func:`add_tissue_to_store` writes ``tissue_pred`` and ``breast_pred`` into every case of a
prepared store for placement to read. :func:`load_tissue_model` rebuilds a trained model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import ndimage

from synbt_factory.checkpoint import load_checkpoint, rebuilding_from
from synbt_factory.config import config_from_dict, config_to_dict
from synbt_factory.device import resolve_device
from synbt_factory.metrics import dice_score
from synbt_factory.models.tissue import FGT_CLASS, build_tissue_model
from synbt_factory.progress import ProgressFn, report
from synbt_factory.store import CaseStore
from synbt_factory.tissue.config import TissuePostConfig, TissueTrainConfig
from synbt_factory.tissue.data import LabelCase

__all__ = [
    "CHECKPOINT_KIND",
    "LoadedTissueModel",
    "load_tissue_model",
    "segment_tissue",
    "postprocess_tissue",
    "predict_tissue",
    "evaluate_tissue",
    "add_tissue_to_store",
]

#: ``kind`` of every tissue-model checkpoint.
CHECKPOINT_KIND = "tissue"


class LoadedTissueModel(NamedTuple):
    """A trained tissue U-Net rebuilt from its checkpoint (unpacks as ``model, config``).

    Attributes:
        model: the network in eval mode on the requested device.
        config: the :class:`TissueTrainConfig` of its run (``post``, ``roi`` and ``sw_batch_size`` drive inference).
    """

    model: torch.nn.Module
    config: TissueTrainConfig


def load_tissue_model(path: str | Path, *, device: str | torch.device = "cpu") -> LoadedTissueModel:
    """Rebuild the tissue U-Net from a checkpoint (``weights_only`` load).

    Args:
        path: ``best.pt``, ``last.pt`` or ``final.pt`` of ``synbt train tissue``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device.

    Returns:
        :class:`LoadedTissueModel` ``(model, config)``.

    Raises:
        CheckpointError: missing, corrupt, not a tissue checkpoint, or its config and weights cannot rebuild the
            model.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    ckpt = load_checkpoint(Path(path), kind=CHECKPOINT_KIND, map_location=dev)
    with rebuilding_from(path, "tissue model"):
        config = config_from_dict(TissueTrainConfig, ckpt["train_config"])
        model = build_tissue_model(config.model)
        model.load_state_dict(ckpt["model"])
    model.to(dev).eval()
    return LoadedTissueModel(model, config)


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

    Dice is MedPy's (:func:`synbt_factory.metrics.dice_score`: 1.0 when both masks are empty).

    Args:
        model: the tissue U-Net.
        cases: label cases with real images (``image``), or pass ``images`` explicitly.
        post: post-processing rules (default :class:`TissuePostConfig`).
        roi: sliding-window edge.
        sw_batch_size: windows per forward pass.
        images: (2, X, Y, Z) image per case instead of ``case.image``.

    Returns:
        One dict per case: ``case_id``, ``dataset``, ``dice_fgt_raw``, ``dice_fgt_post``, ``dice_breast``,
        ``fgt_fraction_true``.
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
        out.append(
            {
                "case_id": case.case_id,
                "dataset": case.dataset,
                "dice_fgt_raw": dice_score(labels == FGT_CLASS, truth_fgt),
                "dice_fgt_post": dice_score(fgt, truth_inner),
                "dice_breast": dice_score(breast, case.breast),
                "fgt_fraction_true": float(truth_fgt.sum() / max(1, int((case.breast > 0).sum()))),
            }
        )
    return out


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
            fgt, breast = predict_tissue(
                model, image, post=config.post, roi=config.roi, sw_batch_size=config.sw_batch_size
            )
            store.add_arrays(case_id, {"tissue_pred": fgt, "breast_pred": breast})
            store_placement_anatomy(store, [case_id])  # the new breast mask changes where tumors may go
            fractions[case_id] = float(fgt.sum() / max(1, int(breast.sum())))
            done += 1
            report(progress, i, len(ids), {"fgt_fraction": fractions[case_id]})
        store.update_card(tissue_model={"checkpoint": str(ckpt), "post": config_to_dict(config.post)})
    return {"written": done, "skipped": skipped, "fgt_fraction": fractions}
