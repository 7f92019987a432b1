"""``synbt demo``: the whole SynBT method, end to end, on the embedded procedural phantom.

One call runs every stage of the paper on a few phantom cases with small budgets::

    phantom → prepare → VQ-VAE (patch stage, then volume stage) → VQ-VAE evaluation (Fig. 4a-like PNG)
    → latent diffusion → tissue model (+ tissue_pred in the prepared store) → tumor bank
    → synthetic stores (SynTumor and SynBT; SynBT stops at the quality gate when its first batch is far from real)
    → realism report of both stores against the real tumors → PNG previews
    → segmenters trained on real only / real + synthetic (same budget and seed) → test-split table

Every step is a small function of :class:`DemoRun`. A step writes its outputs, then a marker
``<out>/steps/<name>.done.json`` (outputs relative to ``<out>``, seconds, finish time); a rerun
skips marked steps up to the first unmarked one, which runs, and so do all steps after it (each
resumes through the library call underneath where it can: prepare, the trainings and generation
continue where they stopped, so redoing a finished later step costs little). ``<out>/demo_config.json``
pins the configuration and seed: a folder cannot be resumed with other settings.

The budgets are far too small for meaningful numbers; the demo shows that every piece runs
and where its artifacts land. For real runs use the individual ``synbt`` commands.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synbt_factory.config import config_to_dict
from synbt_factory.progress import ProgressFn

__all__ = [
    "DEMO_PRESETS",
    "DEMO_STEPS",
    "DemoConfig",
    "DemoError",
    "DemoResult",
    "ProgressFactory",
    "StepRecord",
    "demo_preset",
    "run_demo",
]

log = logging.getLogger(__name__)

#: ``factory(description)`` → a context manager yielding the progress callback of one loop (or ``None``).
ProgressFactory = Callable[[str], AbstractContextManager[ProgressFn | None]]

#: Step names in execution order (segmentation steps follow, one per arm, then ``eval_table``).
DEMO_STEPS: tuple[str, ...] = (
    "phantom",
    "prepare",
    "vqvae_patch",
    "vqvae_volume",
    "vqvae_eval",
    "diffusion",
    "tissue",
    "bank",
    "generate_syntumor",
    "generate_synbt",
    "realism",
    "previews",
)
SEG_ARMS: tuple[str, ...] = ("real", "synbt", "syntumor")
MARKER_VERSION = 1


class DemoError(RuntimeError):
    """A demo step failed; ``step`` names it. Finished steps are kept: fix the cause and rerun to resume."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step {step!r} failed: {message}")
        self.step = step


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Budgets of a demo run (everything else comes from the library presets named here).

    Args:
        name: preset name (recorded in the run folder).
        phantom_size: phantom preset (:data:`synbt_factory.phantom.PRESETS`): ``tiny`` or ``small``.
        n_cases: phantom cases (about 20 % go to the test split, of which a third validates).
        healthy_fraction: phantom cases without a tumor (0: every case has one, as in MAMA-MIA; a
            healthy test case scores Dice 0 as soon as the segmenter predicts a voxel, which swamps a 3-case table).
        fov_mm: prepared field of view (X, Y, Z) in mm = voxels at 1 mm; the phantom preset's size.
        workers: parallel workers for phantom writing, preparation and generation.
        generators: ``pretrained`` installs the VQ-VAE and denoiser weights shipped with the package
            (:mod:`synbt_factory.pretrained`, sha256-checked; trained on another phantom draw, so every demo case
            is unseen); ``scratch`` trains them here with the budgets below.
        pretrained_set: the shipped set used by ``pretrained`` (its phantom size and field of view must match).
        guidance: mask guidance of the SynBT sampler (1 = the paper's sampler; the shipped denoiser, trained on
            latent crops smaller than the volume, is used at the CPU recipe's 1.5).
        vqvae_preset: VQ-VAE model/train preset (``synbt_factory.training.vqvae.train_presets``).
        vqvae_patch_steps: patch-stage steps (all weights, random patches); the discriminator joins at
            80 % of them (the paper's 200k of 250k).
        vqvae_volume_steps: volume-stage steps (decoder only, volume crops).
        vqvae_eval_cases: held-out cases scored by the VQ-VAE evaluation.
        diffusion_preset: denoiser model/train preset.
        diffusion_steps: diffusion training steps.
        tissue_preset: tissue-model preset (``TissueTrainConfig.preset``).
        tissue_steps: tissue-model training steps.
        n_generate: synthetic cases per method.
        ddim_steps: DDIM steps of the SynBT sampler (paper: 10).
        generate_batch_size: cases per SynBT sampler call.
        seg_preset: segmenter width preset (U-Net).
        seg_crop: segmentation training crop and sliding window (X, Y, Z) voxels.
        seg_epochs: segmentation epochs per arm.
        seg_samples_per_epoch: samples per epoch; steps per arm = ``seg_epochs × seg_samples_per_epoch``.
        seg_lr: Adam learning rate of the segmenters (paper: 1e-4 over 300 epochs; the demo's few
            hundred steps need a larger one).
        seg_mix: fraction of synthetic samples in the arms trained with synthetic data.
        seg_arms: arms to train: ``real`` (always first), ``synbt``, ``syntumor``.
        preview_cases: rows per preview montage.
    """

    name: str
    phantom_size: str = "tiny"
    n_cases: int = 24
    healthy_fraction: float = 0.0
    fov_mm: tuple[int, int, int] = (64, 64, 48)
    workers: int = 2
    generators: str = "pretrained"
    pretrained_set: str = "phantom_tiny"
    guidance: float = 1.5
    vqvae_preset: str = "tiny"
    vqvae_patch_steps: int = 2000
    vqvae_volume_steps: int = 100
    vqvae_eval_cases: int = 2
    diffusion_preset: str = "tiny"
    diffusion_steps: int = 300
    tissue_preset: str = "tiny"
    tissue_steps: int = 120
    n_generate: int = 8
    ddim_steps: int = 10
    generate_batch_size: int = 4
    seg_preset: str = "tiny"
    seg_crop: tuple[int, int, int] = (48, 48, 48)
    seg_epochs: int = 4
    seg_samples_per_epoch: int = 60
    seg_lr: float = 1e-3
    seg_mix: float = 0.5
    seg_arms: tuple[str, ...] = ("real", "synbt", "syntumor")
    preview_cases: int = 3

    def __post_init__(self) -> None:
        from synbt_factory.phantom import PRESETS as PHANTOM_PRESETS

        if not self.name:
            raise ValueError("name must be non-empty")
        if self.phantom_size not in PHANTOM_PRESETS:
            raise ValueError(f"phantom_size must be one of {sorted(PHANTOM_PRESETS)}, got {self.phantom_size!r}")
        if self.n_cases < 4:
            raise ValueError(f"n_cases must be >= 4 (train and test cases are needed), got {self.n_cases}")
        if not 0.0 <= self.healthy_fraction < 0.5:
            raise ValueError(f"healthy_fraction must be in [0, 0.5), got {self.healthy_fraction}")
        if self.generators not in ("pretrained", "scratch"):
            raise ValueError(f"generators must be 'pretrained' or 'scratch', got {self.generators!r}")
        if self.generators == "pretrained" and (self.phantom_size, tuple(self.fov_mm)) != PRETRAINED_PHANTOM.get(
                self.pretrained_set):
            raise ValueError(f"the shipped weights {self.pretrained_set!r} were trained on the phantom "
                             f"{PRETRAINED_PHANTOM.get(self.pretrained_set)} (size, field of view), not "
                             f"{(self.phantom_size, tuple(self.fov_mm))}; train the generators with --from-scratch")
        if not self.guidance >= 0.0:
            raise ValueError(f"guidance must be >= 0 (1 = off), got {self.guidance}")
        if len(self.fov_mm) != 3 or any(int(f) < 32 for f in self.fov_mm):
            raise ValueError(f"fov_mm must be three sizes >= 32, got {self.fov_mm}")
        for name in (
            "workers",
            "vqvae_patch_steps",
            "vqvae_volume_steps",
            "vqvae_eval_cases",
            "diffusion_steps",
            "tissue_steps",
            "n_generate",
            "ddim_steps",
            "generate_batch_size",
            "seg_epochs",
            "seg_samples_per_epoch",
            "preview_cases",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.seg_crop) != 3 or any(int(c) < 8 for c in self.seg_crop):
            raise ValueError(f"seg_crop must be three sizes >= 8, got {self.seg_crop}")
        if any(int(c) > int(f) for c, f in zip(self.seg_crop, self.fov_mm, strict=True)):
            raise ValueError(f"seg_crop {self.seg_crop} must fit in fov_mm {self.fov_mm}")
        if not 0.0 < self.seg_lr < 1.0:
            raise ValueError(f"seg_lr must be in (0, 1), got {self.seg_lr}")
        if not 0.0 < self.seg_mix <= 1.0:
            raise ValueError(f"seg_mix must be in (0, 1], got {self.seg_mix}")
        if not self.seg_arms or self.seg_arms[0] != "real" or len(set(self.seg_arms)) != len(self.seg_arms):
            raise ValueError(f"seg_arms must start with 'real' and not repeat, got {self.seg_arms}")
        unknown = [a for a in self.seg_arms if a not in SEG_ARMS]
        if unknown:
            raise ValueError(f"seg_arms has unknown arms {unknown}; known: {SEG_ARMS}")

    @property
    def seg_steps(self) -> int:
        """Optimizer steps per segmentation arm."""
        return self.seg_epochs * self.seg_samples_per_epoch

    def step_names(self) -> tuple[str, ...]:
        """Every step of this configuration, in order."""
        return (*DEMO_STEPS, *(f"segment_{arm}" for arm in self.seg_arms), "eval_table")


#: Phantom (size, field of view) each shipped weight set was trained on.
PRETRAINED_PHANTOM: dict[str, tuple[str, tuple[int, int, int]]] = {"phantom_tiny": ("tiny", (64, 64, 48))}

#: ``tiny``: minutes on 2 CPU cores (24 cases of 64×64×48 mm), generators from the shipped weights.
#: ``small``: the phantom's ``small`` size (128×128×80 mm), generators trained here with longer budgets;
#: a GPU makes it practical.
DEMO_PRESETS: dict[str, DemoConfig] = {
    "tiny": DemoConfig(name="tiny"),
    "small": DemoConfig(
        name="small",
        generators="scratch",
        guidance=1.0,
        phantom_size="small",
        n_cases=24,
        fov_mm=(128, 128, 80),
        vqvae_preset="small",
        vqvae_patch_steps=4000,
        vqvae_volume_steps=300,
        diffusion_preset="small",
        diffusion_steps=2000,
        tissue_preset="small",
        tissue_steps=400,
        n_generate=16,
        generate_batch_size=4,
        seg_preset="small",
        seg_crop=(64, 64, 64),
        seg_epochs=10,
        seg_samples_per_epoch=30,
        preview_cases=4,
    ),
}


#: What ``--from-scratch`` changes in a preset that ships weights: the README's CPU recipe, the one the shipped
#: weights were trained with (about 35 min on 2 CPU cores instead of seconds).
FROM_SCRATCH: dict[str, dict[str, Any]] = {
    "tiny": {"generators": "scratch", "vqvae_preset": "cpu", "vqvae_patch_steps": 30_000, "vqvae_volume_steps": 500,
             "diffusion_preset": "cpu", "diffusion_steps": 2500},
}


def demo_preset(preset: str, /, *, from_scratch: bool = False, **changes: Any) -> DemoConfig:
    """The named :data:`DEMO_PRESETS` entry, with ``changes`` applied (validated).

    Args:
        preset: ``tiny`` or ``small``.
        from_scratch: train the generators instead of installing the shipped weights (:data:`FROM_SCRATCH`).
    """
    if preset not in DEMO_PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose one of {', '.join(DEMO_PRESETS)}")
    base = DEMO_PRESETS[preset]
    if from_scratch:
        base = dataclasses.replace(base, **FROM_SCRATCH.get(preset, {"generators": "scratch"}))
    return dataclasses.replace(base, **changes)


@dataclass(frozen=True)
class StepRecord:
    """One step of a run: its outputs (absolute paths), seconds it took when it ran, whether this call skipped it."""

    name: str
    seconds: float
    skipped: bool
    outputs: dict[str, Path]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoResult:
    """What a demo run produced.

    Attributes:
        out: the run folder.
        steps: every step in order (``skipped`` when an earlier call had finished it).
        table_rows: the evaluation table rows (method, arm, metrics summary).
        wall_seconds: seconds this call took.
    """

    out: Path
    steps: list[StepRecord]
    table_rows: list[dict[str, Any]]
    wall_seconds: float

    def step(self, name: str) -> StepRecord:
        for record in self.steps:
            if record.name == name:
                return record
        raise KeyError(name)

    def artifact(self, step: str, key: str) -> Path:
        return self.step(step).outputs[key]


@contextlib.contextmanager
def _no_progress(_: str) -> Iterator[None]:
    yield None


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class DemoRun:
    """The steps of one demo run in folder ``out``; each ``step_<name>`` returns ``(outputs, info)``.

    Layout of ``out``::

        demo_config.json        the config and seed (a rerun must match)
        steps/<name>.done.json  markers of finished steps
        phantom/                MAMA-MIA-layout phantom, phantom_preview.png
        prepared.zarr           prepared store (+ tissue_pred / breast_pred after ``tissue``)
        vqvae/patch, vqvae/volume, vqvae/eval   checkpoints, metrics, vqvae_reconstruction.png
        diffusion/              denoiser checkpoints, cached latents
        tissue/                 tissue-model checkpoints
        bank.zarr               tumor templates
        synthetic_syntumor.zarr, synthetic_synbt.zarr
        previews/               PNG montages
        segment/<arm>/train, segment/<arm>/eval
        eval_table.md / .csv / .json
    """

    def __init__(self, out: Path, config: DemoConfig, *, device: str, seed: int,
                 progress_factory: ProgressFactory) -> None:
        self.out = Path(out)
        self.config = config
        self.device = device
        self.seed = seed
        self.progress = progress_factory

    # ------------------------------------------------------------------ paths
    def path(self, relative: str) -> Path:
        return self.out / relative

    @property
    def prepared(self) -> Path:
        return self.path("prepared.zarr")

    @property
    def bank(self) -> Path:
        return self.path("bank.zarr")

    def synthetic(self, method: str) -> Path:
        return self.path(f"synthetic_{method}.zarr")

    def run_step(self, name: str) -> tuple[dict[str, str], dict[str, Any]]:
        """Run step ``name`` (one of :meth:`DemoConfig.step_names`): (outputs relative to ``out``, info)."""
        if name.startswith("segment_"):
            return self.segment(name.removeprefix("segment_"))
        fn = getattr(self, f"step_{name}", None)
        if fn is None:
            raise ValueError(f"unknown demo step {name!r}")
        return fn()

    # ------------------------------------------------------------------ steps
    def step_phantom(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Procedural phantom in MAMA-MIA layout, and a PNG of a few of its cases."""
        from synbt_factory.phantom import write_phantom, write_preview

        cfg = self.config
        with self.progress("phantom cases") as bar:
            ids = write_phantom(
                self.path("phantom"),
                n=cfg.n_cases,
                seed=self.seed,
                size=cfg.phantom_size,
                healthy_fraction=cfg.healthy_fraction,
                workers=cfg.workers,
                progress=(lambda done, total: bar(done, total, {})) if bar is not None else None,
            )
        write_preview(self.path("phantom"), self.path("phantom/phantom_preview.png"), max_cases=cfg.preview_cases)
        return ({"dataset": "phantom", "preview": "phantom/phantom_preview.png"},
                {"cases": len(ids), "headline": f"{len(ids)} cases ({cfg.phantom_size})"})

    def step_prepare(self) -> tuple[dict[str, str], dict[str, Any]]:
        """1 mm RAS crops normalised by the pre-contrast 99.5th percentile (resumable)."""
        from synbt_factory.data.prepare import PrepareConfig, prepare_dataset

        with self.progress("prepare") as bar:
            result = prepare_dataset(
                self.path("phantom"),
                self.prepared,
                config=PrepareConfig(fov_mm=tuple(int(f) for f in self.config.fov_mm)),  # type: ignore[arg-type]
                workers=self.config.workers,
                progress=bar,
            )
        if result.failed:
            listed = "; ".join(f"{k}: {v}" for k, v in sorted(result.failed.items()))
            raise RuntimeError(f"{len(result.failed)} phantom case(s) could not be prepared: {listed}")
        n = len(result.prepared) + len(result.skipped)
        return ({"prepared": "prepared.zarr"},
                {"prepared": len(result.prepared), "skipped": len(result.skipped), "headline": f"{n} cases"})

    # ------------------------------------------------------------------ configs (no IO)
    def vqvae_configs(self, stage: str) -> tuple[Any, Any]:
        """(VQVAEConfig, VQVAETrainConfig) of one stage: the library preset with the demo's budget."""
        from synbt_factory.training.vqvae import train_presets

        steps = self.config.vqvae_patch_steps if stage == "patch" else self.config.vqvae_volume_steps
        model_cfg, train_cfg = train_presets(self.config.vqvae_preset, stage)
        adversarial = stage == "patch" and train_cfg.adv_start_step < train_cfg.steps
        return model_cfg, dataclasses.replace(
            train_cfg,
            steps=steps,
            save_every=max(1, steps // 4),
            log_every=max(1, min(train_cfg.log_every, steps)),
            # the discriminator joins at 80 % of the budget (the paper's 200k of 250k) where the preset trains one
            adv_start_step=int(0.8 * steps) if adversarial else train_cfg.adv_start_step,
        )

    def diffusion_configs(self) -> tuple[Any, Any]:
        """(DiffusionConfig, DiffusionTrainConfig): the library preset with the demo's budget."""
        from synbt_factory.training.diffusion import diffusion_train_preset

        model_cfg, train_cfg = diffusion_train_preset(self.config.diffusion_preset)
        steps = self.config.diffusion_steps
        return model_cfg, dataclasses.replace(
            train_cfg, steps=steps, save_every=max(1, steps // 3), log_every=max(1, min(train_cfg.log_every, steps))
        )

    def tissue_config(self) -> Any:
        """TissueTrainConfig: the library preset with the demo's budget and seed."""
        from synbt_factory.tissue.train import TissueTrainConfig

        return TissueTrainConfig.preset(self.config.tissue_preset, steps=self.config.tissue_steps, seed=self.seed)

    def generate_config(self, method: str) -> Any:
        """GenerateConfig of one method; both methods share seed, so case i has the same background and mask."""
        from synbt_factory.generate import GenerateConfig

        cfg = self.config
        return GenerateConfig(n=cfg.n_generate, seed=self.seed, method=method, batch_size=cfg.generate_batch_size,
                              workers=cfg.workers, background_split="train")

    def segment_config(self, arm: str) -> Any:
        """SegTrainConfig of one arm: same network, budget, seed and split for every arm; only the data differ."""
        from synbt_factory.data.mixing import MixConfig
        from synbt_factory.models.segmenters import SegmenterConfig
        from synbt_factory.training.segmentation import SegTrainConfig

        cfg = self.config
        crop = tuple(int(c) for c in cfg.seg_crop)
        return SegTrainConfig(
            model=SegmenterConfig(name="unet", preset=cfg.seg_preset, patch_size=crop),  # type: ignore[arg-type]
            data=MixConfig(crop=crop, mix=0.0 if arm == "real" else cfg.seg_mix,  # type: ignore[arg-type]
                           samples_per_epoch=cfg.seg_samples_per_epoch),
            real=str(self.prepared),
            synthetic=None if arm == "real" else str(self.synthetic(arm)),
            epochs=cfg.seg_epochs,
            lr=cfg.seg_lr,
            val_every_epochs=1,
            seed=self.seed,
            split_seed=self.seed,
            log_every=max(1, min(10, cfg.seg_samples_per_epoch)),
        )

    def _install_pretrained(self, component: str, dest: str) -> tuple[dict[str, str], dict[str, Any]]:
        """Copy one shipped, sha256-checked checkpoint to where the trained one would be."""
        from synbt_factory.pretrained import install_pretrained, pretrained_set

        name = self.config.pretrained_set
        sha = install_pretrained(name, component, self.path(dest))
        made_by = pretrained_set(name).manifest.get("made_by", "scripts/train_demo_weights.sh")
        return ({"checkpoint": dest},
                {"pretrained": name, "sha256": sha, "made_by": made_by,
                 "headline": f"shipped weights {name}/{component} (sha256 {sha[:12]}…)"})

    def _vqvae_stage(self, stage: str, init: Path | None) -> tuple[dict[str, str], dict[str, Any]]:
        from synbt_factory.training.vqvae import train_vqvae

        if self.config.generators == "pretrained":
            return self._install_pretrained(f"vqvae_{stage}", f"vqvae/{stage}/final.pt")
        model_cfg, train_cfg = self.vqvae_configs(stage)
        out = self.path(f"vqvae/{stage}")
        with self.progress(f"VQ-VAE {stage} stage") as bar:
            result = train_vqvae(
                self.prepared,
                out,
                train_config=train_cfg,
                model_config=model_cfg,
                init=init,
                resume=True,
                device=self.device,
                seed=self.seed,
                progress=bar,
            )
        rel = result.final_checkpoint.relative_to(self.out)
        metrics = {k: float(v) for k, v in result.metrics.items()}
        headline = f"{result.steps} steps, L1 {metrics['l1']:.3f}" if "l1" in metrics else f"{result.steps} steps"
        return ({"checkpoint": str(rel), "metrics": f"vqvae/{stage}/metrics.csv"},
                {"steps": result.steps, **metrics, "headline": headline})

    def step_vqvae_patch(self) -> tuple[dict[str, str], dict[str, Any]]:
        """VQ-VAE stage 1: encoder, codebook and decoder on random patches (paper Sec. 2.1)."""
        return self._vqvae_stage("patch", None)

    def step_vqvae_volume(self) -> tuple[dict[str, str], dict[str, Any]]:
        """VQ-VAE stage 2: decoder only, on volume crops, from the patch-stage weights."""
        init = self.path("vqvae/patch/final.pt")
        return self._vqvae_stage("volume", init)

    def step_vqvae_eval(self) -> tuple[dict[str, str], dict[str, Any]]:
        """PSNR/SSIM/grid score of patch-only vs patch-to-volume decoding on held-out cases (Fig. 4a-like)."""
        from synbt_factory.evaluate.vqvae_eval import VQVAEEvalConfig, evaluate_vqvae

        with self.progress("VQ-VAE evaluation") as bar:
            summary = evaluate_vqvae(
                self.path("vqvae/volume/final.pt"),
                self.prepared,
                self.path("vqvae/eval"),
                patch_ckpt=self.path("vqvae/patch/final.pt"),
                config=VQVAEEvalConfig(splits=("test",), max_cases=self.config.vqvae_eval_cases),
                device=self.device,
                progress=bar,
            )
        mean = {k: float(v) for k, v in summary["mean"].items() if isinstance(v, (int, float))}
        keep = ("psnr_post", "ssim_post", "grid_score", "patch_only_psnr_post", "patch_only_grid_score")
        info: dict[str, Any] = {k: mean[k] for k in keep if k in mean}
        if "psnr_post" in info and "patch_only_psnr_post" in info:
            info["headline"] = (f"PSNR post {info['psnr_post']:.1f} dB "
                                f"(patch-only {info['patch_only_psnr_post']:.1f}), {summary['num_cases']} cases")
        return {"figure": "vqvae/eval/vqvae_reconstruction.png", "metrics": "vqvae/eval/vqvae_metrics.json"}, info

    def step_diffusion(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Mask-conditioned latent diffusion on the VQ-VAE latents of the tumor cases (Sec. 2.2)."""
        from synbt_factory.training.diffusion import train_diffusion_from_store

        if self.config.generators == "pretrained":
            return self._install_pretrained("diffusion", "diffusion/final.pt")
        model_cfg, train_cfg = self.diffusion_configs()
        # one bar for both loops (encoding the cases, then training): nested live displays are fragile
        with self.progress("diffusion (encode cases, then train)") as bar:
            result = train_diffusion_from_store(
                self.path("vqvae/volume/final.pt"),
                self.prepared,
                self.path("diffusion"),
                model_config=model_cfg,
                train_config=train_cfg,
                resume=True,
                device=self.device,
                seed=self.seed,
                progress=bar,
                encode_progress=bar,
            )
        rel = result.final_checkpoint.relative_to(self.out)
        metrics = {k: float(v) for k, v in result.metrics.items()}
        headline = f"{result.steps} steps" + (f", loss {metrics['loss']:.3f}" if "loss" in metrics else "")
        return {"checkpoint": str(rel)}, {"steps": result.steps, **metrics, "headline": headline}

    def step_tissue(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Tissue model trained on images synthesised from label maps; its FGT/breast maps go into the store."""
        from synbt_factory.tissue.train import add_tissue_to_store, train_tissue

        cfg = self.tissue_config()
        with self.progress("tissue model") as bar:
            result = train_tissue(self.prepared, self.path("tissue"), cfg, device=self.device, resume=True,
                                  progress=bar)
        with self.progress("tissue maps → prepared store") as bar:
            written = add_tissue_to_store(result.best_path, self.prepared, bar, device=self.device)
        fractions = list(written["fgt_fraction"].values())
        info: dict[str, Any] = {"steps": result.steps, "cases_written": written["written"],
                                "cases_skipped": written["skipped"]}
        if result.best_val_dice is not None:
            info["val_dice_fgt"] = float(result.best_val_dice)
        if fractions:
            info["mean_fgt_fraction"] = float(sum(fractions) / len(fractions))
        info.update(self._tissue_agreement())
        if "breast_dice_vs_labels" in info:
            info["headline"] = (f"breast Dice {info['breast_dice_vs_labels']:.2f}, "
                                f"FGT Dice {info['fgt_dice_vs_labels']:.2f} vs phantom labels")
            if info["breast_dice_vs_labels"] < 0.5:
                log.warning(
                    "the tissue model's breast maps agree poorly with the phantom's labels (mean Dice %.2f): "
                    "placement reads them, so synthetic tumors may land outside the breast (see previews/compare.png)",
                    info["breast_dice_vs_labels"],
                )
        return {"checkpoint": str(result.best_path.relative_to(self.out))}, info

    def _tissue_agreement(self) -> dict[str, float]:
        """Mean Dice of the predicted breast / FGT maps against the phantom's own labels (all cases)."""
        import numpy as np

        from synbt_factory.store import CaseStore
        from synbt_factory.tissue.train import dice

        store = CaseStore.open(self.prepared)
        breast, fgt = [], []
        for case_id in store.case_ids():
            names = set(store.array_names(case_id))

            def read(name: str, case_id: str = case_id) -> np.ndarray:
                return store.read_array(case_id, name)

            if {"breast", "breast_pred"} <= names:
                breast.append(dice(read("breast") > 0, read("breast_pred") > 0))
            if {"tissue", "tissue_pred"} <= names:
                fgt.append(dice(read("tissue") == 2, read("tissue_pred") > 0))
        out = {}
        if breast:
            out["breast_dice_vs_labels"] = float(np.mean(breast))
        if fgt:
            out["fgt_dice_vs_labels"] = float(np.mean(fgt))
        return out

    def step_bank(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Tumor-mask templates from the training cases' expert masks."""
        from synbt_factory.synthesis.bank import build_bank

        with self.progress("tumor bank") as bar:
            bank = build_bank(self.prepared, self.bank, splits=("train",), overwrite=True, progress=bar)
        return {"bank": "bank.zarr"}, {"templates": len(bank), "headline": f"{len(bank)} templates"}

    def _generate(self, method_name: str) -> tuple[dict[str, str], dict[str, Any]]:
        from synbt_factory.generate import run_generate
        from synbt_factory.generate.methods import SynTumorMethod
        from synbt_factory.generate.synbt_method import SynBTMethod
        from synbt_factory.store.verify import verify_store

        cfg = self.config
        if method_name == "synbt":
            method: Any = SynBTMethod.from_checkpoints(
                self.path("vqvae/volume/final.pt"),
                self.path("diffusion/final.pt"),
                device=self.device,
                steps=cfg.ddim_steps,
                guidance=cfg.guidance,
            )
        else:
            method = SynTumorMethod.from_prepared(str(self.prepared))
        from synbt_factory.generate.quality_gate import QualityGate

        gen_cfg = self.generate_config(method_name)
        store = self.synthetic(method_name)
        with self.progress(f"generate ({method_name})") as bar:
            result = run_generate(gen_cfg, out=store, prepared=self.prepared, bank=self.bank, method=method,
                                  progress=bar, quality_gate=QualityGate())
        check = verify_store(store)
        if not check.ok:
            raise RuntimeError(f"{store} does not verify: bad {dict(check.bad_cases)}, incomplete {check.incomplete}, "
                               f"orphans {check.orphans}")
        info: dict[str, Any] = {
            "written": len(result.written), "skipped": len(result.skipped), "verified_cases": check.checked,
            "seconds_per_stage": {k: round(v, 3) for k, v in result.stage_seconds.items()},
        }
        headline = f"{check.checked} cases, verified"
        inside = self._inside_true_breast(store)
        if inside is not None:
            info["tumors_inside_true_breast"] = inside
            headline += f"; {inside:.0%} of tumor voxels inside the phantom's breast"
        info["headline"] = headline
        return {"store": store.name}, info

    def _inside_true_breast(self, location: Path) -> float | None:
        """Fraction of synthetic-tumor voxels inside the background's true ``breast`` label (phantom only)."""
        from synbt_factory.store import CaseStore

        prepared, synthetic = CaseStore.open(self.prepared), CaseStore.open(location)
        inside = total = 0
        for case_id in synthetic.case_ids():
            arrays, attrs = synthetic.read_case(case_id, ("synthetic_mask",))
            background = attrs.get("source_case")
            if background not in prepared or "breast" not in prepared.array_names(background):
                return None
            mask = arrays["synthetic_mask"] > 0
            inside += int((mask & (prepared.read_array(background, "breast") > 0)).sum())
            total += int(mask.sum())
        return inside / total if total else None

    def step_generate_syntumor(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Synthetic store with the analytical SynTumor baseline (same placements as SynBT)."""
        return self._generate("syntumor")

    def step_generate_synbt(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Synthetic store with SynBT: batched DDIM inpainting in the VQ-VAE latent space."""
        return self._generate("synbt")

    def step_realism(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Realism report of each synthetic store against the real tumors; SynBT is held to the demo's targets.

        Writes ``realism/<method>/report.json`` and ``montage.png`` and the headline into each store's card.
        """
        from synbt_factory.evaluate.realism import RealismConfig, realism_report
        from synbt_factory.evaluate.realism_outputs import headline_text, record_headline, write_report
        from synbt_factory.generate.quality_gate import TARGETS, check_gate
        from synbt_factory.store.lock import writer_lock

        outputs: dict[str, str] = {}
        info: dict[str, Any] = {}
        # every real tumor, not only as many as there are synthetic ones: the real-vs-real floor of the Fréchet
        # distance splits them in two, and 4 against 4 gave a floor above the synthetic stores' distances
        config = RealismConfig(max_cases=max(self.config.n_cases, self.config.n_generate))
        for method in ("synbt", "syntumor"):
            store = self.synthetic(method)
            with self.progress(f"realism report ({method})") as bar:
                report_ = realism_report(store, self.prepared, config=config, vqvae=self.path("vqvae/volume/final.pt"),
                                         device=self.device, progress=bar)
            verdict = check_gate(report_.headline, TARGETS)
            headline = {**report_.headline, "gate": {**verdict.to_dict(), "thresholds": "demo targets"}}
            write_report(report_, self.path(f"realism/{method}"), headline=headline)
            with writer_lock(str(store), command="demo realism"):
                record_headline(store, headline)
            outputs[method] = f"realism/{method}/montage.png"
            info[method] = {"headline": headline_text(headline), "meets_targets": verdict.passed,
                            "figures": {k: v for k, v in report_.headline.items() if isinstance(v, (int, float))}}
        synbt = info["synbt"]
        info["headline"] = f"SynBT: {synbt['headline']}" + ("" if synbt["meets_targets"] else " (misses the targets)")
        return outputs, info

    def step_previews(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Montages of each synthetic store and a side-by-side of background / SynTumor / SynBT."""
        from synbt_factory.figures import CaseView, case_montage
        from synbt_factory.store import CaseStore

        n = self.config.preview_cases
        outputs: dict[str, str] = {}
        stores = {m: CaseStore.open(self.synthetic(m)) for m in ("syntumor", "synbt")}
        for method, store in stores.items():
            views = []
            for case_id in store.case_ids()[:n]:
                arrays, attrs = store.read_case(case_id, ("image", "mask", "synthetic_mask"))
                views.append(CaseView(f"{case_id} ({method}, bg {attrs.get('source_case')})", arrays["image"],
                                      arrays["mask"], arrays["synthetic_mask"]))
            rel = f"previews/{method}.png"
            case_montage(views, self.path(rel), title=f"{method}: red = all tumor, cyan = synthetic tumor")
            outputs[method] = rel
        # same seed and case index → same background and placement in both stores
        prepared = CaseStore.open(self.prepared)
        views = []
        common = sorted(set(stores["syntumor"].case_ids()) & set(stores["synbt"].case_ids()))[:n]
        for case_id in common:
            syn = {m: stores[m].read_case(case_id, ("image", "mask", "synthetic_mask")) for m in stores}
            background = syn["synbt"][1]["source_case"]
            bg, _ = prepared.read_case(background, ("image", "mask"))
            views.append(CaseView(f"{background} (background)", bg["image"], bg["mask"],
                                  syn["synbt"][0]["synthetic_mask"]))
            for method in ("syntumor", "synbt"):
                arrays = syn[method][0]
                views.append(CaseView(f"{case_id} {method}", arrays["image"], arrays["mask"],
                                      arrays["synthetic_mask"]))
        if views:
            case_montage(views, self.path("previews/compare.png"),
                         title="background, SynTumor, SynBT (cyan: the placed tumor)")
            outputs["compare"] = "previews/compare.png"
        return outputs, {"rows": n, "headline": f"{len(outputs)} PNGs"}

    def segment(self, arm: str) -> tuple[dict[str, str], dict[str, Any]]:
        """Train a U-Net on real (+ synthetic) cases and score it on the test split."""
        from synbt_factory.evaluate.segmentation_eval import EvalConfig, evaluate_segmenter
        from synbt_factory.training.segmentation import train_segmenter

        train_cfg = self.segment_config(arm)
        root = f"segment/{arm}"
        with self.progress(f"segmenter ({arm})") as bar:
            trained = train_segmenter(train_cfg, self.path(f"{root}/train"), device=self.device, resume=True,
                                      progress=bar)
        with self.progress(f"evaluate ({arm})") as bar:
            ev = evaluate_segmenter(trained.best_checkpoint, self.prepared, config=EvalConfig(split="test"),
                                    out_dir=self.path(f"{root}/eval"), device=self.device, progress=bar)
        dice = ev.summary["metrics"]["dice"]
        return (
            {"checkpoint": str(trained.best_checkpoint.relative_to(self.out)), "metrics": f"{root}/eval/metrics.csv",
             "summary": f"{root}/eval/summary.json"},
            {"steps": trained.steps, "test_cases": ev.summary["n_cases"], "dice_mean": dice["mean"],
             "best_val_dice": trained.best_val_dice,
             "headline": f"test Dice {dice['mean']:.3f} ({ev.summary['n_cases']} cases), {trained.steps} steps"},
        )

    def step_eval_table(self) -> tuple[dict[str, str], dict[str, Any]]:
        """The paper's Table 1 layout for the demo arms: Markdown, CSV and JSON."""
        rows = table_rows(self.out, self.config)
        write_eval_table(self.out, rows, self.config, seed=self.seed)
        return ({"markdown": "eval_table.md", "csv": "eval_table.csv", "json": "eval_table.json"},
                {"arms": [r["arm"] for r in rows], "headline": f"{len(rows)} arms"})


# ---------------------------------------------------------------------------------------- table
_ARM_METHOD = {"real": "Volume-UNet (real only)", "synbt": "SynBT-UNet (real + SynBT)",
               "syntumor": "SynTumor-UNet (real + SynTumor)"}


def table_rows(out: Path, config: DemoConfig) -> list[dict[str, Any]]:
    """One row per segmentation arm from its ``segment/<arm>/eval/summary.json``."""
    rows = []
    for arm in config.seg_arms:
        summary = json.loads((Path(out) / f"segment/{arm}/eval/summary.json").read_text())
        rows.append({
            "method": _ARM_METHOD[arm],
            "arm": arm,
            "synthetic_store": None if arm == "real" else f"synthetic_{arm}.zarr",
            "mix": 0.0 if arm == "real" else config.seg_mix,
            "n_cases": summary["n_cases"],
            "metrics": summary["metrics"],
            "checkpoint": summary["checkpoint"],
        })
    return rows


def _num(stats: dict[str, Any], key: str) -> float:
    value = stats.get(key)
    return float("nan") if value is None else float(value)


def _case_dice(path: Path) -> dict[str, float]:
    with open(path, newline="") as fh:
        return {row["case_id"]: float(row["dice"]) for row in csv.DictReader(fh) if row.get("dice") not in (None, "")}


def _paired_notes(out: Path, config: DemoConfig, *, seed: int) -> list[str]:
    """One line per synthetic arm: its per-case Dice change against real only, with a CI and a paired test."""
    import numpy as np

    from synbt_factory.evaluate.paired import paired_difference

    base_csv = Path(out) / "segment/real/eval/metrics.csv"
    if not base_csv.is_file():
        return []
    base = _case_dice(base_csv)
    notes = []
    for arm in config.seg_arms[1:]:
        arm_csv = Path(out) / f"segment/{arm}/eval/metrics.csv"
        if not arm_csv.is_file():
            continue
        diff = paired_difference(base, _case_dice(arm_csv), generator=np.random.default_rng(seed))
        notes.append(f"{_ARM_METHOD[arm]} against real only, per test case: " + diff.summary("ΔDice") + ".")
    return notes


def write_eval_table(out: Path, rows: list[dict[str, Any]], config: DemoConfig, *, seed: int) -> None:
    """``eval_table.md`` (via :func:`synbt_factory.experiments.table1.render_table1`), ``.csv`` and ``.json``."""
    from synbt_factory.experiments.table1 import render_table1

    out = Path(out)
    n_cases = sorted({r["n_cases"] for r in rows})
    notes = [
        f"synbt demo, preset {config.name}: {config.n_cases} phantom cases "
        f"({config.fov_mm[0]}×{config.fov_mm[1]}×{config.fov_mm[2]} mm at 1 mm), seed {seed}.",
        f"Every arm: U-Net ({config.seg_preset}), crop {tuple(config.seg_crop)}, {config.seg_epochs} epochs × "
        f"{config.seg_samples_per_epoch} samples = {config.seg_steps} steps at lr {config.seg_lr:g}, "
        "best validation checkpoint; "
        f"synthetic arms draw a fraction {config.seg_mix} of samples from {config.n_generate} synthetic cases.",
        f"Rests on {', '.join(str(n) for n in n_cases)} test cases (phantom test split) and 1 seed ({seed}).",
        *_paired_notes(out, config, seed=seed),
        "Demo budgets are tiny: these numbers show the pipeline runs, they do not reproduce the paper.",
    ]
    (out / "eval_table.md").write_text(render_table1(rows, notes=notes))
    columns = ["method", "arm", "mix", "n_cases"] + [f"{m}_{s}" for m in ("dice", "hd95", "msd")
                                                     for s in ("mean", "std", "median")]
    with open(out / "eval_table.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            flat = {k: row[k] for k in ("method", "arm", "mix", "n_cases")}
            for m in ("dice", "hd95", "msd"):
                for s in ("mean", "std", "median"):
                    flat[f"{m}_{s}"] = _num(row["metrics"].get(m, {}), s)
            writer.writerow(flat)
    (out / "eval_table.json").write_text(
        json.dumps({"config": config_to_dict(config), "seed": seed, "rows": rows}, indent=2,
                   default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else str(v)) + "\n"
    )


# ---------------------------------------------------------------------------------------- driver
def _marker_path(out: Path, name: str) -> Path:
    return out / "steps" / f"{name}.done.json"


def read_marker(out: Path, name: str) -> dict[str, Any] | None:
    """The marker of a finished step, or ``None``."""
    path = _marker_path(Path(out), name)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is unreadable; the step will run again", path)
        return None


def _check_run_config(out: Path, config: DemoConfig, seed: int) -> None:
    path = out / "demo_config.json"
    wanted = {"config": config_to_dict(config), "seed": seed}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != wanted:
            raise ValueError(
                f"{out} holds a demo run with other settings ({path}: preset {saved.get('config', {}).get('name')!r}, "
                f"seed {saved.get('seed')}); rerun with the same --preset/--seed to resume, or choose a new --out"
            )
        return
    if out.exists() and any(p.name != "steps" for p in out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no demo run (no demo_config.json); choose a new or empty --out")
    _atomic_write_text(path, json.dumps(wanted, indent=2) + "\n")


def run_demo(
    out: str | Path,
    *,
    preset: str | DemoConfig = "tiny",
    device: str = "auto",
    seed: int = 0,
    progress_factory: ProgressFactory | None = None,
) -> DemoResult:
    """Run (or resume) the whole demo in ``out``; see the module docstring.

    Args:
        out: run folder (created).
        preset: a :data:`DEMO_PRESETS` name or a :class:`DemoConfig`.
        device: ``auto`` | ``cpu`` | ``cuda``.
        seed: run seed (phantom, every training, generation).
        progress_factory: ``factory(description)`` → context manager yielding a progress callback for each loop.

    Raises:
        ValueError: ``out`` holds another run or unrelated files; bad preset or seed.
        DemoError: a step failed (its marker is not written; rerun to resume from it).
    """
    from synbt_factory.device import resolve_device

    t_start = time.perf_counter()
    config = preset if isinstance(preset, DemoConfig) else demo_preset(preset)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    dev = str(resolve_device(device))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_run_config(out, config, seed)
    run = DemoRun(out, config, device=dev, seed=seed, progress_factory=progress_factory or _no_progress)
    records: list[StepRecord] = []
    upstream_ran = False
    for name in config.step_names():
        # once a step runs, the steps after it run again too (each resumes through its library call)
        marker = None if upstream_ran else read_marker(out, name)
        if marker is not None:
            log.info("step %s: done earlier (%.1f s), skipped", name, marker["seconds"])
            records.append(StepRecord(name=name, seconds=float(marker["seconds"]), skipped=True,
                                      outputs={k: out / v for k, v in marker["outputs"].items()},
                                      info=marker.get("info", {})))
            continue
        log.info("step %s: running", name)
        upstream_ran = True
        t0 = time.perf_counter()
        try:
            outputs, info = run.run_step(name)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            raise DemoError(name, f"{type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - t0
        missing = [v for v in outputs.values() if not (out / v).exists()]
        if missing:
            raise DemoError(name, f"finished without writing {missing}")
        payload = {"version": MARKER_VERSION, "step": name, "seconds": round(seconds, 3), "outputs": outputs,
                   "info": info, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _atomic_write_text(_marker_path(out, name), json.dumps(payload, indent=2, default=str) + "\n")
        log.debug("step %s: done in %.1f s", name, seconds)  # the closing table lists every step's seconds
        records.append(StepRecord(name=name, seconds=seconds, skipped=False,
                                  outputs={k: out / v for k, v in outputs.items()}, info=info))
    rows = table_rows(out, config)
    return DemoResult(out=out, steps=records, table_rows=rows, wall_seconds=time.perf_counter() - t_start)
