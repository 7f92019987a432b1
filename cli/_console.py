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
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column

__all__ = [
    "EXIT_EXPECTED",
    "EXIT_INTERRUPTED",
    "EXIT_UNEXPECTED",
    "CommandFailed",
    "aliased",
    "PlainProgress",
    "check_writable",
    "console",
    "err_console",
    "fail",
    "name_flags",
    "progress_bar",
    "report_error",
    "report_interrupt",
    "reset_tracebacks",
    "resume_command",
    "setup_logging",
    "show_tracebacks",
    "warn",
]

T = TypeVar("T")

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
    # Dask's scheduler and workers log every start and stop at INFO: only their warnings, unless -v. Importing
    # distributed resets its logger to the level in Dask's config, so the config says it too (read from the
    # environment when dask is first imported, set directly when it already is).
    dask_level = "debug" if verbose else "warning"
    os.environ["DASK_LOGGING__DISTRIBUTED"] = dask_level
    if "dask" in sys.modules:
        import dask

        dask.config.set({"logging.distributed": dask_level})
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


def warn(message: str) -> None:
    """Print a warning (one yellow line, on stderr); the command goes on."""
    err_console.print(f"[bold yellow]warning:[/] {escape(' '.join(message.split()))}", soft_wrap=True)


def name_flags(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with the config field names in ``flags`` replaced by the flags that set them.

    A config's validation names its fields (``n must be > 0``); the user typed flags (``--n must be > 0``).
    Only whole names are replaced (``data.mix`` and ``mix`` are distinct keys; the longer is tried first).
    """
    for field in sorted(flags, key=len, reverse=True):
        message = re.sub(rf"(?<![\w.'\"-]){re.escape(field)}(?![\w.'\"-])", flags[field], message)
    return message


def aliased(value: T | None, old_value: T | None, flag: str, old_flag: str, *, required: bool = True) -> T | None:
    """The value given to ``flag`` or to ``old_flag``, its older name (kept as a hidden alias).

    Fails naming ``flag`` when both are given different values, or neither is given and ``required``.
    """
    if value is not None and old_value is not None and value != old_value:
        fail(f"give {flag} once ({old_flag} is its older name)")
    chosen = value if value is not None else old_value
    if chosen is None and required:
        fail(f"missing option {flag}")
    return chosen


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


def resume_command(argv: Sequence[str], *, has_resume: bool) -> str:
    """The command line that continues an interrupted ``synbt`` command: the same arguments, with ``--resume``
    added (and ``--no-resume`` dropped) when the command has that flag."""
    args = [a for a in argv if a != "--no-resume"] if has_resume else list(argv)
    if has_resume and "--resume" not in args:
        args.append("--resume")
    return shlex.join(["synbt", *args])


def report_interrupt(exc: BaseException | None = None, resume: str | None = None) -> int:
    """Ctrl-C: one line; returns the exit code :data:`EXIT_INTERRUPTED`.

    A training run stopped by Ctrl-C (``exc`` carries ``step`` and ``checkpoint``, see
    :class:`synbt_factory.training.runs.TrainingInterrupted`) is named with its step, the checkpoint it
    saved and ``resume``, the command that continues it.
    """
    checkpoint, step = getattr(exc, "checkpoint", None), getattr(exc, "step", None)
    if checkpoint is not None and step is not None:
        text = f"interrupted at step {step}; saved {checkpoint}"
        if resume:
            text += f"; resume with: {resume}"
        err_console.print(f"[yellow]{escape(text)}[/]", soft_wrap=True)
    elif hasattr(exc, "checkpoint"):
        err_console.print("[yellow]interrupted before the first checkpoint: nothing to resume[/]", soft_wrap=True)
    else:
        err_console.print("[yellow]interrupted[/]")
    return EXIT_INTERRUPTED


def _metrics_text(metrics: Mapping[str, float]) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def _clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainProgress:
    """Progress as plain lines, for a log file or a pipe (where a live bar shows nothing until the end).

    A line (``what: done/total (pct%), elapsed, eta, metrics``) is printed each time the work crosses another
    ``every_percent`` of its total, at most one per ``min_interval`` seconds, so a short task prints nothing
    and a long one a line every few percent; the last report prints a closing line when any line was printed.

    Args:
        description: what is being done.
        print_line: where a line goes (the error console).
        every_percent: the step between lines.
        min_interval: seconds between two lines at least.
        clock: seconds as a float (``time.monotonic``; tests pass a fake one).
    """

    def __init__(
        self,
        description: str,
        print_line: Callable[[str], None],
        *,
        every_percent: float = 10.0,
        min_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.description = description
        self.print_line = print_line
        self.every_percent = every_percent
        self.min_interval = min_interval
        self.clock = clock
        self._start = clock()
        self._last_line: float | None = None
        self._last_mark = 0
        self.lines = 0

    def __call__(self, done: int, total: int, metrics: Mapping[str, float]) -> None:
        now = self.clock()
        finished = total > 0 and done >= total
        mark = int(100.0 * done / total // self.every_percent) if total > 0 else 0
        since = now - (self._last_line if self._last_line is not None else self._start)
        if not (finished and self.lines) and (mark <= self._last_mark or since < self.min_interval):
            return
        self._last_mark, self._last_line = mark, now
        elapsed = now - self._start
        parts = [
            f"{self.description}: {done}/{total} ({100.0 * done / total:.0f}%)"
            if total > 0
            else f"{self.description}: {done}",
            f"elapsed {_clock_text(elapsed)}",
        ]
        if total > 0 and 0 < done < total:
            parts.append(f"eta {_clock_text(elapsed / done * (total - done))}")
        text = _metrics_text(metrics)
        self.lines += 1
        self.print_line(", ".join(parts) + (f"  {text}" if text else ""))


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator:
    """A rich progress bar on a terminal, :class:`PlainProgress` lines otherwise; yields a
    :data:`synbt_factory.progress.ProgressFn`.

    The metrics passed to the callback are shown after the bar (e.g. ``loss=0.123``), cut to the room the
    terminal leaves, so the step count and the ETA stay visible at 80 columns.
    """
    if not err_console.is_terminal:
        yield PlainProgress(description, lambda line: err_console.print(escape(line), soft_wrap=True, highlight=False))
        return
    columns = [
        TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
        BarColumn(bar_width=20),
        MofNCompleteColumn(table_column=Column(no_wrap=True)),
        TimeElapsedColumn(table_column=Column(no_wrap=True)),
        TextColumn("eta", table_column=Column(no_wrap=True)),
        TimeRemainingColumn(table_column=Column(no_wrap=True)),
        TextColumn("{task.fields[metrics]}", table_column=Column(no_wrap=True)),
    ]
    # drawn from the first report on: a command that fails before its work starts leaves no empty bar
    bar = Progress(*columns, console=err_console, transient=False)
    task = bar.add_task(description, total=total, metrics="")

    def update(done: int, total_: int, metrics: Mapping[str, float]) -> None:
        if not bar.live.is_started:
            bar.start()
        # what the other columns take (description, bar, done/total, elapsed, "eta", remaining, gaps)
        used = len(description) + 20 + 2 * len(str(total_)) + 1 + 7 + 3 + 7 + 7
        room = err_console.width - used - 1
        text = _metrics_text(metrics)
        if len(text) > room:
            text = text[: room - 1] + "…" if room > 8 else ""
        bar.update(task, completed=done, total=total_, metrics=text)

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()
