"""The realism report of a synthetic store: do its tumors look like the real tumors they were drawn from?

:func:`realism_report` compares up to ``max_cases`` synthetic cases (their ``synthetic_mask``) with up to
``max_cases`` real tumors of the prepared store (their ``mask``), spread evenly over the sorted case ids:

- **enhancement**: post/pre inside the masks (:func:`~synbt_factory.evaluate.realism_figures.post_over_pre`):
  summaries, the Wasserstein-1 distance and the Kolmogorov–Smirnov statistic between the two
  distributions, and summaries by mask size;
- **contrast**: tumor against the surrounding FGT and fat, on post and on the subtraction
  (:func:`~synbt_factory.evaluate.realism_figures.tumor_contrast`; FGT from ``tissue_pred`` else the
  ``tissue`` labels' class 2, breast from ``breast_pred`` else ``breast``, of the background case);
- **footprint**: each synthetic case against its source background, read from the prepared store
  (:func:`~synbt_factory.evaluate.realism_figures.footprint`), and the medians over cases of sum|Δ|
  outside ÷ inside and of voxels changed by more than 0.02 farther than 3 mm ÷ mask voxels;
- **shape and place**: volume, elongation, sphericity, fraction inside the breast and FGT;
- **feature distance** (with a VQ-VAE checkpoint): the Fréchet distance of encoder features of
  tumor-centred crops (:mod:`synbt_factory.evaluate.feature_distance`) between half of the real tumors
  and as many synthetic ones, next to the distance between the two real halves (the floor);
- **detectability** (with a segmenter checkpoint trained on real cases): its Dice on synthetic tumors
  and on held-out real tumors, over the whole case and locally (within 10 mm of the tumor).

:func:`cheap_figures` computes enhancement and footprint only (seconds): what the quality gate of
``synbt generate`` checks. :func:`record_headline` puts the headline into the store's dataset card.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synbt_factory.evaluate.realism_figures import (
    by_size,
    footprint,
    post_over_pre,
    shape_figures,
    summary,
    tumor_contrast,
)
from synbt_factory.evaluate.realism_outputs import headline_text, record_headline, write_report
from synbt_factory.evaluate.realism_types import (
    RealismConfig,
    RealismReport,
    TumorFigures,
    case_spacing,
    json_ready,
    spread,
)
from synbt_factory.progress import ProgressFn, report
from synbt_factory.store import CaseStore, StoreError

__all__ = [
    "RealismConfig",
    "RealismReport",
    "cheap_figures",
    "headline_text",
    "json_ready",
    "real_store_of",
    "realism_report",
    "record_headline",
    "write_report",
]

log = logging.getLogger(__name__)

_MONTAGE_ROWS = 3


# ----------------------------------------------------------------------------- reading
def real_store_of(synthetic: str | Path) -> str | None:
    """The prepared store a synthetic store was generated from, as its card records it."""
    card = CaseStore.open(synthetic).attrs
    return (card.get("run_identity") or {}).get("prepared")


@dataclass
class _Tissue:
    fgt: np.ndarray | None
    breast: np.ndarray | None
    vessel: np.ndarray | None


def _tissue(store: CaseStore, case_id: str) -> _Tissue:
    """FGT (``tissue_pred``, else the ``tissue`` labels' class 2), breast (``breast_pred``, else ``breast``)
    and vessels (the ``tissue`` labels' class 1) of a prepared case; None where it has no such array."""
    names = set(store.array_names(case_id))
    labels = store.read_array(case_id, "tissue") if "tissue" in names else None
    fgt = None
    if "tissue_pred" in names:
        fgt = store.read_array(case_id, "tissue_pred") > 0
    elif labels is not None:
        fgt = labels == 2
    breast_name = next((b for b in ("breast_pred", "breast") if b in names), None)
    breast = store.read_array(case_id, breast_name) > 0 if breast_name else None
    return _Tissue(fgt=fgt, breast=breast, vessel=labels == 1 if labels is not None else None)


def _real_tumors(
    prepared: CaseStore, config: RealismConfig, views: list, notes: list[str], progress: ProgressFn | None
) -> list[TumorFigures]:
    """Figures of up to ``max_cases`` real tumors (cases with an empty mask are passed over)."""
    tumors: list[TumorFigures] = []
    ids = prepared.case_ids()
    # evenly spread first, then the rest in order, until enough cases with a tumor are found
    first = spread(ids, config.max_cases)
    order = first + [c for c in ids if c not in set(first)]
    for case_id in order:
        if len(tumors) >= config.max_cases:
            break
        arrays, attrs = prepared.read_case(case_id, ("image", "mask"))
        mask = arrays["mask"] > 0
        if not mask.any():
            continue
        tissue, spacing = _tissue(prepared, case_id), case_spacing(attrs)
        tumors.append(
            TumorFigures(
                case_id=case_id,
                ratio=post_over_pre(arrays["image"], mask),
                voxels=int(mask.sum()),
                contrast=tumor_contrast(
                    arrays["image"],
                    mask,
                    spacing,
                    fgt=tissue.fgt,
                    breast=tissue.breast,
                    vessel=tissue.vessel,
                    shell_mm=config.shell_mm,
                ),
                shape=shape_figures(mask, spacing, breast=tissue.breast, fgt=tissue.fgt),
            )
        )
        if len(views) < _MONTAGE_ROWS:
            views.append((f"real {case_id}", arrays["image"], mask, None))
        report(progress, len(tumors), config.max_cases, {})
    if not tumors:
        notes.append(f"{prepared.location} has no case with a tumor: nothing to compare with")
    return tumors


def _synthetic_tumors(
    store: CaseStore,
    prepared: CaseStore,
    case_ids: Sequence[str],
    config: RealismConfig,
    views: list,
    notes: list[str],
    *,
    full: bool,
    progress: ProgressFn | None,
) -> list[TumorFigures]:
    """Figures of synthetic tumors; ``full=False`` computes enhancement and footprint only."""
    tumors: list[TumorFigures] = []
    missing, mismatched = [], []
    for i, case_id in enumerate(case_ids, start=1):
        arrays, attrs = store.read_case(case_id, ("image", "mask", "synthetic_mask"))
        syn = arrays["synthetic_mask"] > 0
        if not syn.any():
            continue
        spacing, source = case_spacing(attrs), attrs.get("source_case")
        tissue, fp = _Tissue(None, None, None), None
        if source is not None and source in prepared:
            bg_attrs = prepared.case_attrs(source)
            recorded = attrs.get("source_sha256")
            if recorded and recorded != (bg_attrs.get("sha256") or {}).get("image"):
                mismatched.append(case_id)
            else:
                background = prepared.read_array(source, "image")
                fp = footprint(
                    arrays["image"], background, syn, spacing, threshold=config.change_threshold, far_mm=config.far_mm
                )
            if full:
                tissue = _tissue(prepared, source)
        else:
            missing.append(case_id)
        other = (arrays["mask"] > 0) & ~syn
        tumors.append(
            TumorFigures(
                case_id=case_id,
                ratio=post_over_pre(arrays["image"], syn),
                voxels=int(syn.sum()),
                contrast=tumor_contrast(
                    arrays["image"],
                    syn,
                    spacing,
                    fgt=tissue.fgt,
                    breast=tissue.breast,
                    other_tumor=other,
                    vessel=tissue.vessel,
                    shell_mm=config.shell_mm,
                )
                if full
                else {},
                shape=shape_figures(syn, spacing, breast=tissue.breast, fgt=tissue.fgt) if full else {},
                footprint=fp,
            )
        )
        if len(views) < _MONTAGE_ROWS:
            views.append(
                (f"{attrs.get('method', 'synthetic')} {case_id}", arrays["image"], other if other.any() else None, syn)
            )
        report(progress, i, len(case_ids), {})
    if missing:
        notes.append(
            f"footprint skipped for {len(missing)} case(s) whose background is not in {prepared.location} "
            f"(e.g. {missing[0]}): pass the prepared store they were drawn from as --real"
        )
    if mismatched:
        notes.append(
            f"footprint skipped for {len(mismatched)} case(s) whose background in {prepared.location} "
            f"differs from the one they were drawn on (sha256; e.g. {mismatched[0]})"
        )
    return tumors


# ----------------------------------------------------------------------------- sections
def _enhancement(real: list[TumorFigures], synthetic: list[TumorFigures]) -> dict[str, Any]:
    from scipy.stats import ks_2samp, wasserstein_distance

    r = [t.ratio for t in real if t.ratio is not None]
    s = [t.ratio for t in synthetic if t.ratio is not None]
    out: dict[str, Any] = {
        "post_over_pre_real": summary(r),
        "post_over_pre_synthetic": summary(s),
        "by_mask_voxels": {
            "real": by_size([t.ratio for t in real], [t.voxels for t in real]),
            "synthetic": by_size([t.ratio for t in synthetic], [t.voxels for t in synthetic]),
        },
    }
    if r and s:
        out["wasserstein_1"] = float(wasserstein_distance(r, s))
        out["ks_statistic"] = float(ks_2samp(r, s).statistic)
    return out


def _per_key(tumors: list[TumorFigures], attr: str) -> dict[str, Any]:
    keys = sorted({k for t in tumors for k in getattr(t, attr)})
    return {k: summary([getattr(t, attr).get(k) for t in tumors]) for k in keys}


def _footprint_section(synthetic: list[TumorFigures]) -> dict[str, Any]:
    fps = [t.footprint for t in synthetic if t.footprint is not None]
    if not fps:
        return {"n": 0}
    shells = sorted({k for f in fps for k in f.mean_abs_delta_by_shell}, key=_shell_order)
    return {
        "n": len(fps),
        "outside_over_inside": summary([f.outside_over_inside for f in fps]),
        "outside_over_inside_median": float(np.median([f.outside_over_inside for f in fps])),
        "far_changed_over_mask": summary([f.far_changed_over_mask for f in fps]),
        "far_changed_over_mask_median": float(np.median([f.far_changed_over_mask for f in fps])),
        "changed_outside": summary([f.changed_outside for f in fps]),
        "changed_outside_over_mask": summary([f.changed_outside_over_mask for f in fps]),
        "mean_abs_delta_inside": summary([f.mean_abs_delta_inside for f in fps]),
        "mean_abs_delta_by_shell_mm": {k: summary([f.mean_abs_delta_by_shell.get(k) for f in fps]) for k in shells},
        "per_case": {t.case_id: t.footprint.to_dict() for t in synthetic if t.footprint is not None},
    }


def _shell_order(name: str) -> float:
    return float(name[1:]) + 0.5 if name.startswith(">") else float(name.split("-")[0])


def _headline(real: list[TumorFigures], synthetic: list[TumorFigures], figures: dict[str, Any]) -> dict[str, Any]:
    r = [t.ratio for t in real if t.ratio is not None]
    s = [t.ratio for t in synthetic if t.ratio is not None]
    fp = figures.get("footprint", {})
    head: dict[str, Any] = {
        "n_synthetic": len(synthetic),
        "n_real": len(real),
        "synthetic_post_over_pre_median": float(np.median(s)) if s else None,
        "real_post_over_pre_mean": float(np.mean(r)) if r else None,
        "footprint_outside_over_inside_median": fp.get("outside_over_inside_median"),
        "footprint_far_changed_over_mask_median": fp.get("far_changed_over_mask_median"),
    }
    fd = figures.get("feature_distance") or {}
    if "frechet_distance" in fd:
        head["frechet_distance"], head["frechet_floor"] = fd["frechet_distance"], fd["frechet_floor"]
    det = figures.get("detectability") or {}
    if "dice_synthetic" in det:
        head["dice_synthetic"], head["dice_real"] = det["dice_synthetic"]["mean"], det["dice_real"]["mean"]
    return head


# ----------------------------------------------------------------------------- entry points
def _open_pair(synthetic: str | Path, real: str | Path | None) -> tuple[CaseStore, CaseStore]:
    store = CaseStore.open(synthetic)
    if "synthetic_mask" not in _first_arrays(store):
        raise StoreError(
            f"{synthetic} holds no synthetic cases (no 'synthetic_mask' array); give a store made by synbt generate"
        )
    if real is not None:
        return store, CaseStore.open(real)
    recorded = real_store_of(synthetic)
    if recorded is None:
        raise StoreError(f"{synthetic} does not record the prepared store it was drawn from; pass it with --real")
    try:
        return store, CaseStore.open(recorded)
    except StoreError as exc:
        raise StoreError(
            f"the prepared store {recorded} recorded in the card of {synthetic} cannot be opened "
            f"({exc}); pass it with --real"
        ) from exc


def _first_arrays(store: CaseStore) -> list[str]:
    ids = store.case_ids()
    if not ids:
        raise StoreError(f"{store.location} has no complete cases to report on")
    return store.array_names(ids[0])


def cheap_figures(
    synthetic: str | Path,
    real: str | Path | None = None,
    *,
    case_ids: Sequence[str] | None = None,
    config: RealismConfig | None = None,
) -> RealismReport:
    """Enhancement and footprint only: what the quality gate of ``synbt generate`` checks (seconds).

    Args:
        synthetic: synthetic store.
        real: prepared store of the backgrounds; None = the one the store's card records.
        case_ids: the synthetic cases to check (default: up to ``max_cases`` spread over the store).
        config: report settings.
    """
    config = config or RealismConfig()
    store, prepared = _open_pair(synthetic, real)
    notes: list[str] = []
    real_tumors = _real_tumors(prepared, config, [], notes, None)
    ids = list(case_ids) if case_ids is not None else spread(store.case_ids(), config.max_cases)
    syn = _synthetic_tumors(store, prepared, ids, config, [], notes, full=False, progress=None)
    figures = {"enhancement": _enhancement(real_tumors, syn), "footprint": _footprint_section(syn)}
    return RealismReport(
        str(synthetic), str(prepared.location), figures, _headline(real_tumors, syn, figures), tuple(notes)
    )


def realism_report(
    synthetic: str | Path,
    real: str | Path | None = None,
    *,
    config: RealismConfig | None = None,
    vqvae: Path | None = None,
    segmenter: Path | None = None,
    device: str = "cpu",
    progress: ProgressFn | None = None,
) -> RealismReport:
    """Every figure of the module docstring for a synthetic store against its prepared store.

    Args:
        synthetic: synthetic store (``synbt generate``).
        real: prepared store of the real cases; None = the one the store's card records.
        config: report settings.
        vqvae: VQ-VAE checkpoint for the feature distance (skipped, with a note, without one).
        segmenter: segmenter checkpoint trained on real cases, for detectability (skipped without one).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` for the networks.
        progress: ``(done, total, {})`` over the cases read.

    Raises:
        StoreError: a store is missing, holds no synthetic cases, or the prepared store is unknown.
        CheckpointError: a checkpoint cannot be loaded.
    """
    from synbt_factory.device import resolve_device

    config = config or RealismConfig()
    store, prepared = _open_pair(synthetic, real)
    dev = str(resolve_device(device))
    notes: list[str] = []
    real_views: list = []
    syn_views: list = []
    real_tumors = _real_tumors(prepared, config, real_views, notes, progress)
    ids = spread(store.case_ids(), config.max_cases)
    syn = _synthetic_tumors(store, prepared, ids, config, syn_views, notes, full=True, progress=progress)
    figures: dict[str, Any] = {
        "enhancement": _enhancement(real_tumors, syn),
        "contrast": {
            "real": _per_key(real_tumors, "contrast"),
            "synthetic": _per_key(syn, "contrast"),
            "shell_mm": list(config.shell_mm),
            "note": "post: tumor mean ÷ shell mean; sub (post − pre): tumor mean − shell mean",
        },
        "footprint": _footprint_section(syn),
        "shape": {"real": _per_key(real_tumors, "shape"), "synthetic": _per_key(syn, "shape")},
    }
    from synbt_factory.evaluate.realism_networks import detectability, feature_distance

    if vqvae is not None:
        figures["feature_distance"] = feature_distance(
            Path(vqvae), real_tumors, syn, prepared, store, config, dev, notes
        )
    else:
        notes.append(
            "feature distance skipped: pass --vqvae (a VQ-VAE trained on the real cases, e.g. the one "
            "the store was generated with)"
        )
    if segmenter is not None:
        figures["detectability"] = detectability(Path(segmenter), syn, prepared, store, config, dev, notes)
    else:
        notes.append("detectability skipped: pass --segmenter (a segmenter trained on real cases only)")
    figures["cases"] = {"synthetic": [t.case_id for t in syn], "real": [t.case_id for t in real_tumors]}
    for note in notes:
        log.debug("%s", note)
    return RealismReport(
        str(synthetic),
        str(prepared.location),
        figures,
        _headline(real_tumors, syn, figures),
        tuple(notes),
        tuple(real_views + syn_views),
    )
