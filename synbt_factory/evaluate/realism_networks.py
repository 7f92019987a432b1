"""The realism report's sections that need a trained network: the feature distance (VQ-VAE encoder) and
detectability (a segmenter trained on real cases)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synbt_factory.evaluate.realism_figures import summary
from synbt_factory.evaluate.realism_types import RealismConfig, TumorFigures, case_spacing, spread
from synbt_factory.store import CaseStore

__all__ = ["detectability", "feature_distance"]

_LOCAL_DICE_MM = 10.0


def feature_distance(
    vqvae: Path,
    real: list[TumorFigures],
    synthetic: list[TumorFigures],
    prepared: CaseStore,
    store: CaseStore,
    config: RealismConfig,
    device: str,
    notes: list[str],
) -> dict[str, Any]:
    """Fréchet distance of VQ-VAE encoder features: half of the real tumors against as many synthetic ones, and
    against the other half (the floor). Notes what it skips or doubts into ``notes``."""
    from synbt_factory.checkpoint import file_sha256
    from synbt_factory.evaluate.feature_distance import encoder_features, frechet_distance, tumor_crop
    from synbt_factory.models.vqvae import load_vqvae

    if len(real) < 4 or len(synthetic) < 2:
        notes.append(
            f"feature distance skipped: it needs at least 4 real and 2 synthetic tumors "
            f"({len(real)} and {len(synthetic)})"
        )
        return {}
    model, _, vq_config = load_vqvae(vqvae, device)
    crop = tuple(config.crop or (vq_config.patch_size,) * 3)
    if any(c % model.downsample_factor for c in crop):
        raise ValueError(f"crop {crop} must be a multiple of the VQ-VAE's downsample factor {model.downsample_factor}")
    recorded = ((store.attrs.get("run_identity") or {}).get("method_card") or {}).get("vqvae_sha256")
    sha = file_sha256(vqvae)
    if recorded and recorded != sha:
        notes.append(
            f"the VQ-VAE {vqvae} is not the one this store was generated with (sha256 {sha[:12]}… vs "
            f"{recorded[:12]}…); the distances use its features all the same"
        )

    def crops(source: CaseStore, tumors: list[TumorFigures], mask_name: str) -> list[np.ndarray]:
        out = []
        for t in tumors:
            arrays, _ = source.read_case(t.case_id, ("image", mask_name))
            out.append(tumor_crop(arrays["image"], arrays[mask_name] > 0, crop))
        return out

    half_a, half_b = real[0::2], real[1::2]
    feats_a = encoder_features(model, crops(prepared, half_a, "mask"), device=device)
    feats_b = encoder_features(model, crops(prepared, half_b, "mask"), device=device)
    chosen = spread(synthetic, len(half_b)) if len(synthetic) > len(half_b) else synthetic
    feats_s = encoder_features(model, crops(store, list(chosen), "synthetic_mask"), device=device)
    return {
        "frechet_distance": frechet_distance(feats_a, feats_s, ridge=config.ridge),
        "frechet_floor": frechet_distance(feats_a, feats_b, ridge=config.ridge),
        "reference": f"half of the real tumors ({len(half_a)}); floor: the other half ({len(half_b)}) against it; "
        f"synthetic: {len(chosen)} tumors",
        "features": f"VQ-VAE encoder latent, mean and std per channel ({feats_a.shape[1]} values), crop {list(crop)}",
        "vqvae": str(vqvae),
        "vqvae_sha256": sha,
    }


def _local_dice(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    from synbt_factory.metrics import dice_score

    pad = [int(math.ceil(_LOCAL_DICE_MM / s)) for s in spacing]
    idx = np.argwhere(truth)
    lo, hi = idx.min(0), idx.max(0) + 1
    box = tuple(slice(max(int(a) - p, 0), int(b) + p) for a, b, p in zip(lo, hi, pad, strict=True))
    return dice_score(pred[box], truth[box])


def detectability(
    segmenter: Path,
    synthetic: list[TumorFigures],
    prepared: CaseStore,
    store: CaseStore,
    config: RealismConfig,
    device: str,
    notes: list[str],
) -> dict[str, Any]:
    """Dice of a segmenter trained on real cases on synthetic tumors vs held-out real ones (its own test split),
    over the whole case and within 10 mm of the tumor."""
    from synbt_factory.data.mixing import case_splits
    from synbt_factory.metrics import dice_score
    from synbt_factory.models.segmenters import predict_volume
    from synbt_factory.training.segmentation import load_segmenter

    model, seg_config, _ = load_segmenter(segmenter, device=device)
    held_out = case_splits(prepared, val_fraction=seg_config.val_fraction, split_seed=seg_config.split_seed).test
    real_rows, syn_rows = [], []
    for case_id in held_out:
        if len(real_rows) >= config.segmenter_cases:
            break
        arrays, attrs = prepared.read_case(case_id, ("image", "mask"))
        truth = arrays["mask"] > 0
        if not truth.any():
            continue
        pred = predict_volume(model, arrays["image"], seg_config.window, device=device, amp=seg_config.amp) > 0
        real_rows.append((dice_score(pred, truth), _local_dice(pred, truth, case_spacing(attrs))))
    for t in synthetic[: config.segmenter_cases]:
        arrays, attrs = store.read_case(t.case_id, ("image", "mask", "synthetic_mask"))
        pred = predict_volume(model, arrays["image"], seg_config.window, device=device, amp=seg_config.amp) > 0
        syn = arrays["synthetic_mask"] > 0
        syn_rows.append((dice_score(pred, arrays["mask"] > 0), _local_dice(pred, syn, case_spacing(attrs))))
    if not real_rows:
        notes.append(
            f"detectability: the segmenter's held-out (test) split of {prepared.location} has no tumor; "
            "only the synthetic Dice is given"
        )
    return {
        "dice_synthetic": summary([r[0] for r in syn_rows]),
        "dice_real": summary([r[0] for r in real_rows]) or {"mean": None},
        "local_dice_synthetic": summary([r[1] for r in syn_rows]),
        "local_dice_real": summary([r[1] for r in real_rows]),
        "segmenter": str(segmenter),
        "note": f"Dice over the whole case (all tumors) and locally within {_LOCAL_DICE_MM:g} mm of the synthetic "
        "(or real) tumor; real: held-out test cases of the segmenter's own split",
    }
