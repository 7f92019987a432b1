"""``synbt``: train the generators, mass-produce synthetic DCE-MRI tumors, train and score segmenters.

The root command group and its error boundary. Each command group lives in its own module, which holds its
``typer.Typer`` (``app``) and its commands: :mod:`cli.data`, :mod:`cli.train`, :mod:`cli.eval`, :mod:`cli.bank`,
:mod:`cli.store`, :mod:`cli.segment`, :mod:`cli.experiment`; the top-level commands are ``generate`` and
``generate-one`` (:mod:`cli.generate`) and ``demo`` (:mod:`cli.demo`). Shared: :mod:`cli._console` (console,
errors, progress) and :mod:`cli._presets` (trainer presets).
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException

from cli._console import report_error, report_interrupt, reset_tracebacks, resume_command, show_tracebacks
from cli.bank import app as bank_app
from cli.data import app as data_app
from cli.demo import demo
from cli.eval import app as eval_app
from cli.experiment import app as experiment_app
from cli.generate import generate, generate_one
from cli.segment import app as segment_app
from cli.store import app as store_app
from cli.train import app as train_app

__all__ = ["app", "main"]


class _ErrorBoundary(TyperGroup):
    """The root command group: every command runs inside the CLI's error boundary.

    An exception a command did not handle becomes one red line (:func:`cli._console.report_error`), Ctrl-C
    prints "interrupted" and exits 130; ``typer.Exit``, ``typer.Abort`` and Typer's usage errors pass
    through. Installed on the group, so the console script and ``typer.testing.CliRunner`` on :data:`app`
    both get it.
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        ctx.meta["synbt.argv"] = list(args)
        return super().parse_args(ctx, args)

    def _resume(self, ctx: typer.Context) -> str:
        """The command line that resumes this one (``--resume`` added where the command has it)."""
        argv = ctx.meta.get("synbt.argv", [])
        command: Any = self
        for word in argv:
            if not hasattr(command, "get_command"):
                break
            if word.startswith("-"):
                continue
            sub = command.get_command(ctx, word)
            if sub is None:
                break
            command = sub
        flags = {opt for param in command.params for opt in getattr(param, "opts", ())}
        return resume_command(argv, has_resume="--resume" in flags)

    def invoke(self, ctx: typer.Context) -> Any:
        reset_tracebacks()
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except KeyboardInterrupt as exc:
            raise typer.Exit(report_interrupt(exc, self._resume(ctx))) from None
        except Exception as exc:
            raise typer.Exit(report_error(exc)) from None


#: options a command needs only for one value of another: command → (option, value, the options it needs)
NEEDED_WITH = {"generate": ("--method", "synbt", ("--vqvae", "--diffusion"))}


class _Command(TyperCommand):
    """Every synbt command: names every missing required option in one usage error (not one per try), and
    shows flags in ``--help`` without a ``<bool>`` value they do not take."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""

    def get_help_option(self, ctx: typer.Context) -> Any:
        option = super().get_help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        args = self._split_comma_values(args)
        if not any(a in ("--help", "-h") for a in args):
            given = {a.split("=", 1)[0] for a in args}
            missing = [
                p.opts[0]
                for p in self.params
                if p.param_type_name == "option" and p.required and not given & set(p.opts)
            ]
            needed, why = self._needed_with(args, given)
            if missing and needed:
                ctx.fail(f"Missing options: {', '.join(missing + needed)} ({why}).")
            if len(missing) > 1:
                ctx.fail(f"Missing options: {', '.join(missing)}.")
        return super().parse_args(ctx, args)

    def _needed_with(self, args: list[str], given: set[str]) -> tuple[list[str], str]:
        """Options this command needs for the value another option has (given or default), not given; and why."""
        rule = NEEDED_WITH.get(self.name or "")
        if rule is None:
            return [], ""
        option, value, needed = rule
        chosen = next((a.split("=", 1)[1] for a in args if a.startswith(option + "=")), None)
        if chosen is None and option in args and args.index(option) + 1 < len(args):
            chosen = args[args.index(option) + 1]
        default = next((p.default for p in self.params if option in getattr(p, "opts", ())), None)
        if (chosen or default) != value:
            return [], ""
        lacking = [o for o in needed if o not in given]
        why = f"{' and '.join(lacking)}: for {option} {value}" + ("" if chosen else ", the default")
        return lacking, why

    def _split_comma_values(self, args: list[str]) -> list[str]:
        """One syntax for X Y Z options (``--crop 48 48 48``); the older ``--crop 48,48,48`` still works."""
        multi = {opt for p in self.params if p.param_type_name == "option" and (p.nargs or 1) > 1 for opt in p.opts}
        out: list[str] = []
        for i, arg in enumerate(args):
            if i > 0 and args[i - 1] in multi and "," in arg:
                out.extend(v for v in arg.replace(" ", "").split(",") if v)
            else:
                out.append(arg)
        return out


app = typer.Typer(
    cls=_ErrorBoundary,
    name="synbt",
    help=(
        "Synthetic breast tumors in 3D DCE-MRI (SynBT). Typical run: 'synbt demo'; or step by step: "
        "synbt data phantom → data prepare → train vqvae → train diffusion → bank build → generate → segment train."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)


@app.callback()
def _global_options(
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Show the traceback of an error (so does a command's own -v, or SYNBT_DEBUG=1)."
    ),
) -> None:
    show_tracebacks(verbose)


app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(bank_app, name="bank")
app.add_typer(store_app, name="store")
app.add_typer(segment_app, name="segment")
app.add_typer(experiment_app, name="experiment")

app.command("generate")(generate)
app.command("demo")(demo)
app.command("generate-one")(generate_one)

for _typer in (app, data_app, train_app, eval_app, bank_app, store_app, segment_app, experiment_app):
    for _info in _typer.registered_commands:
        if _info.cls in (None, TyperCommand):
            _info.cls = _Command


def main() -> None:
    """The ``synbt`` console script; errors raised outside any command get the same one-line report."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(report_interrupt())
    except Exception as exc:
        sys.exit(report_error(exc))


if __name__ == "__main__":
    main()
