"""One segmenter run of the evidence experiment: train (resumable), then score every test case of both families.

A run is ``(size, arm, seed)``. Every run uses the same network, crop, budget, learning rate and sampling
settings; only the synthetic store differs between arms, and the seed between repeats. Runs are independent
processes (one thread each): :func:`run_job` is what a worker executes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synbt_factory.experiments.evidence_config import EvidenceConfig

__all__ = ["RunJob", "run_job", "segment_config", "score_cases", "read_run_rows", "CASE_COLUMNS"]

log = logging.getLogger(__name__)

CASE_COLUMNS = ("arm", "size", "seed", "test_set", "case_id", "dice", "hd95", "msd", "pred_voxels", "truth_voxels")


@dataclass(frozen=True, kw_only=True)
class RunJob:
    """Everything a worker process needs for one run (picklable).

    Attributes:
        config: the experiment.
        size / arm / seed: which run.
        real / synthetic: prepared store of the size, synthetic store of the arm (None for ``real``).
        out: run folder.
        test_sets: ``{name: (prepared store, case ids)}`` scored after training.
        steps / val_every: optimizer steps and the length of one epoch in steps.
        learning_curve: validate every epoch (the budget runs); otherwise only at the end.
    """

    config: EvidenceConfig
    size: int
    arm: str
    seed: int
    real: str
    synthetic: str | None
    out: str
    test_sets: dict[str, tuple[str, tuple[str, ...]]]
    steps: int
    val_every: int
    learning_curve: bool = False


def segment_config(job: RunJob) -> Any:
    """The run's :class:`~synbt_factory.training.segmentation.SegTrainConfig`.

    One epoch is ``val_every × batch`` samples, so the learning curve (validating every epoch) and an arm
    (validating at its last epoch only) draw the same samples for the same seed.
    """
    from synbt_factory.data.mixing import MixConfig
    from synbt_factory.models.segmenters import SegmenterConfig
    from synbt_factory.training.segmentation import SegTrainConfig

    cfg = job.config
    crop = tuple(int(c) for c in cfg.seg_crop)
    epochs = math.ceil(job.steps / job.val_every)
    return SegTrainConfig(
        model=SegmenterConfig(name=cfg.seg_model, preset=cfg.seg_preset, patch_size=crop),  # type: ignore[arg-type]
        data=MixConfig(
            crop=crop,
            mix=0.0 if job.synthetic is None else cfg.mix,  # type: ignore[arg-type]
            samples_per_epoch=job.val_every * cfg.seg_batch_size,
        ),
        real=job.real,
        synthetic=job.synthetic,
        epochs=epochs,
        max_steps=job.steps,
        batch_size=cfg.seg_batch_size,
        lr=cfg.seg_lr,
        val_every_epochs=1 if job.learning_curve else epochs,
        seed=job.seed,
        split_seed=cfg.split_seed,
        log_every=job.val_every,
    )


def score_cases(
    model: Any, store_location: str, case_ids: tuple[str, ...], *, window: tuple[int, int, int], device: Any
) -> list[dict[str, Any]]:
    """Dice, HD95 and MSD (MedPy, mm) of the model's sliding-window prediction on each case.

    Returns:
        one dict per case: ``case_id``, ``dice``, ``hd95``, ``msd``, ``pred_voxels``, ``truth_voxels``.
    """
    from synbt_factory.data.mixing import load_case
    from synbt_factory.metrics import segmentation_metrics
    from synbt_factory.models.segmenters import predict_volume
    from synbt_factory.store import CaseStore

    store = CaseStore.open(store_location)
    rows = []
    for case_id in case_ids:
        image, mask, attrs = load_case(store, case_id)
        pred = predict_volume(model, image, window, overlap=0.25, sw_batch_size=2, device=device)
        m = segmentation_metrics(pred, mask, attrs["spacing"])
        rows.append(
            {
                "case_id": case_id,
                "dice": m.dice,
                "hd95": m.hd95,
                "msd": m.msd,
                "pred_voxels": int(pred.sum()),
                "truth_voxels": int(mask.sum()),
            }
        )
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    from synbt_factory.io import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CASE_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def run_job(job: RunJob) -> dict[str, Any]:
    """Train (resuming) and score one run; writes ``cases.csv`` then the marker ``done.json``; returns the marker.

    A run whose ``done.json`` exists is not redone.
    """
    import torch

    from synbt_factory.io import atomic_write_json
    from synbt_factory.training.segmentation import load_segmenter, train_segmenter

    out = Path(job.out)
    marker = out / "done.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    result = train_segmenter(segment_config(job), out / "train", device=job.config.device, resume=True)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    rows: list[dict[str, Any]] = []
    if job.test_sets:
        model, seg_cfg, _ = load_segmenter(result.last_checkpoint, device=job.config.device)
        for test_set, (location, ids) in job.test_sets.items():
            for row in score_cases(model, location, ids, window=seg_cfg.window, device=job.config.device):
                rows.append({"arm": job.arm, "size": job.size, "seed": job.seed, "test_set": test_set, **row})
        _write_csv(out / "cases.csv", rows)
    curve = [{"step": h["step"], "val_dice": h["val_dice"]} for h in result.history if h.get("event") == "val"]
    done = {
        "size": job.size,
        "arm": job.arm,
        "seed": job.seed,
        "steps": result.steps,
        "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "total_cpu_seconds": round(time.process_time() - c0, 1),
        "val_curve": curve,
        "cases_scored": len(rows),
    }
    atomic_write_json(marker, done)
    return done


def read_run_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``cases.csv`` with numbers parsed."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["size"], row["seed"] = int(row["size"]), int(row["seed"])
        for key in ("dice", "hd95", "msd"):
            row[key] = float(row[key])
        for key in ("pred_voxels", "truth_voxels"):
            row[key] = int(row[key])
    return rows
