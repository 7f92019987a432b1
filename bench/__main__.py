"""Run every benchmark: ``python -m bench [--only NAME ...] [--device cpu|cuda]``.

Each ``bench/<name>_bench.py`` runs in its own process (clean peak-memory figures) and writes
``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    here = Path(__file__).resolve().parent
    names = sorted(p.stem.removesuffix("_bench") for p in here.glob("*_bench.py"))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=names, default=names)
    parser.add_argument("--device", default=None, help="passed to benches that take --device")
    args = parser.parse_args()
    failed = []
    for name in args.only:
        if "REQUIRES_ARGUMENTS = True" in (here / f"{name}_bench.py").read_text():
            print(f"== {name}: skipped, it needs trained models as arguments (python -m bench.{name}_bench --help)")
            continue
        cmd = [sys.executable, "-m", f"bench.{name}_bench"]
        if args.device:
            help_text = subprocess.run([*cmd, "--help"], capture_output=True, text=True, cwd=here.parent).stdout
            if "--device" in help_text:
                cmd += ["--device", args.device]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=here.parent).returncode
        print(f"== {name}: exit {rc} in {time.perf_counter() - t0:.1f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
