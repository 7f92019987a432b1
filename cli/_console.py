"""Console, logging, progress bars and error exits shared by every command."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Mapping, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console()
err_console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    """Rich log handler on stderr; ``-v`` shows debug messages of synbt."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=verbose)],
        force=True,
    )
    logging.getLogger("synbt_factory").setLevel(level)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error (red, on stderr) and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator:
    """A rich progress bar; yields a :data:`synbt_factory.progress.ProgressFn`.

    The metrics passed to the callback are shown after the bar (e.g. ``loss=0.123``).
    """
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
    ]
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task(description, total=total, metrics="")

        def update(done: int, total_: int, metrics: Mapping[str, float]) -> None:
            text = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
            bar.update(task, completed=done, total=total_, metrics=text)

        yield update
