"""The demo's settings: :class:`DemoConfig`, its presets and the order of its steps.

``tiny`` runs in minutes on 2 CPU cores with the generator weights shipped with the package; ``small`` trains
every network here. :func:`demo_preset` applies changes (and ``--from-scratch``) to a preset, validated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEMO_PRESETS",
    "DEMO_STEPS",
    "FROM_SCRATCH",
    "PRETRAINED_PHANTOM",
    "SEG_ARMS",
    "DemoConfig",
    "demo_preset",
]

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
#: Segmentation arms: real cases only, or real + one synthetic store.
SEG_ARMS: tuple[str, ...] = ("real", "synbt", "syntumor")


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
            self.pretrained_set
        ):
            raise ValueError(
                f"the shipped weights {self.pretrained_set!r} were trained on the phantom "
                f"{PRETRAINED_PHANTOM.get(self.pretrained_set)} (size, field of view), not "
                f"{(self.phantom_size, tuple(self.fov_mm))}; train the generators with --from-scratch"
            )
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
    "tiny": {
        "generators": "scratch",
        "vqvae_preset": "cpu",
        "vqvae_patch_steps": 30_000,
        "vqvae_volume_steps": 500,
        "diffusion_preset": "cpu",
        "diffusion_steps": 2500,
    },
}


def demo_preset(preset: str, /, *, from_scratch: bool = False, **changes: Any) -> DemoConfig:
    """The named :data:`DEMO_PRESETS` entry, with ``changes`` applied (validated).

    Args:
        preset: ``tiny`` or ``small``.
        from_scratch: train the generators instead of installing the shipped weights (:data:`FROM_SCRATCH`).
        **changes: :class:`DemoConfig` fields to change.

    Returns:
        The validated configuration.

    Raises:
        ValueError: unknown preset, or a change :class:`DemoConfig` refuses.
    """
    if preset not in DEMO_PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose one of {', '.join(DEMO_PRESETS)}")
    base = DEMO_PRESETS[preset]
    if from_scratch:
        base = dataclasses.replace(base, **FROM_SCRATCH.get(preset, {"generators": "scratch"}))
    return dataclasses.replace(base, **changes)
