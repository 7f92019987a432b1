"""Console, logging, progress bars, error exits and the error boundary shared by every command.

Every error a user sees is one red ``error:`` line on stderr. :func:`fail` prints a message a command
wrote and exits 2. :func:`report_error` is the CLI-wide boundary for exceptions no command handled:
expected ones (file-system errors, the project's own error types, ``ValueError`` raised by synbt's own
validation) exit 2 with their message; anything else exits 1 naming the exception type. The traceback
is shown only when asked for: the global ``synbt -v``, a command's ``-v`` or ``SYNBT_DEBUG=1``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = [
    "EXIT_EXPECTED",
    "EXIT_INTERRUPTED",
    "EXIT_UNEXPECTED",
    "CommandFailed",
    "check_writable",
    "console",
    "err_console",
    "fail",
    "progress_bar",
    "report_error",
    "report_interrupt",
    "reset_tracebacks",
    "setup_logging",
    "show_tracebacks",
]

console = Console()
err_console = Console(stderr=True)

EXIT_EXPECTED = 2
EXIT_UNEXPECTED = 1
EXIT_INTERRUPTED = 130
DEBUG_ENV = "SYNBT_DEBUG"
_PROJECT_PACKAGES = ("synbt_factory", "cli")
# who asked for tracebacks in this invocation: the global ``synbt -v`` and the command's own ``-v``
_traceback_requests = {"global": False, "command": False}


class CommandFailed(SystemExit):
    """Raised by :func:`fail` once its message is printed.

    A ``SystemExit`` and not ``typer.Exit``: ``typer.Exit`` is a ``RuntimeError``, so a command's own
    ``except RuntimeError`` would catch it and report the exit code as a second error.
    """


def setup_logging(verbose: bool = False) -> None:
    """Rich log handler on stderr; ``-v`` shows debug messages of synbt and the traceback of an error."""
    _traceback_requests["command"] = verbose
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=verbose)],
        force=True,
    )
    logging.getLogger("synbt_factory").setLevel(level)
    # Dask's scheduler and workers log every start and stop at INFO: only their warnings, unless -v
    logging.getLogger("distributed").setLevel(logging.DEBUG if verbose else logging.WARNING)


def show_tracebacks(on: bool) -> None:
    """The global ``synbt -v``: show the traceback of an error."""
    _traceback_requests["global"] = on


def reset_tracebacks() -> None:
    """Forget earlier requests (called when a new command line starts)."""
    for key in _traceback_requests:
        _traceback_requests[key] = False


def _tracebacks_wanted() -> bool:
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return any(_traceback_requests.values()) or env not in ("", "0", "false", "no")


def _print_error(text: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True)


def fail(message: str, code: int = EXIT_EXPECTED) -> NoReturn:
    """Print an error (one red line, on stderr) and exit with ``code``."""
    _print_error(" ".join(message.split()))
    raise CommandFailed(code)


def check_writable(path: Path | str, flag: str, *, folder: bool = True) -> None:
    """Fail, naming ``flag`` and the path, unless ``path`` can be written; nothing is created.

    ``path`` must be a folder (``folder``) or a file name (not ``folder``) if it exists, and the
    nearest existing folder on its way must be writable by this user.
    """
    target = Path(path)
    if target.exists():
        if folder and not target.is_dir():
            fail(f"{flag} {target} is a file, not a folder; choose a folder for {flag}")
        if not folder and target.is_dir():
            fail(f"{flag} {target} is a folder; give a file name for {flag}")
    probe = target if folder else target.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        fail(f"cannot create {flag} {target}: {probe} is a file, not a folder; choose another {flag}")
    if not os.access(probe, os.W_OK | os.X_OK):
        fail(f"cannot write {flag} {target}: the folder {probe} is read-only for this user; choose a writable {flag}")


def _raised_in_project(exc: BaseException) -> bool:
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0] in _PROJECT_PACKAGES


def _is_expected(exc: BaseException) -> bool:
    """File-system errors, synbt's own error types and ``ValueError`` raised by synbt's validation."""
    if isinstance(exc, OSError):
        return True
    if type(exc).__module__.split(".")[0] in _PROJECT_PACKAGES:
        return True
    return isinstance(exc, ValueError) and _raised_in_project(exc)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None and type(exc).__str__ is OSError.__str__:
        text = f"{exc.strerror}: {exc.filename}" + (f" → {exc.filename2}" if exc.filename2 is not None else "")
        if isinstance(exc, PermissionError):
            text += " (check its permissions or choose another path)"
        return text
    return " ".join(str(exc).split())


def report_error(exc: BaseException) -> int:
    """Print an exception no command handled as one red line (its traceback first when asked for).

    Returns:
        the exit code: :data:`EXIT_EXPECTED` for expected errors, :data:`EXIT_UNEXPECTED` otherwise.
    """
    wanted = _tracebacks_wanted()
    if wanted:
        from rich.traceback import Traceback

        err_console.print(Traceback.from_exception(type(exc), exc, exc.__traceback__))
    text = _message(exc)
    if _is_expected(exc):
        _print_error(text or type(exc).__name__)
        return EXIT_EXPECTED
    hint = "" if wanted else f" (rerun with -v or {DEBUG_ENV}=1 for the traceback)"
    _print_error(f"unexpected {type(exc).__name__}" + (f": {text}" if text else "") + hint)
    return EXIT_UNEXPECTED


def report_interrupt() -> int:
    """Ctrl-C: one line; returns the exit code :data:`EXIT_INTERRUPTED`."""
    err_console.print("[yellow]interrupted[/]")
    return EXIT_INTERRUPTED


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
