"""SynTumor baseline: cost per tumor by size class at 192×192×128, start-up time, peak memory,
and its enhancement next to the real (phantom) tumors'.

    python -m bench.syntumor_bench [--data PREPARED.zarr] [--phantom-size default] [--cases 6] [--repeat 10]

Every figure is measured in this run; nothing is compared with numbers from elsewhere. One
``syntumor_insert`` call inserts exactly one tumor, so its cost is the cost of one tumor (wall and
CPU seconds, median over ``--repeat`` calls per size class; the size classes take turns, so load
changes on a shared machine hit them alike). The public SynTumor implementation (the reference) is not
installed here and cannot be fetched offline, so it is not run and no speed-up is claimed; the JSON says
so (``reference``). A reference call inserts 1–10 tumors: compare with it per tumor, never per call.
Start-up and peak memory are measured in a fresh subprocess (import, statistics, one call per size class).
Writes ``bench/results/syntumor.json`` and ``bench/results/syntumor_vs_real.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS_DIR, peak_rss_mb, save_result

#: What this bench can say about the reference implementation: nothing measured, so nothing compared.
REFERENCE = {
    "measured": False,
    "why": "the public SynTumor code (MrGiovanni/SyntheticTumors) and its dependencies are not installed on this "
    "machine and cannot be fetched offline",
    "compared": "nothing; when it is run, compare seconds per tumor: a reference call inserts 1-10 tumors, "
    "a syntumor_insert call exactly one",
}

_STARTUP_PROBE = r"""
import json, sys, time


def hwm_mb():  # peak RSS of this process image (VmHWM restarts at exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


t0 = time.perf_counter()
import numpy as np
import scipy.ndimage, scipy.fft
t_base = time.perf_counter() - t0
rss_base = hwm_mb()
t1 = time.perf_counter()
from synbt_factory.synthesis.syntumor import EnhancementStats, SIZE_CLASSES, syntumor_insert
stats = EnhancementStats.from_dict(json.loads(sys.argv[1]))
startup = time.perf_counter() - t1
rng = np.random.default_rng(0)
image = np.zeros((2, 192, 192, 128), np.float32); image[:, 20:172, 20:172, 10:118] = 0.5
region = np.zeros(image.shape[1:], bool); region[40:150, 60:160, 20:108] = True
t2 = time.perf_counter()
syntumor_insert(image, None, rng, stats, "small", region=region)
first = time.perf_counter() - t2
for c in SIZE_CLASSES:
    syntumor_insert(image, None, rng, stats, c, region=region)
print(json.dumps({"import_numpy_scipy_s": t_base, "rss_numpy_scipy_mb": rss_base, "startup_s": startup,
                  "first_call_s": first,
                  "peak_rss_mb": hwm_mb(), "image_mb": image.nbytes / 2**20}))
"""


def _crop_views(image: np.ndarray, mask: np.ndarray, half: int = 28) -> tuple[np.ndarray, ...]:
    """Pre, post and mask on the axial slice through the tumor's centre, cropped to ``half`` voxels around it
    (display convention of :mod:`synbt_factory.figures`: anterior up)."""
    from synbt_factory.figures import axial

    c = np.argwhere(mask > 0).mean(axis=0).round().astype(int)
    box = tuple(slice(max(0, int(ci) - half), int(ci) + half) for ci in c[:2])
    z = int(c[2])
    pre = axial(image[0], z, box).astype(np.float32)
    post = axial(image[1], z, box).astype(np.float32)
    m = axial(mask, z, box) > 0
    return pre, post, m


def _figure(rows: list[dict[str, Any]], path: Path) -> None:
    from synbt_factory.figures import TUMOR, draw_outline, hide_ticks, new_figure, save_figure

    fig, axes = new_figure(len(rows), 3, figsize=(9.0, 2.7 * len(rows)))
    for ax_row, row in zip(axes, rows, strict=True):
        pre, post, m = _crop_views(row["image"], row["mask"])
        vmax = max(float(np.percentile(post, 99.5)), 1e-3)
        ax_row[0].imshow(pre, cmap="gray", vmin=0, vmax=vmax)
        ax_row[1].imshow(post, cmap="gray", vmin=0, vmax=vmax)
        ax_row[2].imshow(post - pre, cmap="gray", vmin=0, vmax=vmax)
        draw_outline(ax_row[2], m, TUMOR, linewidth=0.6)
        for ax, name in zip(ax_row, ("pre", "post", "post − pre"), strict=True):
            hide_ticks(ax)
            ax.set_title(name, fontsize=7)
        ax_row[0].set_ylabel(row["title"], fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="prepared store (default: a fresh phantom)")
    parser.add_argument("--phantom-size", default="default", choices=["tiny", "small", "default"])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    args = parser.parse_args()

    from bench.placement_bench import phantom_prepared
    from synbt_factory.rng import case_generator
    from synbt_factory.store import CaseStore
    from synbt_factory.synthesis.background_context import context_from_store
    from synbt_factory.synthesis.bank import build_bank
    from synbt_factory.synthesis.placement import PlacementError, dilate_mm, place_tumor
    from synbt_factory.synthesis.syntumor import SIZE_CLASSES, EnhancementStats, syntumor_insert

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="synbt-syntumor-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        store_path = args.data
        if store_path is None:
            _, store_path = phantom_prepared(workdir, n=args.cases, size=args.phantom_size, seed=args.seed)
        store = CaseStore.open(store_path)
        t0 = time.perf_counter()
        stats = EnhancementStats.from_store(store)
        stats_s = time.perf_counter() - t0

        probe = subprocess.run(
            [sys.executable, "-c", _STARTUP_PROBE, json.dumps(stats.to_dict())],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        startup = json.loads(probe.stdout.strip().splitlines()[-1])

        ids = store.case_ids()
        backgrounds = []
        for cid in ids:
            arrays, _ = store.read_case(cid, ("image", "mask", "breast"))
            backgrounds.append(
                {
                    "id": cid,
                    "image": arrays["image"].astype(np.float32),
                    "mask": arrays["mask"],
                    "region": arrays["breast"] > 0,
                    "avoid": dilate_mm(arrays["mask"] > 0, 5.0),
                }
            )
        shape = list(backgrounds[0]["image"].shape[1:])
        per_class: dict[str, Any] = {}
        synth_ratios: list[float] = []
        synth_pre_factors: list[float] = []
        synthetic_rows: list[dict[str, Any]] = []
        times: dict[str, list[float]] = {c: [] for c in SIZE_CLASSES}
        cpu_times: dict[str, list[float]] = {c: [] for c in SIZE_CLASSES}
        voxels: dict[str, list[int]] = {c: [] for c in SIZE_CLASSES}
        tumors: dict[str, int] = {c: 0 for c in SIZE_CLASSES}
        for r in range(args.repeat):  # the classes take turns, in a rotating order
            for j in range(len(SIZE_CLASSES)):
                k = (j + r) % len(SIZE_CLASSES)
                size_class = SIZE_CLASSES[k]
                bg = backgrounds[(r + k) % len(backgrounds)]
                rng = case_generator(args.seed, 1000 * k + r, "syntumor-bench")
                t, c = time.perf_counter(), time.process_time()
                new, tumor, record = syntumor_insert(
                    bg["image"], None, rng, stats, size_class, region=bg["region"], avoid=bg["avoid"]
                )
                times[size_class].append(time.perf_counter() - t)
                cpu_times[size_class].append(time.process_time() - c)
                tumors[size_class] += 1  # one call, one tumor
                voxels[size_class].append(int(tumor.sum()))
                synth_ratios.append(record.measured_ratio)
                measured = EnhancementStats.measure(new, tumor)
                if measured is not None:
                    synth_pre_factors.append(measured[1])
                if r == 0 and size_class in ("small", "medium", "large"):
                    title = f"SynTumor {size_class}\n{bg['id']} post/pre {record.measured_ratio:.2f}"
                    synthetic_rows.append({"title": title, "image": new, "mask": tumor})
        for size_class in SIZE_CLASSES:
            wall, cpu = times[size_class], cpu_times[size_class]
            per_class[size_class] = {
                "tumors": tumors[size_class],
                "calls": len(wall),
                "median_s": float(np.median(wall)),
                "mean_s": float(np.mean(wall)),
                "max_s": float(np.max(wall)),
                "median_cpu_s": float(np.median(cpu)),
                "mean_cpu_s": float(np.mean(cpu)),
                "seconds_per_tumor_total": float(np.sum(wall)) / tumors[size_class],
                "cpu_seconds_per_tumor_total": float(np.sum(cpu)) / tumors[size_class],
                "median_voxels": float(np.median(voxels[size_class])),
            }
            print(size_class, per_class[size_class], flush=True)

        # SynTumor texture on bank placements (what `generate --method syntumor` does)
        bank = build_bank(store, workdir / "bank.zarr", overwrite=True)
        given_times, given_cpu = [], []
        for r in range(args.repeat):
            bg = backgrounds[r % len(backgrounds)]
            try:
                ctx = context_from_store(store, bg["id"])
                placed, _ = place_tumor(case_generator(args.seed, r, "placement"), bank, ctx)
            except PlacementError:
                continue
            t, c = time.perf_counter(), time.process_time()
            new, tumor, record = syntumor_insert(bg["image"], placed, case_generator(args.seed, r, "texture"), stats)
            given_times.append(time.perf_counter() - t)
            given_cpu.append(time.process_time() - c)
            if r == 0:
                synthetic_rows.append(
                    {
                        "title": f"SynTumor on bank placement\n{bg['id']} post/pre {record.measured_ratio:.2f}",
                        "image": new,
                        "mask": tumor,
                    }
                )

        real_rows = []
        for bg in backgrounds:
            if bg["mask"].any() and len(real_rows) < 3:
                m = EnhancementStats.measure(bg["image"], bg["mask"])
                ratio = m[0] if m else float("nan")
                real_rows.append(
                    {"title": f"real tumor\n{bg['id']} post/pre {ratio:.2f}", "image": bg["image"], "mask": bg["mask"]}
                )
        png = RESULTS_DIR / "syntumor_vs_real.png"
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        _figure(real_rows + synthetic_rows, png)

        figures = {
            "shape": shape,
            "reference": REFERENCE,
            "tumors_per_call": 1,
            "seconds_per_tumor": per_class,
            "seconds_per_tumor_given_mask_median": float(np.median(given_times)) if given_times else None,
            "cpu_seconds_per_tumor_given_mask_median": float(np.median(given_cpu)) if given_cpu else None,
            "startup": startup,
            "enhancement_stats_from_store_s": stats_s,
            "real_ratio": stats.summary(),
            "synthetic_ratio_median": float(np.median(synth_ratios)),
            "synthetic_ratio_p10_p90": [float(np.quantile(synth_ratios, 0.1)), float(np.quantile(synth_ratios, 0.9))],
            "real_pre_factor_median": float(np.median(stats.pre_factors)),
            "synthetic_pre_factor_median": float(np.median(synth_pre_factors)) if synth_pre_factors else None,
            "png": str(png),
            "bench_peak_rss_mb": peak_rss_mb(),
        }
        save_result(
            "syntumor",
            figures,
            command=f"python -m bench.syntumor_bench --cases {args.cases} "
            f"--repeat {args.repeat} --phantom-size {args.phantom_size}",
        )
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
