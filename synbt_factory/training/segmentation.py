"""Segmenter training on real + synthetic cases (paper Sec. 2.3 and 3.1).

Dice + cross-entropy loss (MONAI ``DiceCELoss``), Adam at 1e-4, mini-batch 1 by default, the
checkpoint with the best validation Dice kept (validation on whole volumes with sliding-window
inference, first post-contrast phase), and resumable runs.

Run folder (:class:`~synbt_factory.training.runs.RunFolder`)::

    <out>/last.pt        model + optimizer + position + torch RNG state (resume point), atomic
    <out>/best.pt        model of the best validation Dice so far
    <out>/final.pt       model after the last step (as the other trainers write it)
    <out>/metrics.jsonl  one JSON object per logged event ("train" / "val") (and metrics.csv)
    <out>/config.json    the run's configuration

Every checkpoint holds the full :class:`SegTrainConfig` (``config``) so :func:`load_segmenter`
rebuilds the network with no guesswork. A resumed run may change only :data:`RESUMABLE_CHANGES`.
Weights are initialised from ``SeedSequence([seed, 0x5E6])``
(:func:`~synbt_factory.training.runs.seeded_torch_at`) and the loop runs under the run seed's ``segmenter-loop``
stream (:func:`~synbt_factory.training.runs.seeded_torch`); samples come from
:class:`~synbt_factory.data.mixing.MixedDataset`'s own per-sample streams.
:func:`~synbt_factory.models.segmenters.predict_volume` is the sliding-window inference.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from synbt_factory.checkpoint import load_checkpoint, rebuilding_from
from synbt_factory.config import config_from_dict, config_to_dict
from synbt_factory.data.mixing import (
    DEFAULT_VAL_FRACTION,
    MixConfig,
    MixedDataset,
    OnTheFly,
    SynTumorHook,
    case_splits,
    load_case,
)
from synbt_factory.device import resolve_device
from synbt_factory.models.segmenters import (
    SegmenterConfig,
    build_segmenter,
    check_spatial_size,
    predict_volume,
)
from synbt_factory.progress import ProgressFn, report
from synbt_factory.store import CaseStore
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
    "SegTrainConfig",
    "SegTrainResult",
    "LoadedSegmenter",
    "train_segmenter",
    "load_segmenter",
    "CHECKPOINT_KIND",
    "ONTHEFLY_CHOICES",
    "RESUMABLE_CHANGES",
]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "segmenter"
ONTHEFLY_CHOICES = ("syntumor", "custom")
#: Fields that may change between a run and its resumption (everything else must match).
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "num_workers", "log_every"})


@dataclass(frozen=True, kw_only=True)
class SegTrainConfig:
    """A segmentation training run.

    Args:
        model: the network (its ``patch_size`` must equal ``data.crop``).
        data: sampling, mixing and augmentation.
        real: prepared store location (training cases: split ``train``; validation: see
            :func:`synbt_factory.data.mixing.case_splits`).
        synthetic: generated store location, needed when ``data.mix > 0``.
        onthefly: ``"syntumor"`` (SynTumor insertion on ``data.onthefly_fraction`` of real samples),
            ``"custom"`` (a hook passed to :func:`train_segmenter`) or ``None``.
        epochs: passes of ``len(dataset)`` samples (paper: 300).
        max_steps: optional cap on optimizer steps (stops mid-epoch if reached).
        batch_size: samples per step (paper: 1).
        lr: Adam learning rate (paper: 1e-4).
        weight_decay: Adam weight decay.
        val_every_epochs: validate (and checkpoint) every this many epochs, and at the end.
        val_window: sliding-window size (X, Y, Z); ``None`` = ``data.crop``.
        val_overlap: sliding-window overlap fraction.
        sw_batch_size: windows per forward pass (>= 2 avoids a slow batch-1 3D conv path on CPU).
        max_val_cases: validate on at most this many cases (``None`` = all).
        val_fraction: share of the store's ``test`` cases used for validation when none is marked.
        split_seed: seed of that validation/test division (kept fixed across arms).
        seed: run seed (model initialisation and every sample).
        num_workers: DataLoader worker processes.
        amp: bf16 autocast on CUDA (ignored on CPU).
        log_every: steps between ``train`` lines in ``metrics.jsonl``.
    """

    model: SegmenterConfig
    data: MixConfig = field(default_factory=MixConfig)
    real: str
    synthetic: str | None = None
    onthefly: str | None = None
    epochs: int = 300
    max_steps: int | None = None
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    val_every_epochs: int = 1
    val_window: tuple[int, int, int] | None = None
    val_overlap: float = 0.25
    sw_batch_size: int = 2
    max_val_cases: int | None = None
    val_fraction: float = DEFAULT_VAL_FRACTION
    split_seed: int = 0
    seed: int = 0
    num_workers: int = 0
    amp: bool = True
    log_every: int = 10

    def __post_init__(self) -> None:
        if tuple(int(v) for v in self.model.patch_size) != tuple(int(v) for v in self.data.crop):
            raise ValueError(f"model.patch_size {self.model.patch_size} must equal data.crop {self.data.crop}")
        check_spatial_size(self.model, self.data.crop, what="data.crop")
        if self.val_window is not None:
            check_spatial_size(self.model, self.val_window, what="val_window")
        if not self.real:
            raise ValueError("real must name a prepared store")
        if self.data.mix > 0 and not self.synthetic:
            raise ValueError(f"data.mix={self.data.mix} needs synthetic (a generated store)")
        if self.onthefly is not None and self.onthefly not in ONTHEFLY_CHOICES:
            raise ValueError(f"onthefly must be one of {ONTHEFLY_CHOICES} or None, got {self.onthefly!r}")
        if self.data.onthefly_fraction > 0 and self.onthefly is None:
            raise ValueError("data.onthefly_fraction > 0 needs onthefly ('syntumor' or 'custom')")
        for name in ("epochs", "batch_size", "val_every_epochs", "sw_batch_size", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.max_val_cases is not None and self.max_val_cases < 0:
            raise ValueError(f"max_val_cases must be >= 0, got {self.max_val_cases}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.val_overlap < 1.0:
            raise ValueError(f"val_overlap must be in [0, 1), got {self.val_overlap}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")

    @property
    def window(self) -> tuple[int, int, int]:
        """Sliding-window size used for validation and evaluation."""
        return tuple(int(v) for v in (self.val_window or self.data.crop))  # type: ignore[return-value]


@dataclass(frozen=True)
class SegTrainResult:
    """Where a segmentation run ended.

    Args:
        out_dir: the run folder.
        best_checkpoint: its ``best.pt``.
        last_checkpoint: its ``last.pt``.
        steps: optimizer steps done.
        epochs_done: whole epochs done.
        best_val_dice: best validation Dice (NaN without validation cases).
        history: every logged event (``metrics.jsonl``'s records).
    """

    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    steps: int
    epochs_done: int
    best_val_dice: float
    history: list[dict[str, Any]]


def _init_model(config: SegTrainConfig) -> nn.Module:
    """The network with weights drawn from ``SeedSequence([seed, 0x5E6])`` (global RNG untouched; see
    :func:`~synbt_factory.training.runs.seeded_torch_at`)."""
    with seeded_torch_at(int(np.random.SeedSequence([config.seed, 0x5E6]).generate_state(1)[0])):
        return build_segmenter(config.model)


class LoadedSegmenter(NamedTuple):
    """A trained segmenter rebuilt from its checkpoint (unpacks as ``model, config, payload``).

    Attributes:
        model: the network in eval mode on the requested device.
        config: the :class:`SegTrainConfig` of its run.
        payload: the whole checkpoint (step, best validation Dice, history ...).
    """

    model: nn.Module
    config: SegTrainConfig
    payload: dict[str, Any]


def load_segmenter(path: Path, *, device: str | torch.device = "cpu") -> LoadedSegmenter:
    """Rebuild a trained segmenter from a checkpoint (``best.pt``, ``last.pt`` or ``final.pt``).

    Args:
        path: the checkpoint.
        device: where the model goes.

    Returns:
        :class:`LoadedSegmenter` ``(model, config, payload)``.

    Raises:
        CheckpointError: missing, corrupt, not a segmenter checkpoint, or its config and weights cannot rebuild
            the network.
    """
    payload = load_checkpoint(Path(path), kind=CHECKPOINT_KIND, map_location="cpu")
    with rebuilding_from(path, "segmenter"):
        config = config_from_dict(SegTrainConfig, payload["config"])
        model = build_segmenter(config.model)
        model.load_state_dict(payload["model"])
    model.to(device).eval()
    return LoadedSegmenter(model, config, payload)


def _validate(
    model: nn.Module, store: CaseStore, case_ids: Sequence[str], config: SegTrainConfig, device: torch.device
) -> float:
    from synbt_factory.metrics import dice_score

    if not case_ids:
        return float("nan")
    model.eval()
    scores = []
    for case_id in case_ids:
        image, mask, _ = load_case(store, case_id)
        pred = predict_volume(
            model,
            image,
            config.window,
            overlap=config.val_overlap,
            sw_batch_size=config.sw_batch_size,
            device=device,
            amp=config.amp,
        )
        scores.append(dice_score(pred, mask))
    model.train()
    return float(np.mean(scores))


def train_segmenter(
    config: SegTrainConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    device: str = "auto",
    onthefly_hook: OnTheFly | None = None,
    progress: ProgressFn | None = None,
) -> SegTrainResult:
    """Train (or resume training) a segmenter; see the module docstring for the run folder.

    Args:
        config: the run.
        out_dir: run folder (created once the stores opened).
        resume: continue from ``out_dir/last.pt`` (only :data:`RESUMABLE_CHANGES` may differ, so
            ``epochs``/``max_steps`` may grow); starts fresh when there is none. Without it an existing
            ``last.pt`` is an error.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        onthefly_hook: hook for ``config.onthefly == "custom"``; for ``"syntumor"`` one is built.
        progress: ``(step, total_steps, {"loss", "val_dice"})`` callback.

    Returns:
        :class:`SegTrainResult`.

    Raises:
        FileExistsError: ``out_dir`` holds a run and ``resume`` is off.
        ResumeConfigError: the resumed run's config changed outside :data:`RESUMABLE_CHANGES`.
    """
    from monai.losses import DiceCELoss
    from torch.utils.data import DataLoader, Subset

    run = RunFolder(out_dir, CHECKPOINT_KIND)
    out_dir = run.path
    dev = resolve_device(device)
    config_dict = config_to_dict(config)

    if config.onthefly == "syntumor" and onthefly_hook is None:
        onthefly_hook = SynTumorHook(config.real)
    if config.onthefly == "custom" and onthefly_hook is None:
        raise ValueError("config.onthefly is 'custom' but no onthefly_hook was given")

    store = CaseStore.open(config.real)
    splits = case_splits(store, val_fraction=config.val_fraction, split_seed=config.split_seed)
    val_ids = list(splits.val)
    if config.max_val_cases is not None:
        val_ids = val_ids[: config.max_val_cases]
    if not val_ids:
        log.warning("no validation cases in %s: best.pt will follow the latest checkpoint", config.real)
    dataset = MixedDataset(
        config.real,
        splits.train,
        config=config.data,
        seed=config.seed,
        synthetic=config.synthetic,
        onthefly=onthefly_hook,
    )
    out_dir.mkdir(parents=True, exist_ok=True)  # once the stores opened: a wrong --data leaves no empty run folder
    steps_per_epoch = math.ceil(len(dataset) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    model = _init_model(config).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    step, epoch, batches_done = 0, 0, 0
    best_dice, best_step = float("-inf"), -1
    history: list[dict[str, Any]] = []

    payload = run.open(resume=resume)
    if payload is not None:
        run.check_resume(payload["config"], config_dict, allowed=RESUMABLE_CHANGES)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        step, epoch, batches_done = int(payload["step"]), int(payload["epoch"]), int(payload["batches_done"])
        best_dice, best_step = float(payload["best_val_dice"]), int(payload["best_step"])
        history = list(payload["history"])
        log.info("resuming %s at step %d (epoch %d, batch %d)", out_dir, step, epoch, batches_done)
    metric_log = run.start_log(step if payload is not None else None)
    run.write_config(config_dict)
    log.info(
        "training %s (%s) on %d real cases%s, %d validation cases, %d steps on %s",
        config.model.name,
        config.model.preset,
        len(splits.train),
        f" + {len(dataset.synthetic_ids)} synthetic (mix {config.data.mix})" if config.synthetic else "",
        len(val_ids),
        total_steps,
        dev,
    )

    saved: int | None = None

    def payload_now(with_optimizer: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "step": step,
            "epoch": epoch,
            "batches_done": batches_done,
            "best_val_dice": best_dice,
            "best_step": best_step,
            "history": history,
        }
        if with_optimizer:  # the resume point: also the optimizer and the loop's torch RNG
            data["optimizer"] = optimizer.state_dict()
            data["rng"] = capture_rng_state()
        return data

    def save_last() -> None:
        run.save(run.last, payload_now(True), config=config_dict)

    def log_event(event: dict[str, Any]) -> None:
        history.append(event)
        metric_log.append_record(event)

    def validate_and_save() -> float:
        nonlocal best_dice, best_step, saved
        t0 = time.perf_counter()
        val_dice = _validate(model, store, val_ids, config, dev)
        improved = (not val_ids) or (math.isfinite(val_dice) and val_dice > best_dice)
        if improved:
            best_dice = val_dice if val_ids else best_dice
            best_step = step
        log_event(
            {
                "event": "val",
                "step": step,
                "epochs_done": epoch,
                "val_dice": val_dice,
                "val_cases": len(val_ids),
                "best": bool(improved),
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        if improved:
            run.save(run.best, payload_now(False), config=config_dict)
        save_last()
        saved = step
        return val_dice

    model.train()
    last_val = float("nan")
    last_loss = float("nan")
    window_losses: list[float] = []
    use_amp = config.amp and dev.type == "cuda"
    report(progress, step, total_steps, {})
    saved = step if run.has_run() else None
    with seeded_torch(config.seed, "segmenter-loop", dev), stop_on_ctrl_c() as stop:
        if payload is not None and "rng" in payload:
            restore_rng_state(payload["rng"])
        try:
            while epoch < config.epochs and step < total_steps:
                dataset.set_epoch(epoch)
                indices = range(batches_done * config.batch_size, len(dataset))
                loader = DataLoader(
                    Subset(dataset, list(indices)),
                    batch_size=config.batch_size,
                    shuffle=False,
                    num_workers=config.num_workers,
                    pin_memory=dev.type == "cuda",
                )
                for batch in loader:
                    image = batch["image"].to(dev, non_blocking=True)
                    label = batch["label"].to(dev, non_blocking=True)
                    optimizer.zero_grad(set_to_none=True)
                    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                        logits = model(image)
                    loss = loss_fn(logits.float(), label)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    batches_done += 1
                    last_loss = float(loss.detach())
                    window_losses.append(last_loss)
                    if step % config.log_every == 0:
                        log_event(
                            {"event": "train", "step": step, "epoch": epoch, "loss": float(np.mean(window_losses))}
                        )
                        window_losses = []
                    report(progress, step, total_steps, {"loss": last_loss, "val_dice": last_val})
                    if step >= total_steps:
                        break
                    if stop.requested:
                        save_last()
                        raise run.interrupted(step)
                if batches_done >= steps_per_epoch:
                    epoch += 1
                    batches_done = 0
                    if epoch % config.val_every_epochs == 0 or epoch >= config.epochs or step >= total_steps:
                        last_val = validate_and_save()
                        report(progress, step, total_steps, {"loss": last_loss, "val_dice": last_val})
                else:  # stopped mid-epoch by max_steps
                    last_val = validate_and_save()
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:
            raise run.interrupted(saved) from None
        if window_losses:
            log_event({"event": "train", "step": step, "epoch": epoch, "loss": float(np.mean(window_losses))})
        if not run.has_run():  # nothing was trained (already complete): still leave a resumable state
            validate_and_save()
    if not run.best.exists():
        run.save(run.best, payload_now(False), config=config_dict)
    if step >= total_steps or epoch >= config.epochs:
        run.save(run.final, payload_now(False), config=config_dict)
    metric_log.write_csv()
    return SegTrainResult(
        out_dir=out_dir,
        best_checkpoint=run.best,
        last_checkpoint=run.last,
        steps=step,
        epochs_done=epoch,
        best_val_dice=best_dice if math.isfinite(best_dice) else float("nan"),
        history=history,
    )
