"""``synbt generate`` (mass-produce synthetic cases into a resumable Zarr store) and ``synbt generate-one`` (one
synthetic tumor in one case, written as NIfTI)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from cli._console import aliased, check_writable, console, fail, name_flags, progress_bar, setup_logging

__all__ = ["generate", "generate_one"]

# GenerateConfig's field names → the flags that set them, for its validation errors
_CONFIG_FLAGS = {
    "n": "--n",
    "seed": "--seed",
    "method": "--method",
    "batch_size": "--batch-size",
    "workers": "--workers",
}


def generate(
    n: int = typer.Option(..., "--n", help="Number of synthetic cases (ids SYN_000000 ...)."),
    out: str = typer.Option(..., "--out", help="Synthetic Zarr store; rerunning the same command resumes it."),
    data: str = typer.Option(..., "--data", help="Prepared store of background cases (synbt data prepare)."),
    bank: str = typer.Option(..., "--bank", help="Tumor-mask bank (synbt bank build)."),
    method: str = typer.Option(
        "synbt",
        "--method",
        help="synbt (latent diffusion), syntumor (analytical baseline, no model) or "
        "copypaste (real bank tumors pasted with their own voxels, no model).",
    ),
    vqvae: Path | None = typer.Option(None, "--vqvae", help="VQ-VAE checkpoint (method synbt)."),
    diffusion: Path | None = typer.Option(None, "--diffusion", help="Diffusion checkpoint (method synbt)."),
    sample_steps: int | None = typer.Option(
        None, "--sample-steps", min=1, help="DDIM sampling steps (method synbt; paper: 10).  [default: 10]"
    ),
    steps: int | None = typer.Option(None, "--steps", hidden=True, min=1, help="Older name of --sample-steps."),
    eta: float = typer.Option(
        1.0, "--eta", help="DDIM eta (method synbt): 0 deterministic given the noise, 1 DDPM-like."
    ),
    guidance: float = typer.Option(
        1.0,
        "--guidance",
        help=(
            "Mask guidance scale (method synbt): 1 = the paper's sampler; above 1 pushes the tumor away from what "
            "the denoiser predicts without the mask (classifier-free guidance; twice the "
            "denoiser work per step). Needs a "
            "denoiser trained on latent crops smaller than the volume, so that some hold no tumor (the recipe's "
            "--crop 8 8 8). On the phantom recipe 1.5 brings placed tumors' post/pre to that of real ones."
        ),
    ),
    batch_size: int = typer.Option(4, "--batch-size", help="Cases per sampler call; does not change results."),
    workers: int = typer.Option(
        2, "--workers", help="Threads (or Dask worker processes) for placement and writing; does not change results."
    ),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Join a Dask cluster (tcp://HOST:8786) instead of a local one."
    ),
    cluster: str = typer.Option(
        "threads",
        "--cluster",
        help=(
            "threads: one process, a pool of --workers threads (Dask is not imported or started); "
            "local: a Dask LocalCluster of --workers processes (one per GPU with dask-cuda)."
        ),
    ),
    seed: int = typer.Option(0, "--seed", help="Run seed; per-case streams derive from (seed, case index)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (sampler device)."),
    no_quality_gate: bool = typer.Option(
        False,
        "--no-quality-gate",
        help=(
            "Method synbt: do not stop when the first batch's tumors are far from real ones (post/pre, change outside "
            "the mask; thresholds in synbt_factory/generate/quality_gate.py). The card records that the gate was off."
        ),
    ),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Place tumors from the bank in fibroglandular tissue of real backgrounds and synthesise their texture.

    Each case is written with its arrays, attributes (seed, placement record, source case, method,
    checkpoint hashes, array checksums) and a completion marker last. Kill it at any time and
    rerun the same command: exactly the missing cases are produced. Same seed, same cases,
    whatever --workers and --batch-size.

    With --method synbt, the first batch is checked against the real tumors (the quality gate of
    `synbt store report`); when it is far from real, the run stops (exit 1) naming the figure, and the
    finished cases are kept. --no-quality-gate skips the check.
    """
    setup_logging(verbose)
    steps = aliased(sample_steps, steps, "--sample-steps", "--steps", required=False) or 10
    from synbt_factory.generate import GenerateConfig, run_generate
    from synbt_factory.generate.inputs import checkpoint_problems, generate_input_problems
    from synbt_factory.generate.pipeline import GenerateError
    from synbt_factory.store import StoreError

    try:
        config = GenerateConfig(n=n, seed=seed, method=method, batch_size=batch_size, workers=workers)
    except ValueError as exc:
        fail(name_flags(str(exc), _CONFIG_FLAGS))
    if method == "synbt" and (vqvae is None or diffusion is None):
        missing = " and ".join(f for f, v in (("--vqvae", vqvae), ("--diffusion", diffusion)) if v is None)
        fail(
            f"--method synbt needs {missing} (checkpoints of synbt train vqvae / train diffusion), "
            "or use --method syntumor or copypaste"
        )
    if "://" not in out:
        check_writable(out, "--out")
    ckpts = (vqvae, diffusion) if method == "synbt" else (None, None)
    problems = generate_input_problems(
        prepared=data, bank=bank, out=out, vqvae=ckpts[0], diffusion=ckpts[1], split=config.background_split
    )
    tumor_method = None
    if method == "synbt" and not checkpoint_problems([("--vqvae", vqvae), ("--diffusion", diffusion)]):
        from synbt_factory.checkpoint import CheckpointError
        from synbt_factory.generate.synbt_method import SynBTMethod

        try:  # loads both models: a broken checkpoint is reported with the other problems
            tumor_method = SynBTMethod.from_checkpoints(
                vqvae, diffusion, device=device, steps=steps, eta=eta, guidance=guidance
            )
        except CheckpointError as exc:
            problems.insert(0, str(exc))
    if problems:
        fail("; ".join(problems))
    if "://" not in out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    try:
        if tumor_method is None and method == "copypaste":
            from synbt_factory.generate.copypaste_method import CopyPasteMethod

            tumor_method = CopyPasteMethod.from_bank(bank)
        elif tumor_method is None:
            from synbt_factory.generate.methods import SynTumorMethod

            tumor_method = SynTumorMethod.from_prepared(data)
        with progress_bar(f"generate ({method})", total=n) as update:
            from synbt_factory.generate.quality_gate import QualityGate

            result = run_generate(
                config,
                out=out,
                prepared=data,
                bank=bank,
                method=tumor_method,
                scheduler=scheduler,
                cluster=cluster,
                progress=update,
                quality_gate=None if no_quality_gate else QualityGate(),
            )
    except GenerateError as exc:
        fail(str(exc), code=1)
    except (StoreError, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    console.print(
        f"[green]wrote {len(result.written)}[/] cases, {len(result.skipped)} already complete, "
        f"{len(result.removed_incomplete)} incomplete removed → {out} ({result.wall_seconds:.1f} s)"
    )
    _print_placement_summary(out, result.written)
    console.print(f"check it: synbt store verify {out}   look at it: synbt store preview {out} --out preview.png")


def _print_placement_summary(out: str, case_ids: list[str]) -> None:
    """Where this run's tumors went, and a warning when most fell back from FGT to the whole breast."""
    from synbt_factory.generate.placement_summary import summarize_placements
    from synbt_factory.store import CaseStore, StoreError

    try:
        store = CaseStore.open(out)
        summary = summarize_placements(store.case_attrs(c).get("placement") for c in case_ids)
    except StoreError as exc:
        console.print(f"[yellow]placement summary skipped: {exc}[/]")
        return
    if summary.n:
        console.print(summary.text())
    for warning in summary.warnings:
        console.print(f"[yellow]warning: {escape(warning)}[/]")


def generate_one(
    case: str = typer.Option(
        ...,
        "--case",
        help=(
            "A prepared case as STORE.zarr::CASE_ID, or a NIfTI folder holding <ID>_0000 (pre) and <ID>_0001 "
            "(post) on the prepared grid (e.g. from 'synbt store export')."
        ),
    ),
    mask: Path = typer.Option(
        ..., "--mask", help=("Tumor mask NIfTI on the same grid as the case (shape and affine); nonzero = tumor.")
    ),
    vqvae: Path = typer.Option(..., "--vqvae", help="VQ-VAE checkpoint (synbt train vqvae)."),
    diffusion: Path = typer.Option(..., "--diffusion", help="Diffusion checkpoint (synbt train diffusion)."),
    out: Path = typer.Option(
        ...,
        "--out",
        help=("Output 4-D NIfTI (X, Y, Z, 2): volume 0 pre-contrast, 1 post-contrast, with the synthetic tumor."),
    ),
    sample_steps: int | None = typer.Option(
        None, "--sample-steps", min=1, help="DDIM sampling steps (paper: 10).  [default: 10]"
    ),
    steps: int | None = typer.Option(None, "--steps", hidden=True, min=1, help="Older name of --sample-steps."),
    eta: float = typer.Option(
        1.0,
        "--eta",
        help=(
            "DDIM eta: 0 deterministic given the seed's initial noise, 1 DDPM-like (default: keeps more enhancement)."
        ),
    ),
    guidance: float = typer.Option(
        1.0,
        "--guidance",
        help=(
            "Mask guidance scale: 1 = the paper's sampler; above 1 pushes the tumor away from what "
            "the denoiser predicts without the mask (classifier-free guidance; twice the "
            "denoiser work per step). Needs a "
            "denoiser trained on latent crops smaller than the volume, so that some hold no tumor (the recipe's "
            "--crop 8 8 8). On the phantom recipe 1.5 brings placed tumors' post/pre to that of real ones."
        ),
    ),
    mode: str = typer.Option(
        "window",
        "--mode",
        help=("window: diffuse and decode a latent window around the mask; whole: the whole latent (paper)."),
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of this case's noise (stream 'ddim', case index 0)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Insert one synthetic tumor into one case: latent DDIM inpainting inside --mask, blended into the real image.

    Voxels farther than a margin from the mask (printed at the end) are exactly the input voxels.
    """
    setup_logging(verbose)
    steps = aliased(sample_steps, steps, "--sample-steps", "--steps", required=False) or 10
    from synbt_factory.checkpoint import CheckpointError
    from synbt_factory.data.nifti import NiftiReadError
    from synbt_factory.device import resolve_device
    from synbt_factory.generate.one import MaskGridError, generate_one, load_generators, read_case, read_mask, write_4d
    from synbt_factory.store import StoreError
    from synbt_factory.synthesis.sampler import SamplerConfig

    try:
        config = SamplerConfig(steps=steps, eta=eta, guidance=guidance, mode=mode)
        dev = resolve_device(device)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    try:
        source = read_case(case)
    except (StoreError, NiftiReadError, FileNotFoundError, KeyError, ValueError) as exc:
        fail(str(exc))
    try:
        tumor = read_mask(mask, source)
    except (NiftiReadError, FileNotFoundError) as exc:
        fail(f"cannot read --mask {mask}: {exc}")
    except MaskGridError as exc:
        fail(str(exc))
    check_writable(out, "--out", folder=False)
    try:
        generators = load_generators(vqvae, diffusion, dev)
    except (CheckpointError, FileNotFoundError) as exc:
        fail(str(exc))
    if not generators.same_vqvae:
        console.print(
            f"[yellow]warning:[/] {diffusion} was trained on latents of another VQ-VAE checkpoint; fine "
            "for a volume-stage fine-tune of the same patch model (same encoder, codebook), wrong otherwise"
        )
    try:
        with progress_bar("DDIM", total=steps) as update:
            result = generate_one(source, tumor, generators, config, seed=seed, progress=update)
    except (ValueError, RuntimeError) as exc:
        fail(f"sampling failed for case {source.label}: {exc}")
    write_4d(out, result.image, source.affine)
    t = result.timings
    console.print(
        f"[green]wrote[/] {out}: case {source.label}, {result.tumor_voxels} tumor voxels, voxels ≥ "
        f"{result.margin} (Euclidean) from the mask unchanged; encode {t['encode']:.2f}s, denoise "
        f"{t['denoise']:.2f}s, decode {t['decode']:.2f}s"
    )
