"""The evidence experiment's data: two phantom families, per-size real stores, tissue maps, banks, synthetic stores.

Every function writes into the run folder and can be called again: what exists is reused (phantom folders are
rebuilt only when their step marker is missing, stores resume case by case).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from synbt_factory.experiments.case_subsets import CaseSplit, draw_case_split, write_subset_store
from synbt_factory.experiments.evidence_config import EvidenceConfig, arm_is_guided, arm_method, arm_spreads_sizes
from synbt_factory.progress import ProgressFn

__all__ = [
    "EvidencePaths",
    "make_family",
    "case_split",
    "make_real_stores",
    "make_tissue_maps",
    "make_bank",
    "make_synthetic_store",
    "realism_headline",
]

log = logging.getLogger(__name__)


class EvidencePaths:
    """Where everything of one run folder lives."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)

    def family(self, name: str) -> Path:
        return self.out / "data" / f"{name}_phantom"

    def prepared(self, name: str) -> Path:
        return self.out / "data" / f"{name}.zarr"

    def real(self, size: int) -> Path:
        return self.out / "data" / f"real_{size}.zarr"

    def bank(self, size: int) -> Path:
        return self.out / "data" / f"bank_{size}.zarr"

    def synthetic(self, arm: str, size: int) -> Path:
        return self.out / "data" / f"synthetic_{arm}_{size}.zarr"

    @property
    def split(self) -> Path:
        return self.out / "split.json"

    @property
    def tissue(self) -> Path:
        return self.out / "tissue"

    @property
    def generators(self) -> Path:
        return self.out / "generators"

    def run(self, size: int, arm: str, seed: int) -> Path:
        return self.out / "runs" / f"real{size}" / arm / f"seed{seed}"

    def budget(self, size: int) -> Path:
        return self.out / "budget" / f"real{size}"


def make_family(
    config: EvidenceConfig, paths: EvidencePaths, family: str, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Write one phantom family (``own``: site A, ``external``: site B) and prepare it.

    Both families have no healthy cases: every test case has a tumor to find.
    """
    from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
    from synbt_factory.phantom import write_phantom

    site, seed, n = (
        ("A", config.own_seed, config.own_cases)
        if family == "own"
        else ("B", config.external_seed, config.external_cases)
    )
    folder = paths.family(family)
    write_phantom(
        folder,
        n=n,
        seed=seed,
        size=config.phantom_size,
        healthy_fraction=0.0,
        site=site,
        progress=progress,
    )
    result = prepare_dataset(
        folder, paths.prepared(family), config=PrepareConfig(fov_mm=tuple(int(f) for f in config.fov_mm))
    )  # type: ignore[arg-type]
    if result.failed:
        case, reason = next(iter(result.failed.items()))
        raise RuntimeError(
            f"preparing the {family} family failed for {len(result.failed)} cases, e.g. {case}: {reason}"
        )
    return {"site": site, "seed": seed, "cases": n, "prepared": len(result.prepared) + len(result.skipped)}


def case_split(config: EvidenceConfig, paths: EvidencePaths) -> CaseSplit:
    """The training pool / validation / test division of the own family (depends on ``split_seed`` only)."""
    from synbt_factory.store import CaseStore

    ids = CaseStore.open(paths.prepared("own")).case_ids()
    return draw_case_split(
        ids,
        pool=max(config.sizes),
        val=config.val_cases,
        rng=np.random.default_rng([config.split_seed, 0xE71D]),
        min_test=20,
    )


def make_real_stores(config: EvidenceConfig, paths: EvidencePaths, split: CaseSplit) -> dict[str, int]:
    """One prepared store per size: its training cases and the shared validation cases."""
    for size in config.sizes:
        write_subset_store(paths.prepared("own"), paths.real(size), {"train": split.train(size), "val": split.val})
    return {f"real_{size}": size for size in config.sizes}


def make_tissue_maps(
    config: EvidenceConfig, paths: EvidencePaths, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Train the tissue model on the smallest size's cases; write its FGT/breast maps into every real store."""
    from synbt_factory.tissue.config import TissueTrainConfig
    from synbt_factory.tissue.infer import add_tissue_to_store
    from synbt_factory.tissue.train import train_tissue

    smallest = paths.real(min(config.sizes))
    tissue_cfg = TissueTrainConfig.preset(config.tissue_preset, steps=config.tissue_steps, seed=config.split_seed)
    result = train_tissue(smallest, paths.tissue, tissue_cfg, device=config.device, resume=True, progress=progress)
    fractions = {}
    for size in config.sizes:
        written = add_tissue_to_store(result.best_path, paths.real(size), device=config.device)
        values = list(written["fgt_fraction"].values())
        fractions[f"real_{size}"] = float(np.mean(values)) if values else None
    return {"checkpoint": str(result.best_path), "mean_fgt_fraction": fractions}


def make_bank(config: EvidenceConfig, paths: EvidencePaths, size: int) -> dict[str, Any]:
    """Tumor-mask templates of one size's training cases."""
    from synbt_factory.synthesis.bank import build_bank

    bank = build_bank(paths.real(size), paths.bank(size), splits=("train",), overwrite=True)
    return {"templates": len(bank)}


def _method(config: EvidenceConfig, paths: EvidencePaths, method: str, size: int, *, guidance: float = 1.0) -> Any:
    if method == "synbt":
        from synbt_factory.generate.synbt_method import SynBTMethod
        from synbt_factory.pretrained import install_pretrained

        vqvae, diffusion = paths.generators / "vqvae_volume.pt", paths.generators / "diffusion.pt"
        install_pretrained(config.pretrained, "vqvae_volume", vqvae)
        install_pretrained(config.pretrained, "diffusion", diffusion)
        return SynBTMethod.from_checkpoints(
            vqvae, diffusion, device=config.device, steps=config.ddim_steps, guidance=guidance
        )
    if method == "copypaste":
        from synbt_factory.generate.copypaste_method import CopyPasteMethod

        return CopyPasteMethod.from_bank(str(paths.bank(size)))
    from synbt_factory.generate.methods import SynTumorMethod

    return SynTumorMethod.from_prepared(str(paths.real(size)))


def make_synthetic_store(
    config: EvidenceConfig, paths: EvidencePaths, arm: str, size: int, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """``n_synthetic`` cases of one arm's method on one size's backgrounds and bank; verified after writing.

    Every arm uses the same generation seed, so case ``i`` of every arm's store has the same background, and the
    arms without a size spread the same placed mask: they differ in the tumor's texture only.
    """
    from synbt_factory.generate import GenerateConfig, run_generate
    from synbt_factory.generate.quality_gate import QualityGate
    from synbt_factory.store.verify import verify_store

    name = arm_method(arm)
    if name is None:
        raise ValueError("the real arm has no synthetic store")
    method = _method(config, paths, name, size, guidance=config.synbt_guidance if arm_is_guided(arm) else 1.0)
    placement = {"size_spread": list(config.size_spread)} if arm_spreads_sizes(arm) else None
    gen_cfg = GenerateConfig(
        n=config.n_synthetic,
        seed=config.split_seed,
        method=name,
        batch_size=config.generate_batch_size,
        workers=2,
        background_split="train",
    )
    store = paths.synthetic(arm, size)
    gate = QualityGate() if config.quality_gate else None
    result = run_generate(
        gen_cfg,
        out=store,
        prepared=paths.real(size),
        bank=paths.bank(size),
        method=method,
        placement_config=placement,
        progress=progress,
        quality_gate=gate,
    )
    check = verify_store(store)
    if not check.ok:
        raise RuntimeError(
            f"{store} does not verify: bad {dict(check.bad_cases)}, incomplete {check.incomplete}; "
            f"run 'synbt store verify {store}'"
        )
    return {
        "cases": check.checked,
        "written": len(result.written),
        "seconds_per_stage": {k: round(v, 2) for k, v in result.stage_seconds.items()},
    }


def realism_headline(config: EvidenceConfig, paths: EvidencePaths, arm: str, size: int) -> dict[str, Any]:
    """The realism report of one synthetic store against its size's real tumors (``data/realism/<arm>_<size>/``):
    does the texture enhance like the real tumors, and does it stay inside its mask?"""
    from synbt_factory.evaluate.realism import RealismConfig, realism_report
    from synbt_factory.evaluate.realism_outputs import headline_text, write_report
    from synbt_factory.generate.quality_gate import TARGETS, check_gate

    report = realism_report(
        paths.synthetic(arm, size),
        paths.real(size),
        config=RealismConfig(max_cases=min(config.n_synthetic, 60)),
        device=config.device,
    )
    verdict = check_gate(report.headline, TARGETS)
    headline = {**report.headline, "targets": verdict.to_dict()}
    write_report(report, paths.out / "data" / "realism" / f"{arm}_{size}", headline=headline)
    return {"text": headline_text(report.headline), **_finite(headline)}


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
