"""Train the fibroglandular-tissue model on synthesised images only (paper Sec. 3.1, Fig. 4 b).

Each training patch is a new random-contrast pre/post image drawn from label maps
(:mod:`synbt_factory.tissue.data`, :mod:`synbt_factory.tissue.synth`): the real images are never
needed for training. Validation runs the model on real prepared images (held-out cases) and scores
FGT Dice against their ``tissue`` labels (:func:`synbt_factory.tissue.infer.evaluate_tissue`).

Run folder (:class:`~synbt_factory.training.runs.RunFolder`)::

    <out>/last.pt        model + optimizer + step + torch RNG state (resume point), atomic
    <out>/best.pt        best validation FGT Dice so far (or last when there is no validation)
    <out>/final.pt       the model after the last step (as the other trainers write it)
    <out>/metrics.jsonl  one JSON object per log / validation event (and metrics.csv)
    <out>/config.json    the run's configuration

A resumed run may change only :data:`RESUMABLE_CHANGES`. Weights are initialised from the run seed
itself and the loop runs under its ``tissue-loop`` stream
(:func:`~synbt_factory.training.runs.seeded_torch`); batches come from their own per-batch streams.

The configs live in :mod:`synbt_factory.tissue.config`, inference in :mod:`synbt_factory.tissue.infer`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synbt_factory.config import config_to_dict
from synbt_factory.device import resolve_device
from synbt_factory.models.tissue import build_tissue_model
from synbt_factory.progress import ProgressFn, report
from synbt_factory.tissue.config import TissueTrainConfig
from synbt_factory.tissue.data import LabelCase, TissueBatches, load_label_cases
from synbt_factory.tissue.infer import (
    CHECKPOINT_KIND,
    evaluate_tissue,
)
from synbt_factory.training.runs import (
    RunFolder,
    TrainingInterrupted,
    capture_rng_state,
    restore_rng_state,
    seeded_torch,
    seeded_torch_at,
    stop_on_ctrl_c,
)

__all__ = [
    "CHECKPOINT_KIND",
    "RESUMABLE_CHANGES",
    "TissueTrainResult",
    "train_tissue",
]

log = logging.getLogger(__name__)

#: May differ between a run and its continuation (``post`` only shapes inference).
RESUMABLE_CHANGES = frozenset({"steps", "val_every", "val_cases", "workers", "log_every", "post"})


@dataclass(frozen=True, kw_only=True)
class TissueTrainResult:
    """Where a tissue run ended.

    Args:
        best_path: its ``best.pt``.
        last_path: its ``last.pt``.
        steps: optimizer steps done.
        history: the events this call logged (``metrics.jsonl``'s new records).
        best_val_dice: best validation FGT Dice (``None`` without validation cases).
        final_path: its ``final.pt`` once the last step is done, else ``None``.
    """

    best_path: Path
    last_path: Path
    steps: int
    history: list[dict[str, Any]]
    best_val_dice: float | None
    final_path: Path | None = None


def _checkpoint_payload(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    config: TissueTrainConfig,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """A tissue checkpoint's entries; with ``optimizer`` (the resume point) also its state and the torch RNG."""
    payload: dict[str, Any] = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": step,
        "train_config": config_to_dict(config),
        "metrics": metrics,
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
        payload["rng"] = capture_rng_state()
    return payload


def _init_model(config: TissueTrainConfig) -> torch.nn.Module:
    """The U-Net with weights drawn from the run seed itself (global RNG untouched; see
    :func:`~synbt_factory.training.runs.seeded_torch_at`)."""
    with seeded_torch_at(config.seed):
        return build_tissue_model(config.model)


def train_tissue(
    labels: str | Path | list[LabelCase],
    out_dir: str | Path,
    config: TissueTrainConfig | None = None,
    *,
    val: str | Path | list[LabelCase] | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> TissueTrainResult:
    """Train the tissue model on images synthesised from label maps.

    Args:
        labels: prepared store / dataset folder (see :func:`~synbt_factory.tissue.data.load_label_cases`) or
            loaded cases. From a store, training uses the ``train`` split (all cases if none is marked) and
            validation the others.
        out_dir: run folder.
        config: the run.
        val: validation cases with real images (default: the held-out cases of ``labels`` when
            it is a prepared store).
        resume: continue from ``out_dir/last.pt`` when it exists and its config differs at most
            in :data:`RESUMABLE_CHANGES` (so a run can be extended with more steps); another config is an
            error. Without it an existing ``last.pt`` is an error (a finished run is never overwritten).
        device: ``auto`` | ``cpu`` | ``cuda``.
        progress: ``(step, steps, {"loss": …, "val_dice": …})``.

    Returns:
        :class:`TissueTrainResult`.

    Raises:
        FileExistsError: ``out_dir`` holds a run and ``resume`` is off.
        ResumeConfigError: the resumed run's config changed outside :data:`RESUMABLE_CHANGES`.
    """
    config = config or TissueTrainConfig()
    dev = resolve_device(device)
    run = RunFolder(out_dir, CHECKPOINT_KIND)
    ckpt = run.open(resume=resume, map_location=dev)
    if ckpt is not None:
        run.check_resume(ckpt.get("train_config", {}), config_to_dict(config), allowed=RESUMABLE_CHANGES)
    run.path.mkdir(parents=True, exist_ok=True)
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

    model = _init_model(config).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start = 0
    best: float | None = None
    history: list[dict[str, Any]] = []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if "optimizer" in ckpt:
            optimizer.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["step"])
        best = ckpt.get("metrics", {}).get("best_val_dice")
        log.info("resuming tissue training at step %d", start)
    metric_log = run.start_log(start if ckpt is not None else None)
    run.write_config(config_to_dict(config))

    from monai.losses import DiceCELoss

    # batch=True: Dice over the whole batch, so a class absent from one patch (vessels) does not
    # add a constant loss of 1 per patch
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s + start) / config.steps)))
    )
    batches = TissueBatches(train_cases, config, start_batch=start)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, num_workers=config.workers, persistent_workers=False, pin_memory=dev.type == "cuda"
    )
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
        run.save(
            path,
            _checkpoint_payload(model, optimizer if with_opt else None, step, config, metrics),
            config=config_to_dict(config.model),
        )

    def log_event(row: dict[str, Any]) -> None:
        history.append(row)
        metric_log.append_record(row)

    model.train()
    saved: int | None = start if start else None
    with seeded_torch(config.seed, "tissue-loop", dev), stop_on_ctrl_c() as stop:
        if ckpt is not None and "rng" in ckpt:
            restore_rng_state(ckpt["rng"])
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
                    metrics: dict[str, float] = {"loss": float(np.mean(running[-config.log_every :]))}
                    if step % config.log_every == 0 or step == config.steps:
                        log_event(
                            {
                                "event": "train",
                                "step": step,
                                "loss": metrics["loss"],
                                "lr": optimizer.param_groups[0]["lr"],
                                "elapsed_s": time.perf_counter() - t0,
                            }
                        )
                    is_last = step >= config.steps
                    if (config.val_every and step % config.val_every == 0) or is_last:
                        vd = validate()
                        log_event({"event": "val", "step": step, "val_dice_fgt": vd})
                        if vd is not None:
                            metrics["val_dice"] = vd
                        improved = vd is not None and (best is None or vd > best)
                        if improved:
                            best = vd
                        save(run.last, {"best_val_dice": best, "loss": metrics["loss"]}, True)
                        saved = step
                        if improved or (vd is None and is_last) or not run.best.is_file():
                            save(run.best, {"val_dice_fgt": vd, "loss": metrics["loss"]}, False)
                        if is_last:
                            save(run.final, {"val_dice_fgt": vd, "loss": metrics["loss"]}, False)
                    report(progress, step, config.steps, metrics)
                    if is_last:
                        break
                    if stop.requested:
                        if saved != step:
                            save(run.last, {"best_val_dice": best, "loss": metrics["loss"]}, True)
                        raise run.interrupted(step)
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:
            raise run.interrupted(saved) from None
    metric_log.write_csv()
    return TissueTrainResult(
        best_path=run.best,
        last_path=run.last,
        steps=step,
        history=history,
        best_val_dice=best,
        final_path=run.final if run.final.is_file() else None,
    )
