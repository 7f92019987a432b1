"""Shared helpers for benchmark scripts: machine info, timing, peak memory, JSON results."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """CPU/GPU, library versions and thread count of this run."""
    import numpy
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


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
        "command": command or " ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1], *sys.argv]),
        "machine": machine_info(),
        "figures": figures,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    print(json.dumps(payload, indent=2))
    return path
