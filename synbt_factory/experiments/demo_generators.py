"""The demo's generator steps: the VQ-VAE (patch, then volume stage) and its evaluation, the latent denoiser.

With ``generators="pretrained"`` the VQ-VAE stages and the denoiser install the shipped, sha256-checked weights
(:mod:`synbt_factory.pretrained`) where the trained checkpoints would be; with ``"scratch"`` they train here.
Each step is a function of a :class:`~synbt_factory.experiments.demo_run.DemoRun` returning ``(outputs, info)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synbt_factory.experiments.demo_run import DemoRun, StepResult

__all__ = ["step_diffusion", "step_vqvae_eval", "step_vqvae_patch", "step_vqvae_volume"]


def _install_pretrained(run: DemoRun, component: str, dest: str) -> StepResult:
    """Copy one shipped, sha256-checked checkpoint to where the trained one would be."""
    from synbt_factory.pretrained import install_pretrained, pretrained_set

    name = run.config.pretrained_set
    sha = install_pretrained(name, component, run.path(dest))
    made_by = pretrained_set(name).manifest.get("made_by", "scripts/train_demo_weights.sh")
    return (
        {"checkpoint": dest},
        {
            "pretrained": name,
            "sha256": sha,
            "made_by": made_by,
            "headline": f"shipped weights {name}/{component} (sha256 {sha[:12]}…)",
        },
    )


def _vqvae_stage(run: DemoRun, stage: str, init: Path | None) -> StepResult:
    """Install or train one VQ-VAE stage into ``vqvae/<stage>``."""
    from synbt_factory.training.vqvae import train_vqvae

    if run.config.generators == "pretrained":
        return _install_pretrained(run, f"vqvae_{stage}", f"vqvae/{stage}/final.pt")
    model_cfg, train_cfg = run.vqvae_configs(stage)
    out = run.path(f"vqvae/{stage}")
    with run.progress(f"VQ-VAE {stage} stage") as bar:
        result = train_vqvae(
            run.prepared,
            out,
            train_config=train_cfg,
            model_config=model_cfg,
            init=init,
            resume=True,
            device=run.device,
            seed=run.seed,
            progress=bar,
        )
    rel = result.final_checkpoint.relative_to(run.out)
    metrics = {k: float(v) for k, v in result.metrics.items()}
    headline = f"{result.steps} steps, L1 {metrics['l1']:.3f}" if "l1" in metrics else f"{result.steps} steps"
    return (
        {"checkpoint": str(rel), "metrics": f"vqvae/{stage}/metrics.csv"},
        {"steps": result.steps, **metrics, "headline": headline},
    )


def step_vqvae_patch(run: DemoRun) -> StepResult:
    """VQ-VAE stage 1: encoder, codebook and decoder on random patches (paper Sec. 2.1)."""
    return _vqvae_stage(run, "patch", None)


def step_vqvae_volume(run: DemoRun) -> StepResult:
    """VQ-VAE stage 2: decoder only, on volume crops, from the patch-stage weights."""
    return _vqvae_stage(run, "volume", run.path("vqvae/patch/final.pt"))


def step_vqvae_eval(run: DemoRun) -> StepResult:
    """PSNR/SSIM/grid score of patch-only vs patch-to-volume decoding on held-out cases (Fig. 4a-like)."""
    from synbt_factory.evaluate.vqvae_eval import VQVAEEvalConfig, evaluate_vqvae

    with run.progress("VQ-VAE evaluation") as bar:
        summary = evaluate_vqvae(
            run.path("vqvae/volume/final.pt"),
            run.prepared,
            run.path("vqvae/eval"),
            patch_ckpt=run.path("vqvae/patch/final.pt"),
            config=VQVAEEvalConfig(splits=("test",), max_cases=run.config.vqvae_eval_cases),
            device=run.device,
            progress=bar,
        )
    mean = {k: float(v) for k, v in summary["mean"].items() if isinstance(v, (int, float))}
    keep = ("psnr_post", "ssim_post", "grid_score", "patch_only_psnr_post", "patch_only_grid_score")
    info: dict[str, Any] = {k: mean[k] for k in keep if k in mean}
    if "psnr_post" in info and "patch_only_psnr_post" in info:
        info["headline"] = (
            f"PSNR post {info['psnr_post']:.1f} dB "
            f"(patch-only {info['patch_only_psnr_post']:.1f}), {summary['num_cases']} cases"
        )
    return {"figure": "vqvae/eval/vqvae_reconstruction.png", "metrics": "vqvae/eval/vqvae_metrics.json"}, info


def step_diffusion(run: DemoRun) -> StepResult:
    """Mask-conditioned latent diffusion on the VQ-VAE latents of the tumor cases (Sec. 2.2)."""
    from synbt_factory.training.diffusion import train_diffusion_from_store

    if run.config.generators == "pretrained":
        return _install_pretrained(run, "diffusion", "diffusion/final.pt")
    model_cfg, train_cfg = run.diffusion_configs()
    # one bar for both loops (encoding the cases, then training): nested live displays are fragile
    with run.progress("diffusion (encode cases, then train)") as bar:
        result = train_diffusion_from_store(
            run.path("vqvae/volume/final.pt"),
            run.prepared,
            run.path("diffusion"),
            model_config=model_cfg,
            train_config=train_cfg,
            resume=True,
            device=run.device,
            seed=run.seed,
            progress=bar,
            encode_progress=bar,
        )
    rel = result.final_checkpoint.relative_to(run.out)
    metrics = {k: float(v) for k, v in result.metrics.items()}
    headline = f"{result.steps} steps" + (f", loss {metrics['loss']:.3f}" if "loss" in metrics else "")
    return {"checkpoint": str(rel)}, {"steps": result.steps, **metrics, "headline": headline}
