"""Configs of the tissue wing: the training run (:class:`TissueTrainConfig`) and the post-processing of the
model's labels (:class:`TissuePostConfig`, stored with the run so inference applies the same rules).

They live apart from :mod:`synbt_factory.tissue.train` and :mod:`synbt_factory.tissue.infer` because both
need them (inference rebuilds a model from a checkpoint's run config; training validates with inference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from synbt_factory.models.tissue import TissueModelConfig, tissue_preset
from synbt_factory.tissue.synth import TissueSynthConfig

__all__ = ["TissuePostConfig", "TissueTrainConfig"]


@dataclass(frozen=True, kw_only=True)
class TissuePostConfig:
    """Post-processing of the tissue model's labels.

    Args:
        breast_min_fraction: breast components smaller than this fraction of the largest are dropped.
        max_breasts: at most this many breast components are kept.
        margin_mm: FGT is kept only farther than this from the breast boundary (skin, chest wall).
        min_fgt_voxels: FGT components smaller than this are dropped.
        skin_contact_mm: with the image known, a breast component must come this close to the
            body's anterior surface (else it is not a breast: heart, mediastinum).
        anterior_axis / anterior_sign: index axis and direction pointing anterior (RAS: 1, +1).
    """

    breast_min_fraction: float = 0.1
    max_breasts: int = 2
    margin_mm: float = 3.0
    min_fgt_voxels: int = 20
    skin_contact_mm: float = 8.0
    anterior_axis: int = 1
    anterior_sign: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.breast_min_fraction <= 1:
            raise ValueError(f"breast_min_fraction must be in [0, 1], got {self.breast_min_fraction}")
        if self.max_breasts < 1:
            raise ValueError(f"max_breasts must be >= 1, got {self.max_breasts}")
        if self.margin_mm < 0:
            raise ValueError(f"margin_mm must be >= 0, got {self.margin_mm}")
        if self.min_fgt_voxels < 0:
            raise ValueError(f"min_fgt_voxels must be >= 0, got {self.min_fgt_voxels}")
        if self.skin_contact_mm <= 0:
            raise ValueError(f"skin_contact_mm must be > 0, got {self.skin_contact_mm}")
        if self.anterior_axis not in (0, 1, 2):
            raise ValueError(f"anterior_axis must be 0, 1 or 2, got {self.anterior_axis}")
        if self.anterior_sign not in (-1, 1):
            raise ValueError(f"anterior_sign must be -1 or 1, got {self.anterior_sign}")


@dataclass(frozen=True, kw_only=True)
class TissueTrainConfig:
    """A tissue-model training run.

    Args:
        model: the U-Net.
        synth: the label → image generator.
        post: inference post-processing (stored in the checkpoint for
            :func:`~synbt_factory.tissue.infer.predict_tissue`).
        steps: optimizer steps.
        batch_size: patches per step.
        patch: training patch edge (multiple of the model's stride product).
        breast_centre_prob: probability a patch is centred on a breast voxel.
        lr: Adam learning rate (cosine decay to 10 %).
        seed: run seed (weight init from its ``tissue-init`` stream, the loop under ``tissue-loop``,
            per-batch streams from :func:`synbt_factory.rng.case_generator`).
        val_every: steps between validations (0: only at the end).
        val_cases: at most this many held-out real cases are validated.
        roi: sliding-window size at validation / inference.
        sw_batch_size: windows per forward pass (≥ 2: batch-1 3D convolution is slow on CPU).
        workers: DataLoader worker processes for synthesis (results do not depend on it).
        log_every: steps between ``train`` lines of the metric log.
    """

    model: TissueModelConfig = field(default_factory=lambda: tissue_preset("small"))
    synth: TissueSynthConfig = field(default_factory=TissueSynthConfig)
    post: TissuePostConfig = field(default_factory=TissuePostConfig)
    steps: int = 2000
    batch_size: int = 2
    patch: int = 96
    breast_centre_prob: float = 0.8
    lr: float = 2e-3
    seed: int = 0
    val_every: int = 250
    val_cases: int = 4
    roi: int = 96
    sw_batch_size: int = 2
    workers: int = 1
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        div = self.model.divisor
        if self.patch < div or self.patch % div:
            raise ValueError(f"patch must be a positive multiple of {div} (the model's strides), got {self.patch}")
        if self.roi < div or self.roi % div:
            raise ValueError(f"roi must be a positive multiple of {div}, got {self.roi}")
        if not 0 <= self.breast_centre_prob <= 1:
            raise ValueError(f"breast_centre_prob must be in [0, 1], got {self.breast_centre_prob}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.val_every < 0:
            raise ValueError(f"val_every must be >= 0, got {self.val_every}")
        if self.val_cases < 0:
            raise ValueError(f"val_cases must be >= 0, got {self.val_cases}")
        if self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")

    @classmethod
    def preset(cls, name: str, **changes: Any) -> TissueTrainConfig:
        """``tiny`` (tests: 32³ patches, 8-16-32 U-Net, 60 steps), ``cpu`` (the same network, 600 steps: a tissue
        map that places tumors in FGT, about 2 min on 2 CPU cores) or ``small`` (96³, 16-32-64-128).

        On the 24-case tiny phantom (FOV 64 64 48) the 60-step model scored validation FGT Dice 0.07 and covered
        0.1 % of the breast with FGT, so every placement fell back to the whole breast; 600 steps: Dice 0.22,
        15 % of the breast, 81 of 100 placed tumors centred in FGT.
        """
        tiny: dict[str, Any] = {
            "model": tissue_preset("tiny"),
            "patch": 32,
            "roi": 32,
            "batch_size": 2,
            "steps": 60,
            "val_every": 0,
            "workers": 0,
            "lr": 3e-3,
        }
        if name == "tiny":
            base: dict[str, Any] = tiny
        elif name == "cpu":
            base = {**tiny, "steps": 600}
        elif name == "small":
            base = {"model": tissue_preset("small")}
        else:
            raise ValueError(f"preset must be 'tiny', 'cpu' or 'small', got {name!r}")
        base.update(changes)
        return cls(**base)
