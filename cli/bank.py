"""``synbt bank ...``: the tumor-mask template bank (paper Sec. 2.3): build it, inspect it, preview placements."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli._console import aliased, check_writable, console, fail, progress_bar, setup_logging

__all__ = ["app", "bank_build", "bank_info", "preview_placement"]

app = typer.Typer(help="The tumor-mask template bank: build, inspect, preview placements.", no_args_is_help=True)


@app.command("build")
def bank_build(
    data: str = typer.Option(..., "--data", help="Prepared store (synbt data prepare) whose expert masks feed it."),
    out: str = typer.Option("datasets/bank.zarr", "--out", help="Bank store to create."),
    split: list[str] = typer.Option(
        ["train"], "--split", help="Case splits to take templates from (repeatable); 'all' takes every case."
    ),
    min_voxels: int = typer.Option(
        8, "--min-voxels", min=1, help="Skip tumor components smaller than this (annotation specks)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing bank at --out (only a synbt bank store is deleted)."
    ),
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
        fail(
            f"{out} already exists; pass --overwrite to rebuild it (only a synbt bank is replaced) "
            "or choose another --out"
        )
    try:
        from synbt_factory.store import CaseStore

        n = len(CaseStore.open(data).case_ids())
        with progress_bar("bank", total=n) as update:
            splits = None if "all" in split else tuple(split)
            bank = build_bank(
                data, out, splits=splits, config=BankConfig(min_voxels=min_voxels), overwrite=overwrite, progress=update
            )
    except (StoreError, OutputError) as exc:
        fail(f"{exc}")
    summary = bank.summary()
    console.print(
        f"[green]bank[/] {out}: {summary['templates']} templates from {summary['source_cases']} cases; "
        f"median diameter {summary['diameter_mm_quantiles']['median']:.1f} mm"
    )


@app.command("info")
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
    console.print(
        f"[bold]{summary['location']}[/]: {summary['templates']} templates from {summary['source_cases']} cases"
    )
    console.print(f"datasets: {summary['datasets']}")
    for key in ("volume_mm3_quantiles", "diameter_mm_quantiles"):
        q = summary[key]
        console.print(f"{key.replace('_quantiles', '')}: " + "  ".join(f"{k}={v:.1f}" for k, v in q.items()))


@app.command("preview")
def preview_placement(
    data: str = typer.Option(
        ..., "--data", help="Prepared store (with tissue_pred from 'synbt data tissue', or tissue labels)."
    ),
    bank: str = typer.Option(..., "--bank", help="Bank store (synbt bank build)."),
    out: Path = typer.Option(Path("placements.png"), "--out", help="PNG to write."),
    max_cases: int | None = typer.Option(
        None, "--max-cases", min=1, help="Number of background cases to show.  [default: 4]"
    ),
    cases: int | None = typer.Option(None, "--cases", hidden=True, min=1, help="Older name of --max-cases."),
    seed: int = typer.Option(0, "--seed", help="Placement seed.", min=0),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Place one bank tumor in each of a few cases and draw axial / coronal / sagittal slices:
    post-contrast, FGT (green), breast outline (yellow), real tumor (red), placed tumor (cyan)."""
    setup_logging(verbose)
    from synbt_factory.store import CaseStore, StoreError
    from synbt_factory.synthesis.bank import TumorBank
    from synbt_factory.synthesis.placement import placement_figure
    from synbt_factory.synthesis.placement_preview import preview_placements

    cases = aliased(max_cases, cases, "--max-cases", "--cases", required=False) or 4
    check_writable(out, "--out", folder=False)
    try:
        store = CaseStore.open(data)
        tb = TumorBank.open(bank)
    except StoreError as exc:
        fail(str(exc))
    preview = preview_placements(store, tb, max_cases=cases, seed=seed)
    for case_id, why in preview.skipped:
        console.print(f"[yellow]{case_id}[/]: {why}")
    if not preview.rows:
        fail(f"no placement succeeded in the first {cases} case(s) of {data}; check their breast/FGT masks")
    placement_figure(preview.rows, out, title=f"placements from {bank}")
    console.print(f"[green]wrote[/] {out} ({len(preview.rows)} case(s))")
