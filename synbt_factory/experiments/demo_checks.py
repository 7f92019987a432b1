"""Phantom-only checks of the demo: the phantom knows its true breast and tissue, so the demo can score against them.

Neither check changes a store; both read the prepared store's phantom labels (``breast``, ``tissue``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["inside_true_breast", "tissue_agreement"]


def tissue_agreement(prepared: Path) -> dict[str, float]:
    """Mean Dice of the predicted breast / FGT maps against the phantom's own labels (all cases).

    Args:
        prepared: the prepared store, after the tissue model wrote ``breast_pred`` / ``tissue_pred``.

    Returns:
        ``breast_dice_vs_labels`` and ``fgt_dice_vs_labels``, each only when some case holds both maps.
    """
    import numpy as np

    from synbt_factory.metrics import dice_score
    from synbt_factory.store import CaseStore

    store = CaseStore.open(prepared)
    breast, fgt = [], []
    for case_id in store.case_ids():
        names = set(store.array_names(case_id))

        def read(name: str, case_id: str = case_id) -> np.ndarray:
            return store.read_array(case_id, name)

        if {"breast", "breast_pred"} <= names:
            breast.append(dice_score(read("breast") > 0, read("breast_pred") > 0))
        if {"tissue", "tissue_pred"} <= names:
            fgt.append(dice_score(read("tissue") == 2, read("tissue_pred") > 0))
    out = {}
    if breast:
        out["breast_dice_vs_labels"] = float(np.mean(breast))
    if fgt:
        out["fgt_dice_vs_labels"] = float(np.mean(fgt))
    return out


def inside_true_breast(prepared: Path, synthetic: Path) -> float | None:
    """Fraction of synthetic-tumor voxels inside the background's true ``breast`` label.

    Args:
        prepared: the prepared store the backgrounds came from.
        synthetic: a synthetic store (each case names its background in ``source_case``).

    Returns:
        The fraction, or ``None`` when a background has no ``breast`` label (not a phantom) or no tumor voxel
        was placed.
    """
    from synbt_factory.store import CaseStore

    prepared_store, synthetic_store = CaseStore.open(prepared), CaseStore.open(synthetic)
    inside = total = 0
    for case_id in synthetic_store.case_ids():
        arrays, attrs = synthetic_store.read_case(case_id, ("synthetic_mask",))
        background = attrs.get("source_case")
        if background not in prepared_store or "breast" not in prepared_store.array_names(background):
            return None
        mask = arrays["synthetic_mask"] > 0
        inside += int((mask & (prepared_store.read_array(background, "breast") > 0)).sum())
        total += int(mask.sum())
    return inside / total if total else None
