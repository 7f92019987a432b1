"""``synbt store report``: how real do a synthetic store's tumors look? Figures, montage, card headline, gate."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli._console import aliased, check_writable, console, fail, progress_bar, setup_logging

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
            fail(f"--out {out} already holds {name}, not from an earlier synbt store report; "
                 "choose another --out so that nothing is overwritten")


def store_report(
    store: str = typer.Argument(..., help="Synthetic store (synbt generate)."),
    data: str | None = typer.Option(None, "--data", help=(
        "Prepared store of the real cases the synthetic ones were drawn from (default: the one the store's card "
        "records). Needed for the footprint: each synthetic case is compared with its own background.")),
    real: str | None = typer.Option(None, "--real", hidden=True, help="Older name of --data."),
    out: Path | None = typer.Option(None, "--out", help=(
        "Folder for report.json and montage.png (real vs synthetic rows: pre, post, subtraction, outline, one "
        "intensity window). Without it only the card and the terminal get the headline.")),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON for scripts."),
    fail_under: str | None = typer.Option(None, "--fail-under", help=(
        "Exit 1 naming the figure when the store fails: 'gate' (the thresholds of synbt generate's quality gate), "
        "'target' (post/pre within 0.25, outside/inside <= 1.5, far changed <= 1), or field=value[,...] with "
        "fields enhancement_tolerance, max_outside_over_inside, max_far_changed_over_mask.")),
    max_cases: int = typer.Option(48, "--max-cases", min=1, help="Synthetic cases, and real tumors, compared at most."),
    vqvae: Path | None = typer.Option(None, "--vqvae", help=(
        "VQ-VAE checkpoint (trained on the real cases; e.g. the one the store was generated with): adds the "
        "Fréchet distance of encoder features, real vs synthetic, with a real-vs-real floor.")),
    segmenter: Path | None = typer.Option(None, "--segmenter", help=(
        "Segmenter checkpoint trained on real cases only: adds its Dice on synthetic vs held-out real tumors.")),
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
            result = realism_report(store, real_loc, config=config, vqvae=vqvae, segmenter=segmenter, device=device,
                                    progress=update)
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
