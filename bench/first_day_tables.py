"""Issue #22's "Must show": the CLI before and after, side by side, on a tiny procedural phantom.

``python -m bench.first_day_tables --out bench/results/first_day`` runs ``synbt`` commands against the code at
the commit the issue was filed on ("before", exported with ``git archive`` into a scratch folder) and against this
working tree ("after"), each as ``python -c 'from cli.main import main; main()'`` with ``PYTHONPATH`` set to its
tree, and writes ``first_day.md`` and ``first_day.json``:

a. the users' three literal commands, run in an empty folder, with their whole output; then each option an error
   names as missing is added (a placeholder path) and the command rerun, counting the errors a user meets before
   every required option is known, and what the tries leave in the folder;
b. the bad usages the issue lists, on stores and checkpoints each side made itself: exit code, tracebacks that
   reached the user (Dask's "Compute Failed" lines included), output size, first line and the line that says
   what went wrong;
c. one name per concept (prepared store flag, X Y Z syntax, sampling vs training steps, case count vs id list,
   resume default), read from each version's ``--help``;
d. a log of ``synbt train diffusion`` with stderr redirected to a file, interrupted with SIGINT after a few
   progress lines (``train_diffusion_ctrl_c_<side>.log``).

Every command runs with a time limit (its process group is killed on expiry and the row says ``timeout``) and
its output is capped. Scratch data lives in ``--work`` (a new temporary folder by default), never in the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BEFORE_COMMIT = "b397d21"  # the state of the code when issue #22 was filed
ENTRY = "import sys; sys.argv[0] = 'synbt'; from cli.main import main; main()"
OUTPUT_CAP = 64_000  # bytes of a command's output kept
TRACEBACK = "Traceback (most recent call last)"
# a Python traceback, or one that Dask's "Compute Failed" log line carries ("Traceback: '  File ...")
TRACEBACKS = re.compile(r"Traceback \(most recent call last\)|Traceback: '\s*File")
PROGRESS_LINE = re.compile(r": \d+/\d+ \(\d+%\)")
HELP_COMMANDS = (
    "train vqvae",
    "train diffusion",
    "train tissue",
    "segment train",
    "segment eval",
    "eval vqvae",
    "generate",
    "generate-one",
    "bank build",
    "bank preview",
    "store preview",
    "store report",
    "data prepare",
    "data tissue",
)
TRAINERS = ("train vqvae", "train diffusion", "train tissue", "segment train")
LITERAL_COMMANDS = ("train vqvae", "generate --n 5000 --out datasets/synth.zarr", "segment train --mix 0.5")


# ---------------------------------------------------------------------------- the two sides
@dataclass
class Side:
    """One version of the code: its tree (put first on ``PYTHONPATH``), commit and scratch folder."""

    name: str
    tree: Path
    commit: str
    work: Path
    dirty: list[str] = field(default_factory=list)
    help: dict[str, dict[str, Any]] = field(default_factory=dict)
    fixtures: dict[str, str] = field(default_factory=dict)

    def prepared_flag(self, command: str) -> str:
        """The flag this version's ``command`` takes the prepared store with (from its ``--help``)."""
        return _prepared_store_flag(self.help.get(command, {}).get("options", [])) or "--data"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout.rstrip("\n")


def export_commit(commit: str, dest: Path) -> Path:
    """The files of ``commit`` written to ``dest`` with ``git archive`` (the repo is not touched)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=REPO, check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryFile() as tmp:
        tmp.write(archive)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp, mode="r:") as tar:
            tar.extractall(dest, filter="data")
    return dest


def make_sides(work: Path) -> list[Side]:
    """ "before" (the issue's commit, exported) and "after" (this working tree)."""
    before = Side(
        "before", export_commit(BEFORE_COMMIT, work / "before_tree"), _git("rev-parse", BEFORE_COMMIT), work / "before"
    )
    dirty = [line[3:] for line in _git("status", "--porcelain").splitlines()]
    after = Side("after", REPO, _git("rev-parse", "HEAD"), work / "after", dirty=dirty)
    for side in (before, after):
        side.work.mkdir(parents=True, exist_ok=True)
    return [before, after]


# ---------------------------------------------------------------------------- running one command
def cli_env(tree: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``synbt`` child: its tree first on the path, 120 columns, one thread."""
    env = {k: v for k, v in os.environ.items() if k not in ("SYNBT_DEBUG", "PYTHONPATH")}
    env.update(PYTHONPATH=str(tree), COLUMNS="120", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


def run_cli(
    side: Side, args: list[str], *, cwd: Path | None = None, timeout: float = 60.0, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``synbt ARGS`` of ``side``; its exit code, seconds, output (stdout and stderr, capped) and summary.

    On expiry of ``timeout`` the whole process group (Dask workers included) is killed and ``exit`` is None.
    """
    cwd = cwd or side.work
    with tempfile.TemporaryFile() as sink:
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", ENTRY, *args],
            cwd=cwd,
            env=env or cli_env(side.tree),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        seconds = time.monotonic() - start
        sink.seek(0)
        whole = sink.read().decode("utf-8", "replace")
    tracebacks = len(TRACEBACKS.findall(whole))
    return {
        "argv": ["synbt", *args],
        "cwd": str(cwd),
        "exit": code,
        "timed_out": code is None,
        "seconds": round(seconds, 1),
        "output_bytes": len(whole.encode()),
        "output_lines": len(whole.splitlines()),
        "output": whole[:OUTPUT_CAP],
        **summarize(whole[:OUTPUT_CAP]),
        "traceback": tracebacks > 0,
        "tracebacks": tracebacks,
    }


def summarize(text: str) -> dict[str, Any]:
    """First line, the line saying what went wrong, traceback or not, and the count of ``error`` lines."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return {
        "first_line": lines[0].strip() if lines else "",
        "message": key_line(lines),
        "traceback": bool(TRACEBACKS.search(text)),
        "error_lines": sum(1 for line in lines if re.search(r"(^|\s)error:", line, re.IGNORECASE)),
        "warning_lines": sum(1 for line in lines if re.search(r"(^|\s)warning:", line, re.IGNORECASE)),
    }


def key_line(lines: list[str]) -> str:
    """The line a user reads to learn what went wrong: an exception line after a traceback, else the first
    ``error``, then ``warning`` line, else the last line."""
    traceback = any(TRACEBACK in line for line in lines)
    lines = [line for line in lines if not re.match(r"^\s*[╭╰]", line)]  # a rich box's top and bottom edges
    if traceback:
        raised = [
            line.strip(" │")
            for line in lines
            if re.match(r"^[\s│]*([\w.]+(Error|Exception|Interrupt|Exit)|KeyboardInterrupt)\b", line)
        ]
        if raised:
            return raised[-1].strip()
    for pattern in (r"error", r"warning|missing option"):
        found = [line.strip(" │") for line in lines if re.search(pattern, line, re.IGNORECASE)]
        if found:
            return found[0].strip()
    return lines[-1].strip() if lines else ""


# ---------------------------------------------------------------------------- c. --help, parsed
def read_help(side: Side) -> None:
    """Every command's plain (``TYPER_USE_RICH=0``) help parsed into options, and the rich help's ``<bool>``s."""
    for command in HELP_COMMANDS:
        plain = run_cli(side, [*command.split(), "--help"], env=cli_env(side.tree, TYPER_USE_RICH="0"))
        rich = run_cli(side, [*command.split(), "--help"])
        exists = plain["exit"] == 0
        side.help[command] = {
            "exists": exists,
            "options": parse_help(plain["output"]) if exists else [],
            "text": plain["output"] if exists else "",
            "bool_metavars": rich["output"].count("<bool>"),
        }


def parse_help(text: str) -> list[dict[str, Any]]:
    """The options of a Click-formatted help text: names, metavar, description, required, default."""
    options: list[dict[str, Any]] = []
    section = ""
    for line in text.splitlines():
        if re.match(r"^\S.*:$", line):
            section = line[:-1]
            continue
        if section != "Options" or not line.strip():
            continue
        if re.match(r"^  -", line):
            decl, desc = (re.split(r"\s{2,}", line.strip(), maxsplit=1) + [""])[:2]
            words = decl.split()
            names = [w.rstrip(",") for w in words if w.startswith("-")]
            options.append(
                {"names": names, "metavar": " ".join(w for w in words if not w.startswith("-")), "text": desc.strip()}
            )
        elif options:
            options[-1]["text"] = f"{options[-1]['text']} {line.strip()}".strip()
    for option in options:
        option["required"] = "[required]" in option["text"]
        default = re.search(r"\[default: ([^\]]*)\]", option["text"])
        option["default"] = default.group(1) if default else None
    return options


def _long_name(option: dict[str, Any]) -> str:
    return next((n for n in option["names"] if n.startswith("--")), option["names"][0])


def _prepared_store_flag(options: list[dict[str, Any]]) -> str | None:
    for option in options:
        if "prepared store" in option["text"].lower() and _long_name(option) not in ("--out", "--val"):
            return _long_name(option)
    return None


def _xyz_form(option: dict[str, Any]) -> str | None:
    """How an X Y Z option is written: three values, or one comma-separated string; None for other options."""
    text, metavar = option["text"], option["metavar"]
    if metavar.endswith("..."):
        return "three values: X Y Z"
    if re.search(r"\bX,Y,Z\b", text):
        return "one string: X,Y,Z"
    return None


def _steps_kind(option: dict[str, Any]) -> str | None:
    if "steps" not in _long_name(option):
        return None
    text = option["text"].lower()
    if "ddim" in text or "sampling steps" in text:
        return "sampling"
    if re.search(r"optimi[sz]er steps|training steps", text) or _long_name(option) == "--steps":
        return "training"
    return None


def _cases_kind(option: dict[str, Any]) -> str | None:
    if "cases" not in _long_name(option):
        return None
    text = option["text"].lower()
    if "ids" in text or "comma-separated" in text:
        return "list of case ids"
    return "count"


def _resume_default(options: list[dict[str, Any]]) -> str:
    names = {n for o in options for n in o["names"]}
    if "--resume" in names and "--no-resume" in names:
        return "flag pair --resume/--no-resume"
    if "--no-resume" in names:
        return "on by default (--no-resume to start over)"
    if "--resume" in names:
        return "opt-in (--resume)"
    return "none"


def vocabulary(side: Side) -> dict[str, Any]:
    """Side's names per concept, all read from its ``--help``."""
    prepared, xyz, steps, cases, resume, comma_examples = {}, {}, {}, {}, {}, []
    for command, info in side.help.items():
        if not info["exists"]:
            continue
        options = info["options"]
        if flag := _prepared_store_flag(options):
            prepared[command] = flag
        for option in options:
            name = _long_name(option)
            if form := _xyz_form(option):
                xyz[f"{command} {name}"] = f"{form} (`{option['metavar']}`)"
            if kind := _steps_kind(option):
                steps[f"{command} {name}"] = kind
            if kind := _cases_kind(option):
                cases[f"{command} {name}"] = kind
        if command in TRAINERS:
            resume[command] = _resume_default(options)
        flat = " ".join(info["text"].split())
        comma_examples += [f"{command}: {m}" for m in re.findall(r"--[\w-]+ \d+,\d+,\d+", flat)]
    eval_out = next((o for o in side.help.get("segment eval", {}).get("options", []) if "--out" in o["names"]), None)
    steps_meaning = sorted({kind for key, kind in steps.items() if key.endswith(" --steps")})
    return {
        "prepared_store_flag": prepared,
        "prepared_store_names": sorted(set(prepared.values())),
        "xyz_syntax": xyz,
        "xyz_forms": sorted({v.split(" (")[0] for v in xyz.values()}),
        "comma_examples_in_help": comma_examples,
        "steps": steps,
        "steps_flag_means": steps_meaning,
        "cases": cases,
        "cases_flag_means": {
            name: sorted({k for key, k in cases.items() if key.endswith(f" {name}")})
            for name in sorted({key.split()[-1] for key in cases})
        },
        "resume_default": resume,
        "segment_eval_out": (eval_out or {}).get("text", ""),
        "flags_shown_as_bool": {c: i["bool_metavars"] for c, i in side.help.items() if i["bool_metavars"]},
    }


# ---------------------------------------------------------------------------- fixtures: a tiny phantom and models
def setup_fixtures(side: Side) -> list[dict[str, Any]]:
    """A 3-case tiny phantom, its prepared store, a bank, a 1-case synthetic store, a VQ-VAE and a segmenter,
    each made by this side's own CLI (stores and checkpoints of one version may not fit the other)."""
    w = side.work
    fx = {
        "phantom": w / "phantom",
        "prepared": w / "prepared.zarr",
        "bank": w / "bank.zarr",
        "synthetic": w / "synthetic.zarr",
        "vq_patch": w / "vq_patch",
        "vq": w / "vq",
        "seg": w / "seg",
    }
    blocker = w / "file.txt"
    blocker.write_text("a regular file: nothing can be created below it\n")
    (w / "notes.txt").write_text("not a checkpoint\n")
    side.fixtures = {k: str(v) for k, v in fx.items()} | {
        "bad_out": str(blocker / "out"),
        "notes": str(w / "notes.txt"),
    }
    p = str(fx["prepared"])
    tiny = ["--preset", "tiny", "--steps", "2", "--device", "cpu"]
    steps = [
        ["data", "phantom", "--out", str(fx["phantom"]), "--n", "3", "--size", "tiny", "--healthy-fraction", "0"],
        ["data", "prepare", str(fx["phantom"]), "--out", p, "--fov", "64", "64", "48", "--workers", "1"],
        ["bank", "build", "--data", p, "--out", str(fx["bank"])],
        [
            "generate",
            "--method",
            "syntumor",
            "--n",
            "1",
            "--out",
            str(fx["synthetic"]),
            "--data",
            p,
            "--bank",
            str(fx["bank"]),
            "--workers",
            "1",
        ],
        ["train", "vqvae", "--stage", "patch", "--data", p, "--out", str(fx["vq_patch"]), *tiny],
        [
            "train",
            "vqvae",
            "--stage",
            "volume",
            "--init",
            str(fx["vq_patch"] / "final.pt"),
            "--data",
            p,
            "--out",
            str(fx["vq"]),
            *tiny,
        ],
        ["segment", "train", side.prepared_flag("segment train"), p, "--out", str(fx["seg"]), "--patch", "16", *tiny],
    ]
    runs = [_short(run_cli(side, args, timeout=300)) for args in steps]
    side.fixtures["vq_ckpt"] = str(fx["vq"] / "final.pt")
    side.fixtures["seg_ckpt"] = str(
        next(
            (fx["seg"] / n for n in ("best.pt", "final.pt", "last.pt") if (fx["seg"] / n).exists()),
            fx["seg"] / "best.pt",
        )
    )
    return runs


def _short(run: dict[str, Any]) -> dict[str, Any]:
    """A run without its whole output (kept for rows whose output is shown)."""
    return {k: v for k, v in run.items() if k != "output"}


# ---------------------------------------------------------------------------- a. the users' literal commands
def literal_commands(side: Side) -> list[dict[str, Any]]:
    """Each literal command in an empty folder, then as a user would go on: each option an error names as
    missing is added (with a placeholder path) and the command is run again, until no error names one."""
    rows = []
    for i, command in enumerate(LITERAL_COMMANDS):
        cwd = side.work / f"literal_{i}"
        cwd.mkdir()
        args = command.split()
        name = " ".join(args[:2]) if args[0] in ("train", "segment") else args[0]
        without_default = {_long_name(o) for o in side.help.get(name, {}).get("options", []) if o["default"] is None}
        tries = []
        for _ in range(6):
            run = run_cli(side, args, cwd=cwd)
            tries.append(run)
            missing = [f for f in _named_missing(run["output"]) if f not in args and f in without_default]
            if not missing:
                break
            args = args + [w for flag in missing for w in (flag, str(cwd / f"given{flag.replace('-', '_')}"))]
        rows.append(
            {
                "command": f"synbt {command}",
                "output": tries[0]["output"],
                **_short(tries[0]),
                "errors_naming_missing_options": len(tries) - 1,
                "tries": [_short(t) for t in tries],
                "left_in_folder": sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*")),
            }
        )
    return rows


def _named_missing(text: str) -> list[str]:
    """The flags an error names as missing (``Missing option '--real'``, ``Missing options: --a, --b``,
    ``missing option --data``, ``--mix 0.5 needs --synthetic STORE``)."""
    flags: list[str] = []
    for line in text.splitlines():
        if re.search(r"missing|required|needs", line, re.IGNORECASE) and not line.strip().startswith("Try "):
            flags += [f for f in re.findall(r"--[a-z][\w-]*", line) if f not in flags and f != "--help"]
    return flags


# ---------------------------------------------------------------------------- b. bad usages
@dataclass(frozen=True)
class BadUsage:
    """One bad usage of the issue: a name, and its arguments built from a side's fixtures and vocabulary."""

    name: str
    build: Callable[[Side], list[str]]
    timeout: float = 60.0
    created: Callable[[Side], Path] | None = None  # a path that must not be left behind


def _fx(side: Side, key: str) -> str:
    return side.fixtures[key]


def _scratch(side: Side, name: str) -> Path:
    path = side.work / "bad" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _generate(side: Side, name: str, data: str, bank: str, *extra: str) -> list[str]:
    return [
        "generate",
        "--n",
        "5000",
        "--out",
        str(_scratch(side, name) / "synth.zarr"),
        "--data",
        data,
        "--bank",
        bank,
        "--method",
        "syntumor",
        "--workers",
        "1",
        *extra,
    ]


TINY_RUN = ["--preset", "tiny", "--steps", "1", "--device", "cpu"]
BAD_USAGES = (
    BadUsage(
        "data phantom: --out below a file",
        lambda s: ["data", "phantom", "--out", _fx(s, "bad_out"), "--n", "1", "--size", "tiny"],
    ),
    BadUsage(
        "train vqvae: --out below a file",
        lambda s: ["train", "vqvae", "--data", _fx(s, "prepared"), "--out", _fx(s, "bad_out"), *TINY_RUN],
    ),
    BadUsage(
        "train diffusion: --out below a file",
        lambda s: [
            "train",
            "diffusion",
            "--vqvae",
            _fx(s, "vq_ckpt"),
            "--data",
            _fx(s, "prepared"),
            "--out",
            _fx(s, "bad_out"),
            *TINY_RUN,
        ],
    ),
    BadUsage(
        "train tissue: --out below a file",
        lambda s: [
            "train",
            "tissue",
            s.prepared_flag("train tissue"),
            _fx(s, "prepared"),
            "--out",
            _fx(s, "bad_out"),
            *TINY_RUN,
        ],
    ),
    BadUsage(
        "segment train: --out below a file",
        lambda s: [
            "segment",
            "train",
            s.prepared_flag("segment train"),
            _fx(s, "prepared"),
            "--out",
            _fx(s, "bad_out"),
            "--patch",
            "16",
            *TINY_RUN,
        ],
    ),
    BadUsage(
        "segment eval: --out below a file",
        lambda s: [
            "segment",
            "eval",
            "--ckpt",
            _fx(s, "seg_ckpt"),
            "--data",
            _fx(s, "prepared"),
            "--split",
            "train",
            "--out",
            _fx(s, "bad_out"),
            "--device",
            "cpu",
        ],
    ),
    BadUsage(
        "eval vqvae: --out below a file",
        lambda s: [
            "eval",
            "vqvae",
            "--ckpt",
            _fx(s, "vq_ckpt"),
            "--data",
            _fx(s, "prepared"),
            "--split",
            "train",
            "--out",
            _fx(s, "bad_out"),
            "--device",
            "cpu",
        ],
    ),
    BadUsage(
        "store preview: --out below a file",
        lambda s: ["store", "preview", _fx(s, "prepared"), "--out", _fx(s, "bad_out") + "/preview.png"],
    ),
    BadUsage(
        "bank preview: --out below a file",
        lambda s: [
            "bank",
            "preview",
            "--data",
            _fx(s, "prepared"),
            "--bank",
            _fx(s, "bank"),
            "--out",
            _fx(s, "bad_out") + "/placements.png",
        ],
    ),
    BadUsage("demo: --out below a file", lambda s: ["demo", "--out", _fx(s, "bad_out"), "--device", "cpu"]),
    BadUsage(
        "segment eval --device cuda without a GPU",
        lambda s: [
            "segment",
            "eval",
            "--ckpt",
            _fx(s, "seg_ckpt"),
            "--data",
            _fx(s, "prepared"),
            "--split",
            "train",
            "--out",
            str(_scratch(s, "eval_cuda")),
            "--device",
            "cuda",
        ],
    ),
    BadUsage(
        "generate --n 5000: --bank does not exist",
        lambda s: _generate(s, "no_bank", _fx(s, "prepared"), str(s.work / "nobank.zarr")),
        created=lambda s: s.work / "bad" / "no_bank" / "synth.zarr",
    ),
    BadUsage(
        "generate --n 5000: a prepared store as --bank",
        lambda s: _generate(s, "prepared_bank", _fx(s, "prepared"), _fx(s, "prepared")),
        created=lambda s: s.work / "bad" / "prepared_bank" / "synth.zarr",
    ),
    BadUsage(
        "generate --n 5000: a synthetic store as --data",
        lambda s: _generate(s, "synthetic_data", _fx(s, "synthetic"), _fx(s, "bank")),
        created=lambda s: s.work / "bad" / "synthetic_data" / "synth.zarr",
    ),
    BadUsage(
        "segment train: a synthetic store as the real (prepared) store",
        lambda s: [
            "segment",
            "train",
            s.prepared_flag("segment train"),
            _fx(s, "synthetic"),
            "--out",
            str(_scratch(s, "seg_synthetic") / "run"),
            "--patch",
            "16",
            *TINY_RUN,
        ],
    ),
    BadUsage(
        "segment eval: a text file as --ckpt",
        lambda s: [
            "segment",
            "eval",
            "--ckpt",
            _fx(s, "notes"),
            "--data",
            _fx(s, "prepared"),
            "--split",
            "train",
            "--out",
            str(_scratch(s, "eval_text")),
            "--device",
            "cpu",
        ],
    ),
    BadUsage(
        "train diffusion: a text file as --vqvae",
        lambda s: [
            "train",
            "diffusion",
            "--vqvae",
            _fx(s, "notes"),
            "--data",
            _fx(s, "prepared"),
            "--out",
            str(_scratch(s, "diffusion_text") / "run"),
            *TINY_RUN,
        ],
    ),
    BadUsage(
        "generate: --batch-size 0",
        lambda s: _generate(s, "batch0", _fx(s, "prepared"), _fx(s, "bank"), "--batch-size", "0"),
    ),
    BadUsage(
        "segment train: --model resnet",
        lambda s: [
            "segment",
            "train",
            s.prepared_flag("segment train"),
            _fx(s, "prepared"),
            "--out",
            str(_scratch(s, "seg_model") / "run"),
            "--model",
            "resnet",
            "--patch",
            "16",
            *TINY_RUN,
        ],
    ),
    BadUsage(
        "train vqvae --stage volume without --init",
        lambda s: [
            "train",
            "vqvae",
            "--stage",
            "volume",
            "--data",
            _fx(s, "prepared"),
            "--out",
            str(_scratch(s, "vq_no_init") / "run"),
            *TINY_RUN,
        ],
    ),
)


def bad_usages(side: Side) -> list[dict[str, Any]]:
    """Every bad usage on ``side``: exit code, first line, key line, traceback, what it left behind."""
    rows = []
    for usage in BAD_USAGES:
        run = run_cli(side, usage.build(side), timeout=usage.timeout)
        left = usage.created(side).exists() if usage.created else None
        rows.append({"usage": usage.name, **_short(run), "output_head": run["output"][:4000], "left_behind": left})
    return rows


# ---------------------------------------------------------------------------- d. Ctrl-C in a log
def ctrl_c_log(
    side: Side, log_path: Path, *, steps: int = 1200, progress_lines: int = 3, patience: float = 150.0
) -> dict[str, Any]:
    """``synbt train diffusion`` with stderr redirected to ``log_path``, sent SIGINT (to its process group, as a
    terminal's Ctrl-C is) once ``progress_lines`` plain progress lines are in the log or after ``patience`` s.

    ``steps`` is chosen so that a tenth of the run takes about 10 s on 2 cores (0.1 s/step for the tiny preset):
    the plain progress prints a line per tenth, at most one per 10 s.
    """
    args = [
        "train",
        "diffusion",
        "--vqvae",
        _fx(side, "vq_ckpt"),
        "--data",
        _fx(side, "prepared"),
        "--out",
        str(side.work / "diffusion_ctrl_c"),
        "--preset",
        "tiny",
        "--steps",
        str(steps),
        "--device",
        "cpu",
    ]
    stdout_path = log_path.with_suffix(".stdout")
    start = time.monotonic()
    with open(log_path, "wb") as err, open(stdout_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", ENTRY, *args],
            cwd=side.work,
            env=cli_env(side.tree),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
        sent_at = _wait_for_progress(proc, log_path, progress_lines, patience)
        if sent_at is not None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            code: int | None = proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    log = log_path.read_text(errors="replace")
    stdout = stdout_path.read_text(errors="replace")
    stdout_path.unlink()
    return {
        "argv": ["synbt", *args],
        "redirect": f"2> {log_path.name}",
        "exit": code,
        "seconds": round(time.monotonic() - start, 1),
        "sigint_after_s": None if sent_at is None else round(sent_at - start, 1),
        "progress_lines": sum(bool(PROGRESS_LINE.search(line)) for line in log.splitlines()),
        "interrupt_line": next((line for line in log.splitlines() if "interrupt" in line.lower()), None),
        "traceback": bool(TRACEBACKS.search(log)),
        "log_lines": len(log.splitlines()),
        "log": log.splitlines()[-40:],
        "stdout": stdout.splitlines()[-10:],
        "last_pt_exists": (side.work / "diffusion_ctrl_c" / "last.pt").exists(),
    }


def _default_sigint() -> None:
    """In the child: SIGINT back to its default. A shell without job control starts background commands (this
    script run with ``&``) with SIGINT ignored, and Python keeps ignoring it then: Ctrl-C would look ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_progress(proc: subprocess.Popen, log_path: Path, lines: int, patience: float) -> float | None:
    """The time SIGINT is due: when ``lines`` progress lines are in the log, or after ``patience`` seconds;
    None when the process ended first."""
    start = time.monotonic()
    while proc.poll() is None:
        text = log_path.read_text(errors="replace")
        if sum(bool(PROGRESS_LINE.search(line)) for line in text.splitlines()) >= lines:
            return time.monotonic()
        if time.monotonic() - start > patience:
            return time.monotonic()
        time.sleep(0.5)
    return None


# ---------------------------------------------------------------------------- Markdown
def _cell(text: Any, width: int = 150) -> str:
    text = " ".join(str(text if text is not None else "").split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def _exit_text(run: dict[str, Any]) -> str:
    return "timeout" if run["timed_out"] else str(run["exit"])


def _fence(text: str, max_lines: int = 40) -> str:
    lines = text.rstrip().splitlines()
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"… ({len(text.splitlines()) - max_lines} more lines)"]
    return "```\n" + "\n".join(lines).replace("```", "'''") + "\n```"


def markdown(result: dict[str, Any]) -> str:
    """The four tables as Markdown."""
    sides = result["sides"]
    head = [
        "# A first day without surprises (issue #22): before and after",
        "",
        f"before: `{sides['before']['commit'][:10]}` (the issue's commit); after: `{sides['after']['commit'][:10]}`"
        + (" plus uncommitted changes" if sides["after"]["dirty"] else "")
        + ". "
        f"Reproduce: `{result['command']}` ({result['seconds']:.0f} s). Data: a 3-case tiny phantom prepared with "
        "`--fov 64 64 48`; each side's stores and checkpoints are made by its own CLI.",
        "",
        "## Headline",
        "",
        *[f"- {line}" for line in result["headline"]],
        "",
    ]
    return "\n".join(head + _md_literal(result) + _md_bad(result) + _md_vocabulary(result) + _md_ctrl_c(result)) + "\n"


def _md_literal(result: dict[str, Any]) -> list[str]:
    out = [
        "## a. The users' three literal commands (run in an empty folder)",
        "",
        "Each is run as typed; then every option its error names as missing is added with a placeholder path "
        "and it is run again, as a user would, until no error names a missing option. `errors naming missing "
        "options` counts those tries; `left in the folder` is what the tries left in the empty folder.",
        "",
    ]
    for before, after in zip(result["literal"]["before"], result["literal"]["after"], strict=True):
        out += [f"### `{before['command']}`", ""]
        for name, row in (("before", before), ("after", after)):
            left = ", ".join(row["left_in_folder"]) or "nothing"
            out += [
                f"**{name}**: exit {_exit_text(row)}; errors naming missing options: "
                f"{row['errors_naming_missing_options']}; left in the folder: {left}",
                "",
                _fence(row["output"]),
                "",
            ]
            out += [
                f"- then `{' '.join(_placeholders(t['argv']))}` → {_cell(t['message'], 250)}" for t in row["tries"][1:]
            ]
            out += [""] if len(row["tries"]) > 1 else []
    return out


def _placeholders(argv: list[str]) -> list[str]:
    """``argv`` with the placeholder paths written as ``…/given__data``."""
    return [f"…/{Path(a).name}" if Path(a).name.startswith("given_") else a for a in argv]


def _md_bad(result: dict[str, Any]) -> list[str]:
    out = [
        "## b. Bad usages",
        "",
        "`tb`: Python tracebacks that reached the user (Dask's `Compute Failed` lines carry one each). `output`: "
        "lines and size of stdout + stderr. `timeout`: still running after 60 s, killed. `store left`: the "
        "`--out` store was created anyway. Then the first line, ⟶ the line that says what went wrong.",
        "",
        "| usage | before: exit | tb | output | first line ⟶ message | after: exit | tb | output | "
        "first line ⟶ message |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for before, after in zip(result["bad"]["before"], result["bad"]["after"], strict=True):
        cells = [before["usage"]]
        for row in (before, after):
            left = ", store left" if row["left_behind"] else ""
            message = (
                row["first_line"] if row["first_line"] == row["message"] else f"{row['first_line']} ⟶ {row['message']}"
            )
            cells += [_exit_text(row) + left, str(row["tracebacks"]), _size(row), _cell(message, 220)]
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def _size(row: dict[str, Any]) -> str:
    size = row["output_bytes"]
    text = f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 1024:.1f} KB" if size >= 1024 else f"{size} B"
    return f"{row['output_lines']} lines, {text}"


def _md_vocabulary(result: dict[str, Any]) -> list[str]:
    before, after = result["vocabulary"]["before"], result["vocabulary"]["after"]
    out = [
        "## c. One name per concept (read from each version's `--help`)",
        "",
        "| concept | where | before | after |",
        "|---|---|---|---|",
    ]
    for concept, key in (
        ("prepared store flag", "prepared_store_flag"),
        ("X Y Z syntax", "xyz_syntax"),
        ("steps flags", "steps"),
        ("case options", "cases"),
        ("resume", "resume_default"),
    ):
        for where in sorted(set(before[key]) | set(after[key])):
            out.append(
                f"| {concept} | {where} | {_cell(before[key].get(where, '—'))} | {_cell(after[key].get(where, '—'))} |"
            )
    summary = [
        ("names of the prepared store", "prepared_store_names"),
        ("X Y Z forms", "xyz_forms"),
        ("comma examples left in --help", "comma_examples_in_help"),
        ("--steps means", "steps_flag_means"),
        ("--…cases means", "cases_flag_means"),
        ("segment eval --out", "segment_eval_out"),
        ("flags shown as `<bool>`", "flags_shown_as_bool"),
    ]
    for label, key in summary:
        out.append(f"| **{label}** | all | {_cell(_plain(before[key]), 300)} | {_cell(_plain(after[key]), 300)} |")
    return out + [""]


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _md_ctrl_c(result: dict[str, Any]) -> list[str]:
    out = ["## d. `synbt train diffusion` with stderr redirected to a file, then Ctrl-C (SIGINT)", ""]
    for name, run in result["ctrl_c"].items():
        sent = f"SIGINT after {run['sigint_after_s']} s" if run["sigint_after_s"] is not None else "no SIGINT sent"
        ended = f"exit {run['exit']}" if run["exit"] is not None else "still running 60 s after SIGINT (killed)"
        out += [
            f"**{name}** (`{' '.join(run['argv'])} {run['redirect']}`): {sent}, {ended}, "
            f"{run['progress_lines']} progress line(s), traceback: {'yes' if run['traceback'] else 'no'}, "
            f"last.pt saved: {'yes' if run['last_pt_exists'] else 'no'}. Log: `{run['log_file']}`",
            "",
            _fence("\n".join(run["log"]), 30),
            "",
        ]
    return out


# ---------------------------------------------------------------------------- main
def headline(result: dict[str, Any]) -> list[str]:
    """One line per table: the counts a reader looks for first."""
    lines = []
    for name in ("before", "after"):
        rows = result["bad"][name]
        lines.append(
            f"{name}: {sum(r['traceback'] for r in rows)} of {len(rows)} bad usages show a traceback "
            f"({sum(r['tracebacks'] for r in rows)} tracebacks in all), "
            f"{sum(r['timed_out'] for r in rows)} time out, {sum(bool(r['left_behind']) for r in rows)} "
            f"leave a store behind, {sum(r['error_lines'] > 1 for r in rows)} print more than one error line"
        )
    for name in ("before", "after"):
        tries = [r["errors_naming_missing_options"] for r in result["literal"][name]]
        lines.append(f"{name}: errors naming missing options before the three literal commands have them all: {tries}")
    for name in ("before", "after"):
        v = result["vocabulary"][name]
        lines.append(
            f"{name}: prepared store named {_plain(v['prepared_store_names'])}; X Y Z forms "
            f"{_plain(v['xyz_forms'])}; --steps means {_plain(v['steps_flag_means'])}"
        )
    for name, run in result["ctrl_c"].items():
        lines.append(
            f"{name}: train diffusion to a log: {run['progress_lines']} progress lines before SIGINT; "
            f"Ctrl-C says: {run['interrupt_line'] or 'nothing'}"
        )
    return lines


def run_all(out: Path, work: Path, *, ctrl_c_before: bool = True) -> dict[str, Any]:
    """Every table for both sides; writes ``first_day.json``, ``first_day.md`` and the Ctrl-C logs into ``out``."""
    start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    sides = make_sides(work)
    result: dict[str, Any] = {
        "command": _command_line(),
        "work": str(work),
        "sides": {},
        "setup": {},
        "literal": {},
        "bad": {},
        "vocabulary": {},
        "ctrl_c": {},
    }
    for side in sides:
        print(f"== {side.name}: --help, fixtures, literal commands, bad usages", flush=True)
        read_help(side)
        result["vocabulary"][side.name] = vocabulary(side)
        result["setup"][side.name] = setup_fixtures(side)
        result["literal"][side.name] = literal_commands(side)
        result["bad"][side.name] = bad_usages(side)
        if side.name == "after" or ctrl_c_before:
            log_path = out / f"train_diffusion_ctrl_c_{side.name}.log"
            run = ctrl_c_log(side, log_path, patience=150.0 if side.name == "after" else 45.0)
            result["ctrl_c"][side.name] = {
                **run,
                "log_file": str(log_path.relative_to(REPO) if log_path.is_relative_to(REPO) else log_path),
            }
        result["sides"][side.name] = {
            "commit": side.commit,
            "tree": str(side.tree),
            "dirty": side.dirty,
            "fixtures": side.fixtures,
            "invocation": f'PYTHONPATH={side.tree} python -c "{ENTRY}" ARGS',
        }
    result["seconds"] = time.monotonic() - start
    result["headline"] = headline(result)
    (out / "first_day.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "first_day.md").write_text(markdown(result))
    return result


def _command_line() -> str:
    return " ".join(["python", "-m", "bench.first_day_tables", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "first_day")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--no-ctrl-c-before", action="store_true", help="skip the before side's Ctrl-C log")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="synbt_first_day_"))
    if args.work and work.exists() and any(work.iterdir()):
        parser.error(f"--work {work} is not empty")
    result = run_all(args.out, work, ctrl_c_before=not args.no_ctrl_c_before)
    print("\n".join(result["headline"]))
    print(f"written: {args.out / 'first_day.md'}, {args.out / 'first_day.json'}; scratch kept in {work}")


if __name__ == "__main__":
    main()
