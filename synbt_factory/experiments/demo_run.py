"""One demo run folder: where each artifact lies and the library settings each step calls with (no IO).

The steps themselves (``synbt_factory.experiments.demo_*``) are functions of a :class:`DemoRun`; each returns
``(outputs, info)`` (:data:`StepResult`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from synbt_factory.experiments.demo_config import DemoConfig
from synbt_factory.progress import ProgressFn

__all__ = ["DemoRun", "ProgressFactory", "StepResult"]

#: ``factory(description)`` → a context manager yielding the progress callback of one loop (or ``None``).
ProgressFactory = Callable[[str], AbstractContextManager[ProgressFn | None]]

#: What a demo step returns: its outputs (paths relative to the run folder) and facts for the marker and report.
StepResult = tuple[dict[str, str], dict[str, Any]]


class DemoRun:
    """The run folder ``out`` of one demo, its settings, device, seed and progress bars.

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

    Args:
        out: the run folder.
        config: the demo's settings.
        device: resolved torch device (``cpu``, ``cuda``).
        seed: run seed (phantom, every training, generation).
        progress_factory: ``factory(description)`` → context manager yielding one loop's progress callback.
    """

    def __init__(
        self, out: Path, config: DemoConfig, *, device: str, seed: int, progress_factory: ProgressFactory
    ) -> None:
        self.out = Path(out)
        self.config = config
        self.device = device
        self.seed = seed
        self.progress = progress_factory

    # ------------------------------------------------------------------ paths
    def path(self, relative: str) -> Path:
        """``relative`` inside the run folder."""
        return self.out / relative

    @property
    def prepared(self) -> Path:
        """The prepared store."""
        return self.path("prepared.zarr")

    @property
    def bank(self) -> Path:
        """The tumor bank."""
        return self.path("bank.zarr")

    def synthetic(self, method: str) -> Path:
        """The synthetic store of ``method`` (``synbt`` or ``syntumor``)."""
        return self.path(f"synthetic_{method}.zarr")

    # ------------------------------------------------------------------ library configs
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
        from synbt_factory.tissue.config import TissueTrainConfig

        return TissueTrainConfig.preset(self.config.tissue_preset, steps=self.config.tissue_steps, seed=self.seed)

    def generate_config(self, method: str) -> Any:
        """GenerateConfig of one method; both methods share seed, so case i has the same background and mask."""
        from synbt_factory.generate import GenerateConfig

        cfg = self.config
        return GenerateConfig(
            n=cfg.n_generate,
            seed=self.seed,
            method=method,
            batch_size=cfg.generate_batch_size,
            workers=cfg.workers,
            background_split="train",
        )

    def segment_config(self, arm: str) -> Any:
        """SegTrainConfig of one arm: same network, budget, seed and split for every arm; only the data differ."""
        from synbt_factory.data.mixing import MixConfig
        from synbt_factory.models.segmenters import SegmenterConfig
        from synbt_factory.training.segmentation import SegTrainConfig

        cfg = self.config
        crop = tuple(int(c) for c in cfg.seg_crop)
        return SegTrainConfig(
            model=SegmenterConfig(name="unet", preset=cfg.seg_preset, patch_size=crop),  # type: ignore[arg-type]
            data=MixConfig(
                crop=crop,
                mix=0.0 if arm == "real" else cfg.seg_mix,  # type: ignore[arg-type]
                samples_per_epoch=cfg.seg_samples_per_epoch,
            ),
            real=str(self.prepared),
            synthetic=None if arm == "real" else str(self.synthetic(arm)),
            epochs=cfg.seg_epochs,
            lr=cfg.seg_lr,
            val_every_epochs=1,
            seed=self.seed,
            split_seed=self.seed,
            log_every=max(1, min(10, cfg.seg_samples_per_epoch)),
        )
