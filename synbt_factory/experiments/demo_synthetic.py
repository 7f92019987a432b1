"""The demo's synthetic steps: a SynTumor and a SynBT store (same backgrounds and placements), and their realism.

Each step is a function of a :class:`~synbt_factory.experiments.demo_run.DemoRun` returning ``(outputs, info)``.
"""

from __future__ import annotations

from typing import Any

from synbt_factory.experiments.demo_checks import inside_true_breast
from synbt_factory.experiments.demo_run import DemoRun, StepResult

__all__ = ["step_generate_synbt", "step_generate_syntumor", "step_realism"]


def _generate(run: DemoRun, method_name: str) -> StepResult:
    """Write and verify the synthetic store of ``method_name``; SynBT stops at the quality gate when far from real."""
    from synbt_factory.generate import run_generate
    from synbt_factory.generate.methods import SynTumorMethod
    from synbt_factory.generate.quality_gate import QualityGate
    from synbt_factory.generate.synbt_method import SynBTMethod
    from synbt_factory.store.verify import verify_store

    cfg = run.config
    if method_name == "synbt":
        method: Any = SynBTMethod.from_checkpoints(
            run.path("vqvae/volume/final.pt"),
            run.path("diffusion/final.pt"),
            device=run.device,
            steps=cfg.ddim_steps,
            guidance=cfg.guidance,
        )
    else:
        method = SynTumorMethod.from_prepared(str(run.prepared))
    gen_cfg = run.generate_config(method_name)
    store = run.synthetic(method_name)
    with run.progress(f"generate ({method_name})") as bar:
        result = run_generate(
            gen_cfg,
            out=store,
            prepared=run.prepared,
            bank=run.bank,
            method=method,
            progress=bar,
            quality_gate=QualityGate(),
        )
    check = verify_store(store)
    if not check.ok:
        raise RuntimeError(
            f"{store} does not verify: bad {dict(check.bad_cases)}, incomplete {check.incomplete}, "
            f"orphans {check.orphans}"
        )
    info: dict[str, Any] = {
        "written": len(result.written),
        "skipped": len(result.skipped),
        "verified_cases": check.checked,
        "seconds_per_stage": {k: round(v, 3) for k, v in result.stage_seconds.items()},
    }
    headline = f"{check.checked} cases, verified"
    inside = inside_true_breast(run.prepared, store)
    if inside is not None:
        info["tumors_inside_true_breast"] = inside
        headline += f"; {inside:.0%} of tumor voxels inside the phantom's breast"
    info["headline"] = headline
    return {"store": store.name}, info


def step_generate_syntumor(run: DemoRun) -> StepResult:
    """Synthetic store with the analytical SynTumor baseline (same placements as SynBT)."""
    return _generate(run, "syntumor")


def step_generate_synbt(run: DemoRun) -> StepResult:
    """Synthetic store with SynBT: batched DDIM inpainting in the VQ-VAE latent space."""
    return _generate(run, "synbt")


def step_realism(run: DemoRun) -> StepResult:
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
    config = RealismConfig(max_cases=max(run.config.n_cases, run.config.n_generate))
    for method in ("synbt", "syntumor"):
        store = run.synthetic(method)
        with run.progress(f"realism report ({method})") as bar:
            report_ = realism_report(
                store,
                run.prepared,
                config=config,
                vqvae=run.path("vqvae/volume/final.pt"),
                device=run.device,
                progress=bar,
            )
        verdict = check_gate(report_.headline, TARGETS)
        headline = {**report_.headline, "gate": {**verdict.to_dict(), "thresholds": "demo targets"}}
        write_report(report_, run.path(f"realism/{method}"), headline=headline)
        with writer_lock(str(store), command="demo realism"):
            record_headline(store, headline)
        outputs[method] = f"realism/{method}/montage.png"
        info[method] = {
            "headline": headline_text(headline),
            "meets_targets": verdict.passed,
            "figures": {k: v for k, v in report_.headline.items() if isinstance(v, (int, float))},
        }
    synbt = info["synbt"]
    info["headline"] = f"SynBT: {synbt['headline']}" + ("" if synbt["meets_targets"] else " (misses the targets)")
    return outputs, info
