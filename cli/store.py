"""``synbt store ...``: inspect, verify, export and preview stores; the realism report of a synthetic store
(``store report``: how real do its tumors look? Figures, montage, card headline, gate)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli._console import aliased, check_writable, console, fail, progress_bar, setup_logging

__all__ = ["app", "store_export", "store_info", "store_preview", "store_report", "store_verify"]

app = typer.Typer(help="Synthetic/prepared Zarr stores: info, verify, export, preview.", no_args_is_help=True)


@app.command("info")
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
        console.print(
            f"[red]damaged case groups: {summary['damaged_case_groups']}[/] (synbt store verify {store} lists them)"
        )
    if summary["bytes_on_disk"] is not None:
        per_case = summary["bytes_per_case"] or 0
        console.print(f"size on disk: {summary['bytes_on_disk'] / 1e6:.1f} MB ({per_case / 1e6:.2f} MB per case)")
    for key, value in summary["card"].items():
        text = json.dumps(value, default=str)
        console.print(f"  [cyan]{key}[/]: {text[:200]}{'…' if len(text) > 200 else ''}")


@app.command("verify")
def store_verify(
    store: str = typer.Argument(..., help="Store path."),
    source: str = typer.Option(
        None, "--source", help="Prepared store a synthetic store was made from (default: the one its card records)."
    ),
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
        console.print(
            f"[yellow]incomplete[/] {escape(case_id)}: no completion marker "
            "(rerun the generate/prepare command to finish it)",
            soft_wrap=True,
        )
    for orphan in result.orphans:
        console.print(f"[yellow]orphan[/] {escape(orphan)}", soft_wrap=True)
    for note in result.notes:
        console.print(f"[cyan]note[/] {escape(note)}", soft_wrap=True)
    console.print(
        f"verified {result.checked} cases: {len(result.bad_cases)} bad, {len(result.incomplete)} incomplete, "
        f"{len(result.orphans)} orphan files"
    )
    if not result.ok:
        raise typer.Exit(1)


@app.command("export")
def store_export(
    store: str = typer.Argument(..., help="Store path."),
    fmt: str = typer.Option(
        ..., "--format", help="nifti (MAMA-MIA layout), nnunet (DatasetXXX_Name raw layout) or hdf5."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder (nifti, nnunet) or .h5 file (hdf5)."),
    dataset_id: int = typer.Option(501, "--dataset-id", help="nnU-Net dataset number (1-999)."),
    name: str = typer.Option("SynBT", "--name", help="nnU-Net dataset name."),
    into_nonempty: bool = typer.Option(
        False,
        "--into-nonempty",
        help="Write into a folder that holds other files (none of them is ever "
        "overwritten; an export of another store is still refused).",
    ),
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
            path = export_store(
                store,
                out,
                fmt=fmt,
                dataset_id=dataset_id,
                dataset_name=name,  # type: ignore[arg-type]
                into_nonempty=into_nonempty,
                progress=update,
            )
    except (StoreError, ValueError, OSError) as exc:
        fail(str(exc))
    console.print(f"[green]exported {n} cases[/] → {path}")


@app.command("preview")
def store_preview(
    store: str = typer.Argument(..., help="Store path."),
    out: Path = typer.Option(Path("preview.png"), "--out", help="PNG to write."),
    max_cases: int = typer.Option(6, "--max-cases", help="Rows in the montage.", min=1),
) -> None:
    """A PNG montage: pre, post, subtraction and mask outline (synthetic tumor in cyan)."""
    from synbt_factory.store import StoreError
    from synbt_factory.store.preview import write_store_preview

    check_writable(out, "--out", folder=False)
    try:
        write_store_preview(store, out, max_cases=max_cases)
    except StoreError as exc:
        fail(str(exc))
    console.print(f"preview: {out}")


_OUTPUTS = ("report.json", "montage.png")


def _check_out(out: Path, inputs: list[str]) -> None:
    """``--out`` must be writable, touch no input, and hold no report.json or montage.png but a realism report's."""
    from synbt_factory.store.outputs import OutputError, check_output_vs_inputs

    check_writable(out, "--out")
    try:
        check_output_vs_inputs(out, inputs)
    except OutputError as exc:
        fail(str(exc))
    previous = out / "report.json"
    ours = False
    if previous.is_file():
        try:
            doc = json.loads(previous.read_text())
            ours = isinstance(doc, dict) and {"headline", "figures", "synthetic"} <= set(doc)
        except (OSError, ValueError):
            ours = False
    for name in _OUTPUTS:
        if (out / name).exists() and not ours:
            fail(
                f"--out {out} already holds {name}, not from an earlier synbt store report; "
                "choose another --out so that nothing is overwritten"
            )


@app.command("report")
def store_report(
    store: str = typer.Argument(..., help="Synthetic store (synbt generate)."),
    data: str | None = typer.Option(
        None,
        "--data",
        help=(
            "Prepared store of the real cases the synthetic ones were drawn from (default: the one the store's card "
            "records). Needed for the footprint: each synthetic case is compared with its own background."
        ),
    ),
    real: str | None = typer.Option(None, "--real", hidden=True, help="Older name of --data."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help=(
            "Folder for report.json and montage.png (real vs synthetic rows: pre, post, subtraction, outline, one "
            "intensity window). Without it only the card and the terminal get the headline."
        ),
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON for scripts."),
    fail_under: str | None = typer.Option(
        None,
        "--fail-under",
        help=(
            "Exit 1 naming the figure when the store fails: 'gate' (the thresholds of synbt generate's quality gate), "
            "'target' (post/pre within 0.25, outside/inside <= 1.5, far changed <= 1), or field=value[,...] with "
            "fields enhancement_tolerance, max_outside_over_inside, max_far_changed_over_mask."
        ),
    ),
    max_cases: int = typer.Option(48, "--max-cases", min=1, help="Synthetic cases, and real tumors, compared at most."),
    vqvae: Path | None = typer.Option(
        None,
        "--vqvae",
        help=(
            "VQ-VAE checkpoint (trained on the real cases; e.g. the one the store was generated with): adds the "
            "Fréchet distance of encoder features, real vs synthetic, with a real-vs-real floor."
        ),
    ),
    segmenter: Path | None = typer.Option(
        None,
        "--segmenter",
        help=("Segmenter checkpoint trained on real cases only: adds its Dice on synthetic vs held-out real tumors."),
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (for --vqvae and --segmenter)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Realism report of a synthetic store against the real cases: enhancement, contrast, footprint, shape,
    feature distance, detectability.

    The headline (post/pre synthetic vs real, the footprint medians, the feature distance and its floor,
    the gate verdict) goes into the store's dataset card, so `synbt store info` shows it to whoever
    receives the store.
    """
    setup_logging(verbose)
    real = aliased(data, real, "--data", "--real", required=False)
    from synbt_factory.checkpoint import CheckpointError
    from synbt_factory.evaluate.realism import (
        RealismConfig,
        headline_text,
        json_ready,
        real_store_of,
        realism_report,
        record_headline,
        write_report,
    )
    from synbt_factory.generate.quality_gate import QualityGate, check_gate, parse_fail_under
    from synbt_factory.store import StoreError
    from synbt_factory.store.lock import writer_lock

    try:
        gate = parse_fail_under(fail_under) if fail_under is not None else QualityGate()
        config = RealismConfig(max_cases=max_cases)
    except ValueError as exc:
        fail(str(exc))
    for path, flag in ((vqvae, "--vqvae"), (segmenter, "--segmenter")):
        if path is not None and not path.is_file():
            fail(f"{flag} {path} does not exist; give a checkpoint file ({flag} is optional)")
    try:
        real_loc = real or real_store_of(store)
        if out is not None:
            _check_out(out, [store] + ([real_loc] if real_loc else []))
        with progress_bar("report") as update:
            result = realism_report(
                store, real_loc, config=config, vqvae=vqvae, segmenter=segmenter, device=device, progress=update
            )
        verdict = check_gate(result.headline, gate, require_all=fail_under is not None)
        headline = {**result.headline, "gate": verdict.to_dict()}
        paths = write_report(result, out, headline=headline) if out is not None else {}
    except (StoreError, CheckpointError, ValueError, OSError) as exc:
        fail(str(exc))
    try:
        with writer_lock(store, command="store report"):
            record_headline(store, headline)
        card_note = "headline written to the store's card (synbt store info shows it)"
    except (StoreError, OSError) as exc:
        card_note = f"[yellow]the card was not updated[/]: {exc}"
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "headline": json_ready(headline)}, indent=2))
    else:
        console.print(f"[bold]{store}[/] vs {result.real}: {headline_text(headline)}", soft_wrap=True)
        for note in result.notes:
            console.print(f"  note: {note}", soft_wrap=True)
        for name, path in paths.items():
            console.print(f"  {name}: {path}")
        console.print(f"  {card_note}", soft_wrap=True)
    if fail_under is not None and not verdict.passed:
        fail(verdict.message(f"the tumors of {store}"), code=1)
