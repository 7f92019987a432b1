"""``synbt store ...``: inspect, verify, export and preview stores."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli._console import check_writable, console, fail, progress_bar, setup_logging


def store_info(
    store: str = typer.Argument(..., help="Store path (or URL zarr accepts)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Complete and incomplete case counts, size on disk and the dataset card."""
    from synbt_factory.store import StoreError
    from synbt_factory.store.info import store_info as info

    try:
        summary = info(store)
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    console.print(f"[bold]{summary['location']}[/] ({summary['kind']})")
    console.print(f"complete cases: {summary['complete_cases']}   incomplete: {summary['incomplete_cases']}")
    if summary["damaged_case_groups"]:
        console.print(f"[red]damaged case groups: {summary['damaged_case_groups']}[/] "
                      f"(synbt store verify {store} lists them)")
    if summary["bytes_on_disk"] is not None:
        per_case = summary["bytes_per_case"] or 0
        console.print(f"size on disk: {summary['bytes_on_disk'] / 1e6:.1f} MB ({per_case / 1e6:.2f} MB per case)")
    for key, value in summary["card"].items():
        text = json.dumps(value, default=str)
        console.print(f"  [cyan]{key}[/]: {text[:200]}{'…' if len(text) > 200 else ''}")


def store_verify(
    store: str = typer.Argument(..., help="Store path."),
    source: str = typer.Option(None, "--source", help="Prepared store a synthetic store was made from "
                               "(default: the one its card records)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Check the schema, re-read every array and compare with its recorded sha256; exit 1 naming each bad case.

    Catches deleted chunks (zarr silently returns the fill value), corrupted chunks, NaN/Inf values,
    unreadable or unsafely named case groups, shapes, codecs and affines outside the schema, missing
    markers (incomplete cases), unfinished arrays, orphan *.partial files, and synthetic cases made
    from a background that has since changed.
    """
    setup_logging(verbose)
    from rich.markup import escape

    from synbt_factory.store import StoreError
    from synbt_factory.store.verify import verify_store

    try:
        with progress_bar("verify") as update:
            result = verify_store(store, source=source, progress=update)
    except (StoreError, OSError) as exc:
        fail(str(exc))
    for problem in result.store_problems:
        console.print(f"[red]bad[/] store {escape(store)}: {escape(problem)}", soft_wrap=True)
    for case_id, problems in sorted(result.bad_cases.items()):
        for p in problems:
            console.print(f"[red]bad[/] {escape(case_id)}: {escape(p)}", soft_wrap=True)
    for case_id in result.incomplete:
        console.print(f"[yellow]incomplete[/] {escape(case_id)}: no completion marker "
                      "(rerun the generate/prepare command to finish it)", soft_wrap=True)
    for orphan in result.orphans:
        console.print(f"[yellow]orphan[/] {escape(orphan)}", soft_wrap=True)
    for note in result.notes:
        console.print(f"[cyan]note[/] {escape(note)}", soft_wrap=True)
    console.print(f"verified {result.checked} cases: {len(result.bad_cases)} bad, {len(result.incomplete)} incomplete, "
                  f"{len(result.orphans)} orphan files")
    if not result.ok:
        raise typer.Exit(1)


def store_export(
    store: str = typer.Argument(..., help="Store path."),
    fmt: str = typer.Option(..., "--format",
                            help="nifti (MAMA-MIA layout), nnunet (DatasetXXX_Name raw layout) or hdf5."),
    out: Path = typer.Option(..., "--out", help="Output folder (nifti, nnunet) or .h5 file (hdf5)."),
    dataset_id: int = typer.Option(501, "--dataset-id", help="nnU-Net dataset number (1-999)."),
    name: str = typer.Option("SynBT", "--name", help="nnU-Net dataset name."),
    into_nonempty: bool = typer.Option(False, "--into-nonempty",
                                       help="Write into a folder that holds other files (none of them is ever "
                                            "overwritten; an export of another store is still refused)."),
) -> None:
    """Export complete cases so other tools (nnU-Net, NIfTI viewers, HDF5 loaders) read them.

    The folder must be new, empty or a previous export of the same store (rerunning updates it and
    resumes an interrupted export); files the export did not write are never overwritten."""
    from synbt_factory.store import CaseStore, StoreError
    from synbt_factory.store.export import export_store

    if fmt not in ("nifti", "nnunet", "hdf5"):
        fail(f"--format must be nifti, nnunet or hdf5, got {fmt!r}")
    try:
        n = len(CaseStore.open(store).case_ids())
        with progress_bar(f"export {fmt}", total=n) as update:
            path = export_store(store, out, fmt=fmt, dataset_id=dataset_id, dataset_name=name,  # type: ignore[arg-type]
                                into_nonempty=into_nonempty, progress=update)
    except (StoreError, ValueError, OSError) as exc:
        fail(str(exc))
    console.print(f"[green]exported {n} cases[/] → {path}")


def store_preview(
    store: str = typer.Argument(..., help="Store path."),
    out: Path = typer.Option(Path("preview.png"), "--out", help="PNG to write."),
    max_cases: int = typer.Option(6, "--max-cases", help="Rows in the montage.", min=1),
) -> None:
    """A PNG montage: pre, post, subtraction and mask outline (synthetic tumor in cyan)."""
    from synbt_factory.figures import CaseView, case_montage
    from synbt_factory.store import CaseStore, StoreError

    check_writable(out, "--out", folder=False)
    try:
        s = CaseStore.open(store)
        views = []
        for case_id in s.case_ids()[:max_cases]:
            names = ["image", "mask"] + (["synthetic_mask"] if "synthetic_mask" in s.array_names(case_id) else [])
            arrays, attrs = s.read_case(case_id, names)
            label = f"{case_id} ({attrs.get('method', attrs.get('source_case', ''))})"
            views.append(CaseView(label, arrays["image"], arrays["mask"], arrays.get("synthetic_mask")))
        if not views:
            fail(f"{store} has no complete cases to preview")
        case_montage(views, out, title=str(store))
    except StoreError as exc:
        fail(str(exc))
    console.print(f"preview: {out}")
