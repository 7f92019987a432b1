"""Phantom speed and statistics → ``bench/results/phantom.json``.

Seconds per case for each preset (generation in memory, and writing the case's NIfTI/JSON
files), then, over 20 ``small`` cases: the mean first-phase enhancement ratio (post1 / pre) per
tissue class (all voxels of the class, and its core: the class eroded by one voxel, free of
partial volume) and the tumor size distribution (equivalent diameters in mm).

Run from the repository root::

    python -m bench.phantom_bench [--stats-cases 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from bench.common import peak_rss_mb, save_result
from synbt_factory.phantom import CLASS_NAMES, PRESETS, make_phantom_case, write_phantom, write_preview
from synbt_factory.phantom.writer import write_case

SIZE_CLASSES = ((0.0, 10.0, "<10"), (10.0, 20.0, "10-20"), (20.0, 30.0, "20-30"), (30.0, 1e9, ">=30"))


def _size_counts(diameters: list[float]) -> dict[str, int]:
    return {name: sum(1 for d in diameters if lo <= d < hi) for lo, hi, name in SIZE_CLASSES}


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {
        "min": round(float(a.min()), 2),
        "median": round(float(np.median(a)), 2),
        "max": round(float(a.max()), 2),
        "mean": round(float(a.mean()), 2),
        "n": int(a.size),
    }


def time_presets(seed: int, counts: dict[str, int]) -> dict[str, Any]:
    """Median seconds per case to generate and to write, per preset."""
    make_phantom_case(0, seed=seed, config=PRESETS["tiny"])  # warm-up (imports, caches)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, n in counts.items():
            config = PRESETS[name]
            make_s, write_s, voxels, nbytes = [], [], [], []
            for i in range(n):
                t0 = time.perf_counter()
                case = make_phantom_case(i, seed=seed, config=config)
                t1 = time.perf_counter()
                files = write_case(Path(tmp) / name, case, compress_level=config.compress_level)
                t2 = time.perf_counter()
                make_s.append(t1 - t0)
                write_s.append(t2 - t1)
                voxels.append(int(np.prod(case.shape)))
                nbytes.append(sum(f.stat().st_size for f in files))
            out[name] = {
                "cases": n,
                "fov_mm": list(config.fov_mm),
                "make_s_median": round(float(np.median(make_s)), 3),
                "make_s_max": round(float(np.max(make_s)), 3),
                "write_s_median": round(float(np.median(write_s)), 3),
                "total_s_per_case_median": round(float(np.median(np.add(make_s, write_s))), 3),
                "voxels_per_phase_median": int(np.median(voxels)),
                "megabytes_per_case_median": round(float(np.median(nbytes)) / 1e6, 2),
            }
    return out


def statistics(seed: int, n: int) -> dict[str, Any]:
    """Enhancement per class and tumor sizes over ``n`` small cases."""
    config = PRESETS["small"]
    ratios: dict[str, list[float]] = {name: [] for name in CLASS_NAMES.values() if name != "background"}
    core_ratios: dict[str, list[float]] = {name: [] for name in ratios}
    tumor_diam, case_diam = [], []
    counters: dict[str, Counter] = {
        k: Counter()
        for k in (
            "site_profile",
            "orientation",
            "fat_suppressed",
            "n_post",
            "density",
            "bpe",
            "shape",
            "enhancement",
            "curve",
        )
    }
    healthy = 0
    for i in range(n):
        case = make_phantom_case(i, seed=seed, config=config)
        pre, post = case.phase_float(0), case.phase_float(1)
        for code, name in CLASS_NAMES.items():
            if code == 0:
                continue
            sel = case.class_map == code
            if sel.sum() >= 10:
                ratios[name].append(float(post[sel].mean() / max(pre[sel].mean(), 1e-6)))
            core = ndi.binary_erosion(sel)
            if core.sum() >= 10:
                core_ratios[name].append(float(post[core].mean() / max(pre[core].mean(), 1e-6)))
        voxel_mm3 = float(np.prod(case.spacing))
        if case.expert_mask.any():
            case_diam.append(float((6.0 * case.expert_mask.sum() * voxel_mm3 / np.pi) ** (1 / 3)))
        healthy += int(case.healthy)
        for t in case.tumors:
            tumor_diam.append(float(t["equivalent_diameter_mm"]))
            counters["shape"][t["shape"]] += 1
            counters["enhancement"][t["enhancement"]] += 1
            counters["curve"][t["curve"]] += 1
        imaging = case.info["imaging_data"]
        counters["site_profile"][case.site_profile] += 1
        counters["orientation"][case.orientation] += 1
        counters["fat_suppressed"][str(case.fat_suppressed)] += 1
        counters["n_post"][str(case.n_post)] += 1
        counters["density"][case.info["clinical_data"]["breast_density"]] += 1
        counters["bpe"][case.info["phantom"]["background_parenchymal_enhancement"]] += 1
        assert imaging["num_phases"] == case.n_post + 1
    return {
        "cases": n,
        "healthy_cases": healthy,
        "enhancement_ratio_post1_over_pre": {
            name: {"all_voxels": _summary(ratios[name]), "core": _summary(core_ratios[name])} for name in ratios
        },
        "tumor_equivalent_diameter_mm": {
            "per_tumor": _summary(tumor_diam),
            "per_tumor_size_classes": _size_counts(tumor_diam),
            "per_case_mask": _summary(case_diam),
            "per_case_mask_size_classes": _size_counts(case_diam),
        },
        "counts": {k: dict(sorted(v.items())) for k, v in counters.items()},
    }


def preview(seed: int, png: Path) -> dict[str, Any]:
    """Write 4 small cases end to end (``write_phantom``) and their preview PNG."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ids = write_phantom(Path(tmp) / "phantom", n=4, seed=seed, size="small", healthy_fraction=0.0)
        t1 = time.perf_counter()
        write_preview(Path(tmp) / "phantom", png, max_cases=4)
        t2 = time.perf_counter()
    return {
        "cases": ids,
        "write_phantom_s_per_case": round((t1 - t0) / len(ids), 3),
        "preview_s": round(t2 - t1, 3),
        "png": str(png.relative_to(Path(__file__).resolve().parent.parent)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stats-cases", type=int, default=20)
    parser.add_argument(
        "--timing-cases",
        type=str,
        default="tiny=6,small=4,default=2",
        help="cases timed per preset, e.g. tiny=6,small=4,default=2",
    )
    args = parser.parse_args(argv)
    counts = {k: int(v) for k, v in (item.split("=") for item in args.timing_cases.split(","))}
    t0 = time.perf_counter()
    figures: dict[str, Any] = {"seconds_per_case": time_presets(args.seed, counts)}
    figures["small_statistics"] = statistics(args.seed, args.stats_cases)
    figures["preview"] = preview(args.seed, Path(__file__).resolve().parent / "results" / "phantom_preview.png")
    figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
    figures["wall_s"] = round(time.perf_counter() - t0, 1)
    save_result("phantom", figures)


if __name__ == "__main__":
    main()
