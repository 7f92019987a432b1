"""Evaluation of trained VQ-VAEs on held-out prepared cases (paper Fig. 4a and Sec. 2.1).

For each case (pre-contrast + first post-contrast phase): patch-wise encode → chunked quantise
→ whole-volume (or tiled) decode, then PSNR and SSIM per channel, the grid-artifact score of
the reconstruction (and of the real image, as the reference level), and the code histogram.
``grid_score`` compares the steps across patch boundaries with the steps across the other
latent-cell boundaries (:func:`~synbt_factory.evaluate.quality.grid_artifact_score` with
``cell`` = the compression), so the decoder's cell-periodic texture does not count as a seam;
``grid_score_all_steps`` is the same against every nearby step. A seam can be a step (score > 1) or
a blurred band (score < 1); ``grid_departure`` = |grid_score − 1| is the artifact's size either way.
With a patch-stage checkpoint as well, the same is done with the patch-only model, and a PNG
like Fig. 4a is drawn: real | patch-only | patch-to-volume, post-contrast top, pre-contrast bottom.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synbt_factory.data.volumes import PreparedVolumes, pad_to_multiple, select_cases
from synbt_factory.evaluate.quality import channel_quality, grid_artifact_score
from synbt_factory.figures import axial, content_box, hide_ticks, most_tumor_slice, new_figure, save_figure
from synbt_factory.models.quantizer import code_histogram, codebook_usage
from synbt_factory.models.vqvae import PatchVolumeVQVAE, load_vqvae
from synbt_factory.progress import ProgressFn, report
from synbt_factory.store import CaseStore

__all__ = ["VQVAEEvalConfig", "evaluate_vqvae", "reconstruct_volume", "save_comparison_figure"]

log = logging.getLogger(__name__)

CHANNEL_NAMES = ("pre", "post")


@dataclass(frozen=True, kw_only=True)
class VQVAEEvalConfig:
    """What to evaluate and how to decode.

    Args:
        splits: ``split`` values of the evaluated cases (default: ``"test"``).
        case_ids: explicit cases instead of ``splits``.
        max_cases: evaluate at most this many (first in sorted order); ``None`` = all.
        tiled: decode with overlapping latent tiles instead of one pass.
        tile: latent tile edge for tiled decoding.
        overlap: tile overlap fraction.
        patch_batch: patches per encoder call.
        ssim_win: SSIM window edge.
        figure_case: case drawn in the figure (default: the first evaluated).
    """

    splits: tuple[str | None, ...] = ("test",)
    case_ids: tuple[str, ...] | None = None
    max_cases: int | None = None
    tiled: bool = False
    tile: int = 16
    overlap: float = 0.5
    patch_batch: int = 4
    ssim_win: int = 7
    figure_case: str | None = None

    def __post_init__(self) -> None:
        if self.max_cases is not None and self.max_cases < 1:
            raise ValueError(f"max_cases must be >= 1 or None, got {self.max_cases}")
        if self.tile < 1:
            raise ValueError(f"tile must be >= 1, got {self.tile}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.patch_batch < 1:
            raise ValueError(f"patch_batch must be >= 1, got {self.patch_batch}")
        if self.ssim_win < 3:
            raise ValueError(f"ssim_win must be >= 3, got {self.ssim_win}")


@torch.no_grad()
def reconstruct_volume(
    model: PatchVolumeVQVAE, image: np.ndarray, *, config: VQVAEEvalConfig, device: torch.device
) -> tuple[np.ndarray, torch.Tensor]:
    """(C, X, Y, Z) image → (C, X, Y, Z) float32 reconstruction and (x, y, z) code indices.

    The image is zero-padded to a multiple of the compression and the result cropped back.
    """
    shape = image.shape[1:]
    x = torch.from_numpy(pad_to_multiple(image, model.downsample_factor)[None]).to(device)
    tile_kwargs: dict[str, Any] = (
        {"tile": config.tile, "overlap": config.overlap, "out_device": "cpu"} if config.tiled else {}
    )
    recon, idx = model.reconstruct(x, tiled=config.tiled, patch_batch=config.patch_batch, **tile_kwargs)
    recon = recon[0, :, : shape[0], : shape[1], : shape[2]].float().cpu().numpy()
    return recon, idx[0].cpu()


def _case_metrics(recon: np.ndarray, image: np.ndarray, patch: int, cell: int, ssim_win: int) -> dict[str, Any]:
    from synbt_factory.synthesis.placement import body_mask

    q = channel_quality(recon, image, ssim_win=ssim_win, mask=body_mask(image))
    out: dict[str, Any] = {}
    for c, name in enumerate(CHANNEL_NAMES[: image.shape[0]]):
        out[f"psnr_{name}"] = q["psnr"][c]
        out[f"psnr_body_{name}"] = q["psnr_masked"][c]  # inside the body: padding cannot inflate it
        out[f"ssim_{name}"] = q["ssim"][c]
    out["grid_score"] = _safe_grid(recon, patch, cell)
    out["grid_departure"] = abs(out["grid_score"] - 1.0)
    out["grid_score_all_steps"] = _safe_grid(recon, patch, 1)
    return out


def _safe_grid(volume: np.ndarray, patch: int, cell: int) -> float:
    try:
        return grid_artifact_score(volume, patch=patch, cell=cell)
    except ValueError as exc:
        log.warning("grid score undefined: %s", exc)
        return float("nan")


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if key in r and np.isfinite(r[key])]
    return float(np.mean(values)) if values else float("nan")


def evaluate_vqvae(
    ckpt: Path,
    data: Path | str,
    out: Path,
    *,
    patch_ckpt: Path | None = None,
    config: VQVAEEvalConfig | None = None,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Evaluate a VQ-VAE checkpoint (and optionally the patch-only one) on held-out cases.

    Writes ``out/vqvae_metrics.json`` (per case and mean) and ``out/vqvae_reconstruction.png``.

    Args:
        ckpt: the model to evaluate (normally the volume-stage ``final.pt``).
        data: prepared store.
        out: output folder.
        patch_ckpt: patch-stage checkpoint for the patch-only comparison column.
        config: cases and decoding options.
        device: torch device.
        progress: ``(done, total, metrics)`` per case.

    Returns:
        The metrics dict written to JSON.
    """
    config = config or VQVAEEvalConfig()
    device = torch.device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, _, model_cfg = load_vqvae(ckpt, device)
    patch_model = load_vqvae(patch_ckpt, device)[0] if patch_ckpt is not None else None
    cell = model_cfg.downsample_factor  # seams are compared with the other latent-cell boundaries
    store = CaseStore.open(data)
    case_ids = select_cases(store, splits=config.splits, case_ids=config.case_ids)
    if config.max_cases is not None:
        case_ids = case_ids[: config.max_cases]
    volumes = PreparedVolumes(store, case_ids)
    figure_case = config.figure_case or case_ids[0]
    if figure_case not in case_ids:
        raise ValueError(f"figure_case {figure_case} is not among the evaluated cases")
    counts = torch.zeros(model_cfg.num_embeddings, dtype=torch.long)
    patch_counts = torch.zeros(model_cfg.num_embeddings, dtype=torch.long) if patch_model is not None else None
    rows: list[dict[str, Any]] = []
    figure: dict[str, np.ndarray] = {}
    for i, case_id in enumerate(case_ids):
        image = volumes.read(case_id, phase=0)
        recon, idx = reconstruct_volume(model, image, config=config, device=device)
        counts += code_histogram(idx, model_cfg.num_embeddings)
        row: dict[str, Any] = {"case_id": case_id, "real_grid_score": _safe_grid(image, model_cfg.patch_size, cell)}
        row.update(_case_metrics(recon, image, model_cfg.patch_size, cell, config.ssim_win))
        if patch_model is not None:
            p_recon, p_idx = reconstruct_volume(patch_model, image, config=config, device=device)
            patch_counts += code_histogram(p_idx, model_cfg.num_embeddings)  # type: ignore[operator]
            row.update(
                {
                    f"patch_only_{k}": v
                    for k, v in _case_metrics(p_recon, image, model_cfg.patch_size, cell, config.ssim_win).items()
                }
            )
            if case_id == figure_case:
                figure["patch-only"] = p_recon
        if case_id == figure_case:
            figure["real"] = image
            figure["patch-to-volume" if patch_model is not None else "reconstruction"] = recon
        rows.append(row)
        report(progress, i + 1, len(case_ids), {k: v for k, v in row.items() if isinstance(v, float)})
        log.debug("%s: %s", case_id, {k: round(v, 4) for k, v in row.items() if isinstance(v, float)})

    keys = [k for k in rows[0] if k != "case_id"]
    summary: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "patch_checkpoint": str(patch_ckpt) if patch_ckpt else None,
        "data": str(data),
        "decode": "tiled" if config.tiled else "one-pass",
        "num_cases": len(rows),
        "mean": {k: _mean(rows, k) for k in keys},
        "codebook": codebook_usage(counts, model_cfg.num_embeddings, is_counts=True),
        "cases": rows,
    }
    if patch_counts is not None:
        summary["patch_only_codebook"] = codebook_usage(patch_counts, model_cfg.num_embeddings, is_counts=True)
    (out / "vqvae_metrics.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    order = ["real", "patch-only", "patch-to-volume", "reconstruction"]
    save_comparison_figure(
        {k: figure[k] for k in order if k in figure},
        out / "vqvae_reconstruction.png",
        title=figure_case,
        z=most_tumor_slice(volumes.tumor_voxels(figure_case), figure["real"].shape[-1]),
    )
    return summary


def save_comparison_figure(
    columns: dict[str, np.ndarray], path: Path, *, title: str = "", z: int | None = None
) -> Path:
    """Fig. 4a-style PNG: one column per entry of ``columns`` ((C, X, Y, Z) volumes), rows post / pre.

    Shows axial slice ``z`` (last axis: superior–inferior in RAS order; the middle one when None; the
    evaluation passes the slice holding most of the tumor) of each volume in the display convention of
    :mod:`synbt_factory.figures` (anterior up), all with the first column's (the real image's) display range
    per row, cropped to the real image's non-zero extent (zero padding around a small volume is cut away).

    Returns:
        The path written.
    """
    names = list(columns)
    first = columns[names[0]]
    z = first.shape[-1] // 2 if z is None else z
    box = content_box(first)
    rows = [(1, "post-contrast"), (0, "pre-contrast")] if first.shape[0] > 1 else [(0, "image")]
    fig, axes = new_figure(len(rows), len(names), figsize=(3.2 * len(names), 3.2 * len(rows)))
    for r, (ch, row_name) in enumerate(rows):
        ref = axial(first[ch], z, box)
        vmin, vmax = float(np.percentile(ref, 0.5)), float(np.percentile(ref, 99.5))
        for c, name in enumerate(names):
            ax = axes[r][c]
            ax.imshow(axial(columns[name][ch], z, box), cmap="gray", vmin=vmin, vmax=vmax)
            hide_ticks(ax)
            if r == 0:
                ax.set_title(name)
            if c == 0:
                ax.set_ylabel(row_name)
    if title:
        fig.suptitle(f"{title} (axial slice z={z})")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
