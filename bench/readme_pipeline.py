"""The README's "The pipeline" block, run as written: each command's wall and CPU seconds and peak memory.

    python -m bench.readme_pipeline [--workdir DIR] [--threads 1]

The commands are read from README.md (continuation lines joined, comments dropped) and run one after the other
as fresh ``synbt`` child processes in ``--workdir`` (default: a new temporary folder, kept), exactly as written:
no flag is added. Each command is measured from outside (:func:`bench.common.run_measured`: wall and CPU seconds,
peak RSS of its process tree); its last output lines are kept, so the generate placement summary, the realism
headline and the evaluation summary are in the result. The first failing command stops the run and is recorded.
``bench/results/readme_pipeline.json`` also records the CPU model and the load average before and after, since a
shared machine's load changes the wall times.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import run_measured, save_result

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_pipeline_commands(readme: Path = README) -> list[list[str]]:
    """The commands of the README's "The pipeline" code block, as argument lists without the leading ``synbt``."""
    text = readme.read_text(encoding="utf-8")
    block = text.split("## The pipeline", 1)[1].split("```", 2)[1]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            if words[0] != "synbt":
                raise ValueError(f"the README's pipeline has a line that is not a synbt command: {line!r}")
            commands.append(words[1:])
    return commands


def _tail(text: str, lines: int = 6) -> list[str]:
    return [" ".join(line.split()) for line in text.strip().splitlines()[-lines:]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="Empty folder to run in (default: a new one).")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every command.")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="synbt-readme-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise SystemExit(f"{workdir} is not empty: the README's commands start from an empty folder")
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    synbt = shutil.which("synbt") or f"{sys.executable} -m cli"
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    for words in readme_pipeline_commands():
        name = " ".join(words[:2]) if words[0] in ("data", "train", "store", "segment", "bank") else words[0]
        try:
            measured = run_measured([*shlex.split(synbt), *words], cwd=workdir, env=env)
        except RuntimeError as exc:
            rows.append({"command": name, "argv": words, "failed": str(exc)[-2000:]})
            break
        rows.append(
            {
                "command": name,
                "argv": words,
                "wall_s": round(measured["wall_s"], 1),
                "cpu_s": round(measured["cpu_s"], 1),
                "tree_peak_rss_mb": round(measured["tree_peak_rss_mb"], 1),
                "output_tail": _tail(measured["stdout"]),
            }
        )
        print(f"{rows[-1]['wall_s']:7.1f} s wall {rows[-1]['cpu_s']:7.1f} s CPU  synbt {' '.join(words)}", flush=True)
    done = [r for r in rows if "wall_s" in r]
    figures = {
        "workdir": str(workdir),
        "omp_num_threads": env.get("OMP_NUM_THREADS"),
        "all_passed": len(done) == len(readme_pipeline_commands()),
        "total_wall_s": round(sum(r["wall_s"] for r in done), 1),
        "total_cpu_s": round(sum(r["cpu_s"] for r in done), 1),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "commands": rows,
    }
    save_result("readme_pipeline", figures)


if __name__ == "__main__":
    main()
