"""``synbt data ...``: make the phantom, index, check and prepare MAMA-MIA-layout datasets, and add what tumor
placement needs to a prepared store (placement contexts, fibroglandular tissue)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from cli._console import check_writable, console, err_console, fail, progress_bar, setup_logging

__all__ = ["app", "data_check", "data_index", "data_phantom", "data_placement_context", "data_prepare", "data_tissue"]

app = typer.Typer(help="Datasets in MAMA-MIA layout: make the phantom, index, check, prepare.", no_args_is_help=True)


@app.command("phantom")
def data_phantom(
    out: Path = typer.Option(Path("datasets/phantom"), "--out", help="Folder to write the phantom dataset into."),
    n: int = typer.Option(12, "--n", help="Number of cases.", min=1),
    seed: int = typer.Option(0, "--seed", help="Run seed: same seed and options give byte-identical files.", min=0),
    size: str = typer.Option(
        "small", "--size", help="Preset: tiny (tests), small (demo), default (paper-like field of view)."
    ),
    healthy_fraction: float = typer.Option(0.1, "--healthy-fraction", help="Fraction of cases without a tumor."),
    site: str = typer.Option(
        "A",
        "--site",
        help="A: the training phantom. B: an external test family, never used for training: larger, fattier "
        "breasts (projection 0.40-0.52 vs 0.32-0.46 of the field of view, FGT x0.65), skin 2.4-3.4 vs "
        "1.4-2.4 mm; slower wash-in (70-110 vs 35-60 s), 60% plateau curves, lower enhancement "
        "(0.8-1.5 vs 1.0-2.1); tumors up to 40/32/19 mm (default/small/tiny, vs 40/28/12), rim-enhancing, "
        "lobulated or non-mass (clumped foci); 7.5% vs 52.5% fat-suppressed; slices 2.5-3.5 mm (tiny 2.8-3.6) "
        "vs 1.0-2.0 (tiny 1.5-2.5); noise 0.035-0.06 vs 0.012-0.03; bias 0.3-0.45 vs 0.1-0.25; stored "
        "LPS/LAS/coronal, never RAS. The README it writes lists every difference.",
    ),
    test_fraction: float | None = typer.Option(
        None, "--test-fraction", help="Share of cases listed in test_split, in [0, 1) (default: 0.2)."
    ),
    preview: Path | None = typer.Option(None, "--preview", help="Also write a PNG preview of a few cases here."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Write a procedural breast DCE-MRI PHANTOM in MAMA-MIA's exact layout.

    The phantom is synthetic, not patient data: body and chest wall, two breasts with skin, fat and
    fibroglandular tissue, vessels, 1-2 enhancing tumors per case, per-tissue contrast kinetics,
    bias field and Rician noise. It is the embedded default for the demo and the tests. --site B
    writes the external test family (other anatomy, kinetics, tumors, noise, slices and orientations).
    """
    setup_logging(verbose)
    from synbt_factory.phantom import PRESETS, SITES, write_phantom, write_preview

    if size not in PRESETS:
        fail(f"--size must be one of {', '.join(PRESETS)}, got {size!r}")
    if not 0.0 <= healthy_fraction <= 1.0:
        fail(f"--healthy-fraction must be in [0, 1], got {healthy_fraction}")
    if site.strip().upper() not in SITES:
        fail(f"--site must be one of {', '.join(SITES)}, got {site!r}")
    site = site.strip().upper()
    if test_fraction is not None and not 0.0 <= test_fraction < 1.0:
        fail(f"--test-fraction must be in [0, 1), got {test_fraction}")
    check_writable(out, "--out")
    if preview is not None:
        check_writable(preview, "--preview", folder=False)
    with progress_bar("phantom", total=n) as update:
        ids = write_phantom(
            out,
            n=n,
            seed=seed,
            size=size,
            healthy_fraction=healthy_fraction,
            site=site,
            test_fraction=test_fraction,
            progress=update,
        )
    label = "" if site == "A" else f"site-{site} "
    console.print(f"[green]wrote {len(ids)} {label}phantom cases[/] to {out}")
    if preview is not None:
        write_preview(out, preview)
        console.print(f"preview: {preview}")


@app.command("index")
def data_index(
    dataset: Path = typer.Argument(..., help="Dataset root in MAMA-MIA layout (holds images/, segmentations/ ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """List every case: phases, shape, spacing, split and tumor voxels.

    File names are matched case-insensitively, non-NIfTI files are ignored and phases are
    ordered by their number (_0000 = pre-contrast).
    """
    setup_logging(verbose)
    from synbt_factory.data.check import check_dataset, dataset_problems
    from synbt_factory.data.mamamia import DatasetLayoutError, index_dataset

    try:
        index = index_dataset(dataset)
    except DatasetLayoutError as exc:
        fail(str(exc))
    for problem in dataset_problems(index):
        err_console.print(
            f"[yellow]{problem.severity}[/] {escape(problem.file)}: {escape(problem.message)} (see synbt data check)"
        )
    reports = check_dataset(index, read_data=True)
    rows = [
        {
            "case_id": r.case_id,
            "n_phases": r.n_phases,
            "shape": list(r.shape) if r.shape else None,
            "spacing": [round(s, 4) for s in r.spacing] if r.spacing else None,
            "split": r.split,
            "tumor_voxels": r.tumor_voxels,
        }
        for r in reports
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} cases in {dataset}")
    for col in ("case_id", "n_phases", "shape", "spacing", "split", "tumor_voxels"):
        table.add_column(col)

    def cell(value: object) -> str:
        return "-" if value is None else "×".join(map(str, value)) if isinstance(value, list) else str(value)

    for row in rows:
        table.add_row(*[cell(row[c]) for c in ("case_id", "n_phases", "shape", "spacing", "split", "tumor_voxels")])
    console.print(table)


@app.command("check")
def data_check(
    dataset: Path = typer.Argument(..., help="Dataset root in MAMA-MIA layout."),
    strict: bool = typer.Option(False, "--strict", help="Treat empty expert masks as errors."),
    workers: int = typer.Option(2, "--workers", help="Parallel readers.", min=1),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Report every problem of every case in one run; exit 1 if any case is unusable.

    Checks: missing pre- or post-contrast phase, a gap in the phase numbers, phases on different
    grids, 4D series, zero/negative/NaN voxel sizes and singular affines, expert masks (and tissue
    labels) whose shape or affine differs from the image, NaN/Inf voxels, a constant pre-contrast
    phase, truncated or corrupt .nii.gz, links and folders named like NIfTI files (every file is
    read completely), empty expert masks (warning; error with --strict), unsafe case ids, a case
    in two splits, and an unreadable splits file (reported once, for the whole dataset).
    'synbt data prepare' runs the same per-case checks and refuses every case they reject.
    """
    setup_logging(verbose)
    from synbt_factory.data.check import check_dataset, dataset_problems
    from synbt_factory.data.mamamia import DatasetLayoutError, index_dataset

    try:
        index = index_dataset(dataset)
    except DatasetLayoutError as exc:
        fail(str(exc))
    with progress_bar("check", total=len(index)) as update:
        reports = check_dataset(index, strict=strict, workers=workers, progress=update)
    general = dataset_problems(index)
    n_err = n_warn = 0
    for p in [*general, *(p for r in reports for p in r.problems)]:
        colour = "red" if p.severity == "error" else "yellow"
        console.print(
            f"[{colour}]{p.severity:7s}[/] [bold]{escape(p.case_id)}[/] {escape(p.file)}: "
            f"{escape(p.message)} — {escape(p.fix)}"
        )
        n_err += p.severity == "error"
        n_warn += p.severity == "warning"
    for note in index.notes:
        console.print(f"[yellow]note[/] {escape(note)}")
    unusable = [r.case_id for r in reports if not r.usable]
    console.print(
        f"{len(reports)} cases: {len(reports) - len(unusable)} usable, {len(unusable)} unusable, "
        f"{n_err} errors, {n_warn} warnings"
    )
    if unusable or any(p.severity == "error" for p in general):
        raise typer.Exit(1)


@app.command("prepare")
def data_prepare(
    dataset: Path = typer.Argument(..., help="Dataset root in MAMA-MIA layout."),
    out: Path = typer.Option(..., "--out", help="Prepared Zarr store to write (resumes if it exists)."),
    fov: tuple[int, int, int] = typer.Option((192, 192, 128), "--fov", help="Field of view X Y Z in mm (RAS order)."),
    first_post_only: bool = typer.Option(
        False, "--first-post-only", help="Do not keep the other post-contrast phases."
    ),
    workers: int = typer.Option(2, "--workers", help="Cases prepared in parallel (Dask threads).", min=1),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Reorient to RAS, resample to 1 mm, normalise, crop and write the case schema to Zarr.

    One intensity scale (pre-contrast 99.5th percentile) is shared by all phases so enhancement
    keeps its sign and size. Channel 0 = pre-contrast, 1 = first post-contrast; all post phases
    are also kept as 'phases' unless --first-post-only. Re-running resumes. Every case is first
    checked as 'synbt data check' does; a case with an error is refused (named with its file and
    cause, exit 1) and never written.
    """
    setup_logging(verbose)
    from synbt_factory.data.mamamia import DatasetLayoutError, index_dataset
    from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
    from synbt_factory.store import StoreError

    try:
        config = PrepareConfig(fov_mm=fov, keep_all_phases=not first_post_only)
        n = len(index_dataset(dataset))
        with progress_bar("prepare", total=n) as update:
            result = prepare_dataset(dataset, out, config=config, workers=workers, progress=update)
    except (DatasetLayoutError, StoreError, ValueError, OSError) as exc:
        fail(str(exc))
    console.print(
        f"[green]prepared {len(result.prepared)}[/], skipped {len(result.skipped)} already complete, "
        f"failed {len(result.failed)} → {escape(str(out))}"
    )
    for case_id, message in sorted(result.failed.items()):
        console.print(f"[red]failed[/] [bold]{escape(case_id)}[/] {escape(message.removeprefix(f'{case_id}: '))}")
    padding = result.padding_warning(config.fov_mm)
    if padding:
        console.print(f"[yellow]warning:[/] {escape(padding)}")
    if result.failed:
        raise typer.Exit(1)


@app.command("placement-context")
def data_placement_context(
    data: str = typer.Option(..., "--data", help="Prepared store (synbt data prepare) to store the contexts in."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Rebuild contexts that are already stored."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Store each background's placement context (body, chest wall, breast, depth map) in the prepared store.

    'synbt data prepare' and 'synbt data tissue' already do this for the cases they write; run it for a store
    prepared by an older release. 'synbt generate' then reads the contexts instead of building them in every run;
    placements are identical either way. A context is rebuilt only when its case's image, tumor or breast mask
    changed.
    """
    setup_logging(verbose)
    from synbt_factory.store import CaseStore, StoreError
    from synbt_factory.store.lock import writer_lock
    from synbt_factory.synthesis.background_context import store_placement_anatomy

    try:
        store = CaseStore.open(data, mode="r+")
        if store.kind != "prepared":
            fail(f"--data {data} is a {store.kind!r} store; give the prepared store made by 'synbt data prepare'")
        with writer_lock(store.location, command="data placement-context"):
            with progress_bar("placement context", total=len(store.case_ids())) as update:
                result = store_placement_anatomy(store, progress=update, overwrite=overwrite)
    except (StoreError, OSError) as exc:
        fail(str(exc))
    console.print(
        f"[green]placement context stored[/] for {result['written']} case(s), {result['skipped']} "
        f"already stored → {escape(data)}"
    )
    if result["no_breast"]:
        console.print(
            f"[yellow]warning:[/] {len(result['no_breast'])} case(s) have no breast inside the body, so "
            f"no tumor can be placed in them: {escape(', '.join(result['no_breast'][:5]))}"
        )


@app.command("tissue")
def data_tissue(
    ckpt: Path = typer.Option(
        ...,
        "--ckpt",
        help="Tissue checkpoint (synbt train tissue → final.pt, or best.pt for the best validation Dice).",
    ),
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
    from synbt_factory.tissue.infer import add_tissue_to_store

    try:
        store = CaseStore.open(data, mode="r+")
        with progress_bar("tissue", total=len(store.case_ids())) as update:
            result = add_tissue_to_store(ckpt, store, update, device=device, overwrite=overwrite)
    except (StoreError, CheckpointError, RuntimeError) as exc:
        fail(f"{exc}")
    fr = list(result["fgt_fraction"].values())
    mean = f"{sum(fr) / len(fr):.3f}" if fr else "n/a"
    console.print(
        f"[green]tissue_pred[/] written for {result['written']} case(s), {result['skipped']} skipped; "
        f"mean FGT fraction of breast {mean}"
    )
