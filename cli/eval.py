"""``synbt eval ...``: evaluate trained generators (``eval vqvae``: reconstruction quality, codebook use and grid
artifacts of the VQ-VAE on held-out cases)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli._console import check_writable, console, fail, progress_bar, setup_logging

__all__ = ["app", "eval_vqvae"]

app = typer.Typer(help="Evaluate trained generators (reconstruction quality, grid artifacts).", no_args_is_help=True)


@app.command("vqvae")
def eval_vqvae(
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="VQ-VAE checkpoint to evaluate (normally the volume stage's final.pt)."
    ),
    data: Path = typer.Option(..., "--data", help="Prepared store holding the held-out cases."),
    out: Path = typer.Option(
        Path("runs/vqvae_eval"), "--out", help="Folder for vqvae_metrics.json and vqvae_reconstruction.png."
    ),
    patch_ckpt: Path | None = typer.Option(
        None, "--patch-ckpt", help="Patch-stage checkpoint for the patch-only comparison (Fig. 4a middle column)."
    ),
    split: str = typer.Option("test", "--split", help="Cases whose split attribute equals this."),
    cases: str | None = typer.Option(None, "--cases", help="Comma-separated case ids instead of --split."),
    max_cases: int | None = typer.Option(None, "--max-cases", help="Evaluate at most this many cases."),
    tiled: bool = typer.Option(
        False, "--tiled", help="Decode with overlapping latent tiles (bounded memory) instead of one pass."
    ),
    tile: int = typer.Option(16, "--tile", help="Latent tile edge for --tiled."),
    overlap: float = typer.Option(0.5, "--overlap", help="Tile overlap fraction for --tiled."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """PSNR/SSIM per channel, codebook usage and grid-artifact score on held-out cases, plus a Fig. 4a-style PNG."""
    setup_logging(verbose)
    from synbt_factory.checkpoint import CheckpointError
    from synbt_factory.device import resolve_device
    from synbt_factory.evaluate.vqvae_eval import VQVAEEvalConfig, evaluate_vqvae
    from synbt_factory.store import StoreError

    check_writable(out, "--out")
    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        fail(str(exc))
    try:
        cfg = VQVAEEvalConfig(
            splits=(split,),
            case_ids=tuple(c.strip() for c in cases.split(",") if c.strip()) if cases else None,
            max_cases=max_cases,
            tiled=tiled,
            tile=tile,
            overlap=overlap,
        )
        with progress_bar("VQ-VAE evaluation") as progress:
            summary = evaluate_vqvae(ckpt, data, out, patch_ckpt=patch_ckpt, config=cfg, device=dev, progress=progress)
    except (CheckpointError, StoreError) as exc:
        fail(str(exc))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(f"{type(exc).__name__}: {exc}")
    mean = summary["mean"]
    console.print(f"[bold]{summary['num_cases']} case(s)[/], decode {summary['decode']}")
    for key, value in mean.items():
        console.print(f"  {key:28s} {value:.4f}")
    cb = summary["codebook"]
    console.print(f"  codebook perplexity {cb['perplexity']:.1f}, used {cb['used_fraction']:.1%}")
    console.print(f"written: {out / 'vqvae_metrics.json'}, {out / 'vqvae_reconstruction.png'}")
