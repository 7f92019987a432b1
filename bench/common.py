"""Shared helpers for benchmark scripts: machine info, timing, peak memory, JSON results."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """CPU/GPU, library versions and thread count of this run."""
    import numpy
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its waited-for children so far."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_measured(cmd: list[str], *, interval: float = 0.05, **kwargs: Any) -> dict[str, Any]:
    """Run ``cmd`` as a fresh child; its wall and CPU seconds, and the peak RSS of its process tree.

    The tree's resident memory (the child and every descendant, Dask workers included) is summed every
    ``interval`` seconds with psutil; the child's own VmHWM is read too when it reports it. Neither carries
    the parent's memory over (``ru_maxrss`` of a child does, across fork and exec).
    """
    import subprocess

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            rss = 0
            for p in tree:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(interval)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "tree_peak_rss_mb": peak / 2**20, "stdout": stdout}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_call(fn: Callable[[], Any], *, repeat: int = 3, warmup: int = 1) -> dict[str, float]:
    """Median/min wall time of ``fn`` in seconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "repeat": repeat}


def save_result(name: str, figures: dict[str, Any], *, command: str | None = None) -> Path:
    """Write ``bench/results/<name>.json`` with machine info, figures and the command, and print it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": name,
        "command": command or _command_line(),
        "machine": machine_info(),
        "figures": figures,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    print(json.dumps(payload, indent=2))
    return path


def _command_line() -> str:
    """This run's command line; a bench run with ``python -m bench.NAME`` is written that way."""
    script = Path(sys.argv[0]).resolve()
    head = (
        ["python", "-m", f"bench.{script.stem}"]
        if script.parent == RESULTS_DIR.parent
        else [Path(sys.executable).name, sys.argv[0]]
    )
    return " ".join(shlex.quote(a) for a in [*head, *sys.argv[1:]])
