"""``synbt demo``: the whole method on the embedded phantom, in one resumable command."""

from __future__ import annotations

from pathlib import Path

import typer

from cli._console import check_writable, console, fail, progress_bar, setup_logging

__all__ = ["demo"]


def _show(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def demo(
    out: Path = typer.Option(
        Path("runs/demo"),
        "--out",
        help=(
            "Run folder. Rerunning the same command resumes it: finished steps (markers "
            "steps/STEP.done.json) are skipped."
        ),
    ),
    preset: str = typer.Option(
        "tiny",
        "--preset",
        help=(
            "tiny: 24 phantom cases of 64×64×48 mm, a few minutes on 2 CPU cores, VQ-VAE and denoiser from the "
            "weights shipped with synbt. small: 24 cases of 128×128×80 mm, every network trained here (a GPU helps)."
        ),
    ),
    from_scratch: bool = typer.Option(
        False,
        "--from-scratch",
        help=(
            "Train the VQ-VAE and the denoiser here with the CPU recipe the shipped weights were trained with "
            "(tiny: about 25 min more on 2 CPU cores) instead of installing the shipped, sha256-checked weights."
        ),
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Run seed: phantom, every training, generation.", min=0),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Run the whole SynBT method on the embedded procedural phantom.

    Steps: phantom → prepare → VQ-VAE (patch stage, then volume stage; shipped weights unless
    --from-scratch) and its evaluation → latent diffusion (likewise) → tissue model → tumor bank →
    synthetic cases with SynTumor and SynBT (SynBT stops at the quality gate if its first cases are
    far from real tumors) → realism report → PNG previews → U-Net segmenters trained on real only and
    real + synthetic (same budget and seed) → an evaluation table on the test split. Each step leaves
    a marker when its outputs are complete; interrupt it at any time and rerun the same command to
    continue. The segmentation budgets are tiny: the table shows that every part runs, not the paper's
    results.
    """
    setup_logging(verbose)
    from rich.markdown import Markdown
    from rich.table import Table

    from synbt_factory.experiments.demo import DEMO_PRESETS, DemoError, demo_preset, run_demo

    if preset not in DEMO_PRESETS:
        fail(f"--preset must be one of {', '.join(DEMO_PRESETS)}, got {preset!r}")
    try:
        config = demo_preset(preset, from_scratch=from_scratch)
    except ValueError as exc:
        fail(str(exc))
    check_writable(out, "--out")
    from synbt_factory.device import resolve_device

    try:
        resolve_device(device)
    except RuntimeError as exc:
        fail(str(exc))
    generators = "generators trained here" if config.generators == "scratch" else "shipped generator weights"
    console.print(
        f"[bold]synbt demo[/] (preset {preset}, {generators}, seed {seed}) → {_show(out)}  "
        f"[dim]{len(config.step_names())} steps; rerun the same command to resume[/]"
    )
    try:
        result = run_demo(out, preset=config, device=device, seed=seed, progress_factory=progress_bar)
    except DemoError as exc:
        cause = exc.__cause__
        hint = ""
        if isinstance(cause, MemoryError):
            hint = " (out of memory: close other programs or use a machine with more memory)"
        fail(
            f"{str(exc).rstrip('.')}{hint}. Finished steps are kept in {out}; fix the cause and rerun "
            f"'synbt demo --out {out} --preset {preset} --seed {seed}{' --from-scratch' if from_scratch else ''}' "
            "to continue from this step.",
            code=1,
        )
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))

    table = Table(title="synbt demo steps", show_lines=False)
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("status")
    table.add_column("result")
    table.add_column("artifact")
    for step in result.steps:
        first = next(iter(step.outputs.values()), None)
        table.add_row(
            step.name,
            f"{step.seconds:.1f}",
            "[dim]done earlier[/]" if step.skipped else "[green]ran[/]",
            str(step.info.get("headline", "")),
            _show(first) if first is not None else "",
        )
    ran = sum(s.seconds for s in result.steps if not s.skipped)
    table.caption = (
        f"this call: {result.wall_seconds:.1f} s wall ({ran:.1f} s in steps); "
        f"all steps: {sum(s.seconds for s in result.steps):.1f} s"
    )
    console.print(table)

    def art(step: str, key: str) -> str:
        return _show(result.artifact(step, key))

    eval_md = result.artifact("eval_table", "markdown")
    console.print(Markdown(eval_md.read_text()))
    realism = result.step("realism").info
    for method, name in (("synbt", "SynBT"), ("syntumor", "SynTumor")):
        if method in realism:
            verdict = "meets the targets" if realism[method]["meets_targets"] else "[red]misses the targets[/]"
            console.print(f"[bold]realism {name}[/] ({verdict}): {realism[method]['headline']}", soft_wrap=True)
    console.print("[bold]Open these[/]")
    lines = [
        ("phantom cases", art("phantom", "preview")),
        ("VQ-VAE reconstruction (real | patch-only | patch-to-volume)", art("vqvae_eval", "figure")),
        (
            "synthetic tumors side by side (background | SynTumor | SynBT)",
            art("previews", "compare") if "compare" in result.step("previews").outputs else "—",
        ),
        ("SynBT cases", art("previews", "synbt")),
        ("SynTumor cases", art("previews", "syntumor")),
        ("realism montage, SynBT (real rows, then synthetic rows)", art("realism", "synbt")),
        ("evaluation table (Markdown)", art("eval_table", "markdown")),
        ("evaluation table (CSV)", art("eval_table", "csv")),
    ]
    lines += [
        (f"per-case test metrics, {s.name.removeprefix('segment_')} arm", art(s.name, "metrics"))
        for s in result.steps
        if s.name.startswith("segment_")
    ]
    for what, where in lines:
        console.print(f"  {what}: [cyan]{where}[/]")
    console.print("[bold]Stores and models[/]")
    stores = [
        ("prepared store (+ tissue_pred)", art("prepare", "prepared")),
        ("tumor bank", art("bank", "bank")),
        ("SynBT store", art("generate_synbt", "store")),
        ("SynTumor store", art("generate_syntumor", "store")),
        ("VQ-VAE", art("vqvae_volume", "checkpoint")),
        ("diffusion", art("diffusion", "checkpoint")),
        ("tissue model", art("tissue", "checkpoint")),
    ]
    for what, where in stores:
        console.print(f"  {what}: [cyan]{where}[/]")
    synbt_store = art("generate_synbt", "store")
    console.print(
        f"next: synbt store info {synbt_store}   synbt store verify {synbt_store}   "
        f"synbt store export {synbt_store} --format nnunet --out exported_nnunet"
    )
