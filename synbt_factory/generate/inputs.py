"""Check the inputs of ``synbt generate`` before any task is submitted or any store is created.

Each problem is one sentence naming the flag (``--data``, ``--bank``, ``--vqvae``, ``--diffusion``, ``--out``),
the path and the fix. :func:`generate_input_problems` lists them all, so one error line reports everything
that is wrong; :func:`check_generate_inputs` raises :class:`GenerateInputError` with that line. The checks are
cheap (store roots and attributes, the first background case's array names, file existence); loading the
checkpoints' weights is left to the method.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from synbt_factory.store import CaseStore, StoreError
from synbt_factory.store.outputs import OutputError, check_output_vs_inputs, store_kind_at

__all__ = [
    "GenerateInputError",
    "background_problems",
    "bank_problems",
    "checkpoint_problems",
    "check_generate_inputs",
    "generate_input_problems",
    "out_problems",
]

log = logging.getLogger(__name__)

#: the arrays a background case must hold for placement and synthesis
BACKGROUND_ARRAYS = ("image", "mask")


class GenerateInputError(ValueError):
    """An input of ``synbt generate`` that cannot work; the message names every flag at fault and the fix."""


def _is_remote(location: str | Path) -> bool:
    return "://" in str(location)


def _missing(location: str | Path) -> bool:
    return not _is_remote(location) and not Path(location).exists()


def background_problems(prepared: str | Path, *, split: str | None = "train", flag: str = "--data") -> list[str]:
    """Problems of the prepared store of backgrounds: missing, not a store, another kind, no usable case."""
    if _missing(prepared):
        return [f"{flag} {prepared} does not exist; give the prepared store made by 'synbt data prepare'"]
    try:
        store = CaseStore.open(prepared)
    except StoreError as exc:
        return [f"{flag}: {exc}"]
    if store.kind == "synthetic":
        return [
            f"{flag} {prepared} is a synthetic store (the output of 'synbt generate'), not real backgrounds; "
            "give the prepared store made by 'synbt data prepare'"
        ]
    if store.kind != "prepared":
        return [
            f"{flag} {prepared} is a {store.kind!r} store, not a prepared one; give the prepared store made by "
            "'synbt data prepare'"
        ]
    cases = store.case_ids()
    backgrounds = [c for c in cases if split is None or store.case_attrs(c).get("split") == split]
    if not backgrounds:
        where = "" if split is None else f" in split {split!r}"
        return [
            f"{flag} {prepared} has no complete case{where} ({len(cases)} complete in all); prepare a dataset "
            "with training cases ('synbt data prepare')"
        ]
    lacking = [a for a in BACKGROUND_ARRAYS if a not in store.array_names(backgrounds[0])]
    if lacking:
        return [
            f"{flag} {prepared}: case {backgrounds[0]} has no {', '.join(lacking)} array; it does not follow "
            "the prepared schema: prepare it again with 'synbt data prepare'"
        ]
    return []


def bank_problems(bank: str | Path, *, flag: str = "--bank") -> list[str]:
    """Problems of the tumor bank: missing, not a store, another kind (a prepared store), no template."""
    from synbt_factory.synthesis.bank import TumorBank

    if _missing(bank):
        return [f"{flag} {bank} does not exist; build the bank with 'synbt bank build --data PREPARED --out {bank}'"]
    try:
        TumorBank.open(bank)
    except StoreError as exc:
        return [f"{flag}: {exc}"]
    return []


def checkpoint_problems(checkpoints: Iterable[tuple[str, Path | None]]) -> list[str]:
    """Problems of checkpoint files given as ``(flag, path)``: missing, or a folder (None: not given, skipped)."""
    problems = []
    for flag, path in checkpoints:
        if path is None:
            continue
        if not Path(path).exists():
            problems.append(
                f"{flag} {path} does not exist; train one first ('synbt train "
                f"{flag.lstrip('-')}') or give the path of its final.pt"
            )
        elif Path(path).is_dir():
            problems.append(f"{flag} {path} is a folder; give the checkpoint file inside it (e.g. final.pt)")
    return problems


def out_problems(out: str | Path, inputs: Iterable[str | Path], *, flag: str = "--out") -> list[str]:
    """Problems of the output store: it is one of the inputs (or inside one), or a synbt store of another kind."""
    try:
        check_output_vs_inputs(out, inputs, option=flag)
    except OutputError as exc:
        return [str(exc)]
    if not _is_remote(out):
        kind = store_kind_at(out)
        if kind is not None and kind != "synthetic":
            return [f"{flag} {out} is a synbt {kind!r} store, not a synthetic one; choose another {flag}"]
    return []


def generate_input_problems(
    *,
    prepared: str | Path,
    bank: str | Path,
    out: str | Path | None = None,
    vqvae: Path | None = None,
    diffusion: Path | None = None,
    split: str | None = "train",
) -> list[str]:
    """Every problem of generate's inputs, each one sentence naming its flag; empty when all can be used."""
    problems = checkpoint_problems([("--vqvae", vqvae), ("--diffusion", diffusion)])
    problems += background_problems(prepared, split=split)
    problems += bank_problems(bank)
    if out is not None:
        problems += out_problems(out, [prepared, bank])
    return problems


def check_generate_inputs(**inputs: object) -> None:
    """Raise :class:`GenerateInputError` listing every problem :func:`generate_input_problems` finds.

    Raises:
        GenerateInputError: one line, the problems joined by ``"; "``.
    """
    problems = generate_input_problems(**inputs)  # type: ignore[arg-type]
    if problems:
        raise GenerateInputError("; ".join(problems))
