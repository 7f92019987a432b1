"""The paper's Table 1: segmenters trained on patches or volumes, with real data only or + synthetic tumors.

Arms are ``"<crop>-<data>"``: crop ``patch`` (small crops, e.g. 64³ — the paper's "patch-*" rows)
or ``volume`` (large crops, 128×192×192 in the paper), data ``real`` (real cases only),
``syntumor`` (+ SynTumor cases) or ``synbt`` (+ SynBT cases). The paper's rows per model are
``patch-real`` (patch-X), ``volume-real`` (Volume-X), ``volume-syntumor`` (SynTumor-X) and
``volume-synbt`` (SynBT-X), the default. Synthetic arms read a generated store (``synbt generate``)
at ``mix``; the SynTumor arm can instead synthesise on the fly (``syntumor_onthefly``). An arm
whose store is missing is skipped and the table says why.

Each arm trains (:func:`synbt_factory.training.segmentation.train_segmenter`, resumable) and is
evaluated on the test split (:func:`synbt_factory.evaluate.segmentation_eval.evaluate_segmenter`,
sliding window = the arm's crop). A finished arm (its ``eval/summary.json`` exists) is reused, so
re-running the experiment continues where it stopped.

Output folder::

    table1.md          Method | DSC | 95HD (mm) | MSD (mm), mean ± std over test cases
    table1.json        the same figures, settings and skipped arms
    table1_cases.csv   every test case of every arm (method, model, arm, case_id, dice, hd95, msd)
    <arm>/<model>/train/   run folder (checkpoints, metrics.jsonl)
    <arm>/<model>/eval/    metrics.csv, summary.json
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synbt_factory.config import config_to_dict
from synbt_factory.data.mixing import DEFAULT_VAL_FRACTION, MixConfig
from synbt_factory.experiments.tables import render_table1
from synbt_factory.models.segmenters import DISPLAY_NAMES, PRESETS, SEGMENTER_NAMES, SegmenterConfig
from synbt_factory.progress import ProgressFn, report

__all__ = [
    "Table1Config",
    "Table1Result",
    "ARM_CROPS",
    "ARM_DATA",
    "DEFAULT_ARMS",
    "table1",
    "method_name",
    "render_table1",
]

log = logging.getLogger(__name__)

ARM_CROPS = ("patch", "volume")
ARM_DATA = ("real", "syntumor", "synbt")
DEFAULT_ARMS = ("patch-real", "volume-real", "volume-syntumor", "volume-synbt")


@dataclass(frozen=True, kw_only=True)
class Table1Config:
    """The Table 1 experiment.

    Args:
        real: prepared store (train / validation / test splits from its ``split`` attributes).
        models: segmenters (``unet``, ``dynunet``, ``swinunetr``).
        preset: network size preset (``tiny``, ``small``, ``paper``).
        arms: ``"<patch|volume>-<real|syntumor|synbt>"`` rows per model, in table order.
        syntumor_store: generated SynTumor store (``None`` or missing → on the fly or skipped).
        synbt_store: generated SynBT store (``None`` or missing → skipped).
        syntumor_onthefly: without a SynTumor store, insert SynTumor tumors on the fly into a
            ``mix`` fraction of real samples instead of skipping the arm.
        mix: fraction of training samples that are synthetic in synthetic arms.
        patch_crop: (X, Y, Z) crop of ``patch`` arms (paper: 64³).
        volume_crop: (X, Y, Z) crop of ``volume`` arms (paper: 192×192×128).
        epochs / max_steps / samples_per_epoch / batch_size / lr / val_every_epochs / max_val_cases:
            training (see :class:`synbt_factory.training.segmentation.SegTrainConfig`).
        max_test_cases: evaluate at most this many test cases (``None`` = all).
        overlap / sw_batch_size: sliding-window inference.
        tumor_prob / augment: training crops and augmentation.
        val_fraction / split_seed: the validation/test division of the store's test cases.
        seed: run seed shared by every arm (same initialisation and real samples across arms).
        device: ``auto``, ``cpu`` or ``cuda``.
        empty_penalty: distance rule for empty masks (``diagonal`` or ``nan``).
        mama_mia: add the MAMA-MIA challenge score to the table.
        num_workers: DataLoader workers.
    """

    real: str
    models: tuple[str, ...] = SEGMENTER_NAMES
    preset: str = "small"
    arms: tuple[str, ...] = DEFAULT_ARMS
    syntumor_store: str | None = None
    synbt_store: str | None = None
    syntumor_onthefly: bool = False
    mix: float = 0.5
    patch_crop: tuple[int, int, int] = (64, 64, 64)
    volume_crop: tuple[int, int, int] = (192, 192, 128)
    epochs: int = 300
    max_steps: int | None = None
    samples_per_epoch: int | None = None
    batch_size: int = 1
    lr: float = 1e-4
    val_every_epochs: int = 1
    max_val_cases: int | None = None
    max_test_cases: int | None = None
    overlap: float = 0.25
    sw_batch_size: int = 2
    tumor_prob: float = 0.5
    augment: bool = True
    val_fraction: float = DEFAULT_VAL_FRACTION
    split_seed: int = 0
    seed: int = 0
    device: str = "auto"
    empty_penalty: str = "diagonal"
    mama_mia: bool = False
    num_workers: int = 0

    def __post_init__(self) -> None:
        if not self.real:
            raise ValueError("real must name a prepared store")
        if not self.models or any(m not in SEGMENTER_NAMES for m in self.models):
            raise ValueError(f"models must be a non-empty subset of {SEGMENTER_NAMES}, got {self.models}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if not self.arms:
            raise ValueError("arms must not be empty")
        for arm in self.arms:
            crop, _, data = arm.partition("-")
            if crop not in ARM_CROPS or data not in ARM_DATA:
                raise ValueError(f"arms entries must be '<{'|'.join(ARM_CROPS)}>-<{'|'.join(ARM_DATA)}>', got {arm!r}")
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms has duplicates: {self.arms}")
        if not 0.0 < self.mix <= 1.0:
            raise ValueError(f"mix must be in (0, 1], got {self.mix}")
        for name in ("patch_crop", "volume_crop"):
            value = getattr(self, name)
            if len(value) != 3 or any(int(v) < 8 for v in value):
                raise ValueError(f"{name} must be three sizes >= 8, got {value}")
        if self.max_test_cases is not None and self.max_test_cases < 1:
            raise ValueError(f"max_test_cases must be >= 1, got {self.max_test_cases}")
        if self.empty_penalty not in ("diagonal", "nan"):
            raise ValueError(f"empty_penalty must be 'diagonal' or 'nan', got {self.empty_penalty!r}")
        # the per-arm configs validate the remaining fields when they are built


@dataclass(frozen=True)
class Table1Result:
    """Rows of the table (one per model × arm, in order), the files written."""

    rows: list[dict[str, Any]]
    markdown_path: Path
    json_path: Path
    cases_csv_path: Path


def method_name(arm: str, model: str) -> str:
    """The paper's row label: ``patch-UNet``, ``Volume-UNet``, ``SynTumor-UNet``, ``SynBT-UNet``."""
    crop, _, data = arm.partition("-")
    net = DISPLAY_NAMES[model]
    tag = {"syntumor": "SynTumor", "synbt": "SynBT"}.get(data)
    if crop == "volume":
        return f"{tag}-{net}" if tag else f"Volume-{net}"
    return f"patch-{tag}-{net}" if tag else f"patch-{net}"


def _arm_data(config: Table1Config, data: str) -> tuple[dict[str, Any] | None, str | None]:
    """Training-data settings of an arm, or ``(None, reason)`` when it must be skipped."""
    if data == "real":
        return {"synthetic": None, "mix": 0.0, "onthefly": None, "onthefly_fraction": 0.0}, None
    store = config.syntumor_store if data == "syntumor" else config.synbt_store
    if store and Path(store).exists():
        return {"synthetic": store, "mix": config.mix, "onthefly": None, "onthefly_fraction": 0.0}, None
    if data == "syntumor" and config.syntumor_onthefly:
        return {"synthetic": None, "mix": 0.0, "onthefly": "syntumor", "onthefly_fraction": config.mix}, None
    key = f"{data}_store"
    if not store:
        return None, f"skipped: no {key} in the config (build one with `synbt generate --method {data}`)"
    return None, f"skipped: {key} {store} does not exist (build it with `synbt generate --method {data}`)"


def _train_config(config: Table1Config, arm: str, model: str, data: dict[str, Any]):  # -> SegTrainConfig
    from synbt_factory.training.segmentation import SegTrainConfig

    crop_kind = arm.partition("-")[0]
    crop = tuple(int(v) for v in (config.patch_crop if crop_kind == "patch" else config.volume_crop))
    return SegTrainConfig(
        model=SegmenterConfig(name=model, preset=config.preset, patch_size=crop),  # type: ignore[arg-type]
        data=MixConfig(
            crop=crop,  # type: ignore[arg-type]
            mix=data["mix"],
            onthefly_fraction=data["onthefly_fraction"],
            tumor_prob=config.tumor_prob,
            augment=config.augment,
            samples_per_epoch=config.samples_per_epoch,
        ),
        real=config.real,
        synthetic=data["synthetic"],
        onthefly=data["onthefly"],
        epochs=config.epochs,
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        lr=config.lr,
        val_every_epochs=config.val_every_epochs,
        sw_batch_size=config.sw_batch_size,
        val_overlap=config.overlap,
        max_val_cases=config.max_val_cases,
        val_fraction=config.val_fraction,
        split_seed=config.split_seed,
        seed=config.seed,
        num_workers=config.num_workers,
    )


def table1(config: Table1Config, out_dir: Path, *, progress: ProgressFn | None = None) -> Table1Result:
    """Run every model × arm (train, then evaluate on the test split) and write the table.

    Args:
        config: the experiment.
        out_dir: output folder (see the module docstring); re-running continues a stopped experiment.
        progress: ``(arms done, arms total, {"dice": last arm's mean Dice})`` callback.
    """
    from synbt_factory.evaluate.segmentation_eval import EvalConfig, evaluate_segmenter
    from synbt_factory.training.segmentation import train_segmenter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table1_config.json").write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    plan = [(model, arm) for model in config.models for arm in config.arms]
    rows: list[dict[str, Any]] = []
    case_rows: list[dict[str, Any]] = []
    report(progress, 0, len(plan), {})
    for done, (model, arm) in enumerate(plan, start=1):
        method = method_name(arm, model)
        data, reason = _arm_data(config, arm.partition("-")[2])
        row: dict[str, Any] = {"method": method, "model": model, "arm": arm}
        if data is None:
            log.warning("%s %s", method, reason)
            rows.append({**row, "skipped": reason})
            report(progress, done, len(plan), {})
            continue
        arm_dir = out_dir / arm / model
        summary_path = arm_dir / "eval" / "summary.json"
        train_cfg = _train_config(config, arm, model, data)
        eval_cfg = EvalConfig(
            split="test",
            overlap=config.overlap,
            sw_batch_size=config.sw_batch_size,
            empty_penalty=config.empty_penalty,
            mama_mia=config.mama_mia,
            max_cases=config.max_test_cases,
        )
        # an arm is reused only when it was trained and evaluated with exactly these settings
        settings = {"train": config_to_dict(train_cfg), "eval": config_to_dict(eval_cfg)}
        settings_path = arm_dir / "eval" / "settings.json"
        finished = (
            summary_path.exists() and settings_path.exists() and json.loads(settings_path.read_text()) == settings
        )
        if finished:
            log.info("%s: reusing %s", method, summary_path)
            summary = json.loads(summary_path.read_text())
            per_case = _read_cases(arm_dir / "eval" / "metrics.csv")
        else:
            log.info("%s: training in %s", method, arm_dir / "train")
            result = train_segmenter(train_cfg, arm_dir / "train", device=config.device, resume=True)
            log.info("%s: evaluating %s", method, result.best_checkpoint)
            ev = evaluate_segmenter(
                result.best_checkpoint, config.real, config=eval_cfg, out_dir=arm_dir / "eval", device=config.device
            )
            settings_path.write_text(json.dumps(settings, indent=2) + "\n")
            summary = json.loads(summary_path.read_text())
            per_case = ev.rows
        row.update(
            {
                "metrics": summary["metrics"],
                "n_cases": summary["n_cases"],
                "mama_mia_score": summary.get("mama_mia_score"),
                "crop": list(train_cfg.data.crop),
                "synthetic": data["synthetic"],
                "onthefly": data["onthefly"],
                "mix": data["mix"] or data["onthefly_fraction"],
            }
        )
        rows.append(row)
        for r in per_case:
            case_rows.append(
                {
                    "method": method,
                    "model": model,
                    "arm": arm,
                    **{k: r.get(k) for k in ("case_id", "dice", "hd95", "msd", "pred_voxels", "truth_voxels")},
                }
            )
        dice = summary["metrics"]["dice"]["mean"]
        report(progress, done, len(plan), {"dice": float(dice) if dice is not None else float("nan")})

    notes = [
        f"preset {config.preset}; patch crop {tuple(config.patch_crop)}, volume crop {tuple(config.volume_crop)} "
        f"(X, Y, Z voxels at 1 mm); {config.epochs} epochs"
        + (f" × {config.samples_per_epoch} samples" if config.samples_per_epoch else "")
        + f", batch {config.batch_size}, lr {config.lr:g}"
        + (f", at most {config.max_steps} steps" if config.max_steps else "")
        + f"; best validation checkpoint; synthetic fraction {config.mix}; seed {config.seed}.",
        "Empty masks: both empty → DSC 1, distances 0; one empty → DSC 0, distances = "
        + ("the image diagonal (mm)." if config.empty_penalty == "diagonal" else "NaN, left out of the means."),
    ]
    n_cases = sorted({r["n_cases"] for r in rows if not r.get("skipped")})
    if n_cases:
        notes.append(f"Test cases per arm: {', '.join(str(n) for n in n_cases)}.")
    markdown = render_table1(rows, notes=notes, mama_mia=config.mama_mia)
    md_path = out_dir / "table1.md"
    md_path.write_text(markdown)
    json_path = out_dir / "table1.json"
    json_path.write_text(json.dumps({"config": config_to_dict(config), "rows": rows}, indent=2, default=str) + "\n")
    csv_path = out_dir / "table1_cases.csv"
    with open(csv_path, "w", newline="") as fh:
        cols = ["method", "model", "arm", "case_id", "dice", "hd95", "msd", "pred_voxels", "truth_voxels"]
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(case_rows)
    return Table1Result(rows=rows, markdown_path=md_path, json_path=json_path, cases_csv_path=csv_path)


def _read_cases(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh)]
