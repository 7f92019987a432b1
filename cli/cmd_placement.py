"""``synbt bank ...``, ``synbt train tissue`` and ``synbt data tissue``: where synthetic tumors go."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli._console import aliased, check_writable, console, fail, name_flags, progress_bar, setup_logging
from cli._presets import AUTO, choose_preset, preset_help, run_plan


def bank_build(
    data: str = typer.Option(..., "--data", help="Prepared store (synbt data prepare) whose expert masks feed it."),
    out: str = typer.Option("datasets/bank.zarr", "--out", help="Bank store to create."),
    split: list[str] = typer.Option(["train"], "--split",
                                    help="Case splits to take templates from (repeatable); 'all' takes every case."),
    min_voxels: int = typer.Option(8, "--min-voxels", min=1,
                                   help="Skip tumor components smaller than this (annotation specks)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace an existing bank at --out (only a synbt bank store is deleted)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Build the tumor-mask template bank (paper Sec. 2.3): every connected component of the
    training cases' expert masks, cropped to its bounding box, with volume, extents and source."""
    setup_logging(verbose)
    from synbt_factory.store import StoreError
    from synbt_factory.store.outputs import OutputError, check_output_vs_inputs
    from synbt_factory.synthesis.bank import BankConfig, build_bank

    try:
        check_output_vs_inputs(out, [data])
    except OutputError as exc:
        fail(str(exc))
    if "://" not in out and Path(out).exists() and not overwrite:
        fail(f"{out} already exists; pass --overwrite to rebuild it (only a synbt bank is replaced) "
             "or choose another --out")
    try:
        from synbt_factory.store import CaseStore

        n = len(CaseStore.open(data).case_ids())
        with progress_bar("bank", total=n) as update:
            splits = None if "all" in split else tuple(split)
            bank = build_bank(data, out, splits=splits, config=BankConfig(min_voxels=min_voxels),
                              overwrite=overwrite, progress=update)
    except (StoreError, OutputError) as exc:
        fail(f"{exc}")
    summary = bank.summary()
    console.print(f"[green]bank[/] {out}: {summary['templates']} templates from {summary['source_cases']} cases; "
                  f"median diameter {summary['diameter_mm_quantiles']['median']:.1f} mm")


def bank_info(
    bank: str = typer.Argument(..., help="Bank store (synbt bank build)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Template count, source cases, datasets and volume / diameter quantiles of a bank."""
    from synbt_factory.store import StoreError
    from synbt_factory.synthesis.bank import TumorBank

    try:
        summary = TumorBank.open(bank).summary()
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(f"[bold]{summary['location']}[/]: {summary['templates']} templates from "
                  f"{summary['source_cases']} cases")
    console.print(f"datasets: {summary['datasets']}")
    for key in ("volume_mm3_quantiles", "diameter_mm_quantiles"):
        q = summary[key]
        console.print(f"{key.replace('_quantiles', '')}: " + "  ".join(f"{k}={v:.1f}" for k, v in q.items()))


# TissueTrainConfig's field names → the flags that set them, for its validation errors
_TISSUE_FLAGS = {"steps": "--steps", "batch_size": "--batch-size", "patch": "--patch", "roi": "--patch",
                 "workers": "--workers", "seed": "--seed"}


def train_tissue(
    data: str | None = typer.Option(None, "--data", show_default=False,
                                    help="[required] Prepared store with tissue/breast arrays, or a dataset folder "
                                         "with tissue/labels/<ID>.nii.gz and tissue/breast/<ID>.nii.gz."),
    labels: str | None = typer.Option(None, "--labels", hidden=True, help="Older name of --data."),
    out: Path = typer.Option(Path("runs/tissue"), "--out",
                             help="Run folder (final.pt, best.pt, last.pt, history.jsonl)."),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (preset default if omitted).", min=1),
    preset: str = typer.Option(AUTO, "--preset", help=preset_help(
        "train tissue", "tiny: 32³ patches, 60 steps; small: 96³ patches."
    )),
    val: str | None = typer.Option(None, "--val", help="Prepared store with real images + tissue labels to validate "
                                                          "on (default: held-out cases of --data)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Patches per step.", min=1),
    patch: int | None = typer.Option(None, "--patch", min=8,
                                     help="Training patch and inference window edge (multiple of 8 for 'small')."),
    clusters: str = typer.Option("image", "--clusters",
                                 help="k-means features outside the breast: image (real structure) or position."),
    workers: int | None = typer.Option(None, "--workers", min=0,
                                       help="Synthesis worker processes (results do not depend on it)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    seed: int = typer.Option(0, "--seed", help="Run seed.", min=0),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from last.pt."),
    no_resume: bool = typer.Option(False, "--no-resume", hidden=True,
                                   help="Older flag: a run starts fresh unless --resume is given."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Train the fibroglandular-tissue model on images synthesised from label maps only
    (SynthSeg idea, paper Sec. 3.1): random Gaussian-mixture contrast per label, k-means
    clusters (2–8) outside the breast, bias field, blur, noise. Real images only shape the
    k-means clusters (--clusters image; their intensities never reach the network) and validate."""
    setup_logging(verbose)
    from synbt_factory.checkpoint import CheckpointError
    from synbt_factory.device import resolve_device
    from synbt_factory.progress import StepClock
    from synbt_factory.store import StoreError
    from synbt_factory.tissue.train import TissueTrainConfig
    from synbt_factory.tissue.train import train_tissue as run

    labels = aliased(data, labels, "--data", "--labels")
    if resume and no_resume:
        fail("give --resume or --no-resume, not both")
    preset = choose_preset("train tissue", preset, device)

    changes: dict = {"seed": seed}
    if steps is not None:
        changes["steps"] = steps
    if batch_size is not None:
        changes["batch_size"] = batch_size
    if workers is not None:
        changes["workers"] = workers
    if patch is not None:
        changes.update(patch=patch, roi=patch)
    try:
        from synbt_factory.tissue.synth import TissueSynthConfig

        changes["synth"] = TissueSynthConfig(cluster_features=clusters)
        config = TissueTrainConfig.preset(preset, **changes)
    except ValueError as exc:
        fail(name_flags(str(exc), _TISSUE_FLAGS))
    check_writable(out, "--out")
    try:
        with progress_bar("tissue", total=config.steps) as update:
            clock = StepClock(run_plan("train tissue", "train tissue", preset, config.steps,
                                       str(resolve_device(device))), update)
            clock.announce()
            result = run(labels, out, config, val=val, device=device, resume=resume, progress=clock)
    except FileExistsError as exc:
        fail(f"{exc} (add --resume to continue it)")
    except (StoreError, CheckpointError, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(f"{exc}")
    best = "n/a" if result.best_val_dice is None else f"{result.best_val_dice:.3f}"
    model = result.final_path or result.best_path
    console.print(f"[green]tissue model[/] {model} after {result.steps} steps (best validation: {result.best_path}, "
                  f"FGT Dice {best})")


def data_tissue(
    ckpt: Path = typer.Option(..., "--ckpt",
                              help="Tissue checkpoint (synbt train tissue → final.pt, or best.pt for the best "
                                   "validation Dice)."),
    data: str = typer.Option(..., "--data", help="Prepared store to add tissue_pred / breast_pred to."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute cases that already have tissue_pred."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Segment fibroglandular tissue and the breast in every prepared case (sliding window +
    post-processing) and store them as tissue_pred / breast_pred for tumor placement."""
    setup_logging(verbose)
    from synbt_factory.checkpoint import CheckpointError
    from synbt_factory.store import CaseStore, StoreError
    from synbt_factory.tissue.train import add_tissue_to_store

    try:
        store = CaseStore.open(data, mode="r+")
        with progress_bar("tissue", total=len(store.case_ids())) as update:
            result = add_tissue_to_store(ckpt, store, update, device=device, overwrite=overwrite)
    except (StoreError, CheckpointError, RuntimeError) as exc:
        fail(f"{exc}")
    fr = list(result["fgt_fraction"].values())
    mean = f"{sum(fr) / len(fr):.3f}" if fr else "n/a"
    console.print(f"[green]tissue_pred[/] written for {result['written']} case(s), {result['skipped']} skipped; "
                  f"mean FGT fraction of breast {mean}")


def preview_placement(
    data: str = typer.Option(..., "--data",
                             help="Prepared store (with tissue_pred from 'synbt data tissue', or tissue labels)."),
    bank: str = typer.Option(..., "--bank", help="Bank store (synbt bank build)."),
    out: Path = typer.Option(Path("placements.png"), "--out", help="PNG to write."),
    max_cases: int | None = typer.Option(None, "--max-cases", min=1,
                                         help="Number of background cases to show.  [default: 4]"),
    cases: int | None = typer.Option(None, "--cases", hidden=True, min=1, help="Older name of --max-cases."),
    seed: int = typer.Option(0, "--seed", help="Placement seed.", min=0),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Place one bank tumor in each of a few cases and draw axial / coronal / sagittal slices:
    post-contrast, FGT (green), breast outline (yellow), real tumor (red), placed tumor (cyan)."""
    setup_logging(verbose)
    from synbt_factory.rng import case_generator
    from synbt_factory.store import CaseStore, StoreError
    from synbt_factory.synthesis.background_context import context_from_store
    from synbt_factory.synthesis.bank import TumorBank
    from synbt_factory.synthesis.placement import PlacementError, place_tumor, placement_figure

    cases = aliased(max_cases, cases, "--max-cases", "--cases", required=False) or 4
    check_writable(out, "--out", folder=False)
    try:
        store = CaseStore.open(data)
        tb = TumorBank.open(bank)
    except StoreError as exc:
        fail(str(exc))
    rows = []
    for i, case_id in enumerate(store.case_ids()[:cases]):
        try:
            ctx = context_from_store(store, case_id)
            new, record = place_tumor(case_generator(seed, i, "placement"), tb, ctx)
        except PlacementError as exc:
            console.print(f"[yellow]{case_id}[/]: {exc}")
            continue
        arrays, _ = store.read_case(case_id, ("image", "mask"))
        rows.append({"title": f"{case_id} {record.template.template_id} in-breast {record.in_breast_fraction:.0%} "
                              f"in-FGT {record.in_fgt_fraction:.0%}",
                     "image": arrays["image"], "mask": arrays["mask"], "breast": ctx.breast, "fgt": ctx.fgt,
                     "new": new})
    if not rows:
        fail(f"no placement succeeded in the first {cases} case(s) of {data}; check their breast/FGT masks")
    placement_figure(rows, out, title=f"placements from {bank}")
    console.print(f"[green]wrote[/] {out} ({len(rows)} case(s))")
