"""Tumor placement (and the tissue model feeding it) on prepared phantom cases.

    python -m bench.placement_bench [--data PREPARED.zarr] [--phantom-size small] [--cases 10]
                                    [--placements 200] [--tissue-steps 0] [--device cpu]

Figures: placement acceptance rate (accepted / centres tried), placements per second (after
the per-background context), context build time, fraction of tumor voxels inside the FGT and
inside the breast, bank size. With ``--tissue-steps N`` a tissue model is first trained for N
steps on the phantom's *train* label maps (every training image is synthesised from labels with
random contrast; with ``--tissue-clusters image`` the real train images only shape the k-means
clusters outside the breast, with ``position`` they are not read at all), scored on every real
image (held-out / label-seen cases, per fat-suppression profile), and its post-processed FGT
(``tissue_pred``) is what placement uses. Writes
``bench/results/placement.json`` and ``bench/results/placements.png``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS_DIR, peak_rss_mb, save_result


def phantom_prepared(workdir: Path, *, n: int, size: str, seed: int = 0) -> tuple[Path, Path]:
    """Write a phantom (MAMA-MIA layout) and prepare it at the default field of view; returns (dir, store)."""
    from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
    from synbt_factory.phantom import PRESETS, write_phantom

    cfg = PRESETS[size]
    ph = workdir / f"phantom-{size}-{n}-{seed}"
    store = workdir / f"prepared-{size}-{n}-{seed}.zarr"
    if not store.exists():
        write_phantom(ph, n=n, seed=seed, size=size)
        fov = tuple(int(round(f)) for f in cfg.fov_mm)
        result = prepare_dataset(ph, store, config=PrepareConfig(fov_mm=fov), workers=2)  # type: ignore[arg-type]
        if result.failed:
            raise RuntimeError(f"prepare failed for {result.failed}")
    return ph, store


def fat_suppression(dataset_dir: Path) -> dict[str, bool | None]:
    """case id → fat suppressed (from the patient info JSON's imaging_data), None when not recorded."""
    from synbt_factory.data.mamamia import index_dataset

    out: dict[str, bool | None] = {}
    for rec in index_dataset(dataset_dir).cases:
        try:
            imaging = (rec.info() or {}).get("imaging_data", {})
        except ValueError:
            imaging = {}
        flag = None
        for key, value in imaging.items():
            if "fat" in key.lower() and isinstance(value, bool):
                flag = value
        out[rec.case_id] = flag
    return out


def tissue_stage(
    store_path: Path,
    dataset_dir: Path | None,
    workdir: Path,
    *,
    steps: int,
    preset: str,
    patch: int,
    clusters: str,
    device: str,
    resume: bool = False,
) -> dict[str, Any]:
    """Train on train-split label maps only, score on held-out real images, write tissue_pred."""
    from synbt_factory.tissue.config import TissueTrainConfig
    from synbt_factory.tissue.data import load_label_cases
    from synbt_factory.tissue.infer import add_tissue_to_store, evaluate_tissue, load_tissue_model
    from synbt_factory.tissue.train import train_tissue

    cases = load_label_cases(store_path, with_images=True)
    train = [c for c in cases if c.split == "train"]
    held = [c for c in cases if c.split != "train"]
    # training images are synthesised from labels; the real train images only shape the k-means
    # clusters outside the breast (clusters="image", the paper's recipe) or are dropped ("position")
    if clusters == "position":
        train = [type(c)(case_id=c.case_id, tissue=c.tissue, breast=c.breast, image=None, split="train") for c in train]
    from synbt_factory.tissue.synth import TissueSynthConfig

    config = TissueTrainConfig.preset(
        preset,
        steps=steps,
        val_every=0,
        workers=1,
        log_every=25,
        patch=patch,
        roi=patch,
        synth=TissueSynthConfig(cluster_features=clusters),
    )
    t0 = time.perf_counter()
    result = train_tissue(train, workdir / "tissue-run", config, val=[], device=device, resume=resume)
    train_s = time.perf_counter() - t0
    model, cfg = load_tissue_model(result.last_path, device=device)
    t_eval = time.perf_counter()
    rows = evaluate_tissue(model, cases, post=cfg.post, roi=cfg.roi, sw_batch_size=cfg.sw_batch_size)
    eval_s = (time.perf_counter() - t_eval) / max(1, len(cases))
    fs = fat_suppression(dataset_dir) if dataset_dir is not None else {}
    split = {c.case_id: c.split for c in cases}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        r["fat_suppressed"] = fs.get(r["case_id"])
        r["labels_seen_in_training"] = split[r["case_id"]] == "train"
        profile = {True: "fat_suppressed", False: "non_fat_suppressed"}.get(r["fat_suppressed"], "unknown")
        part = "train_labels" if r["labels_seen_in_training"] else "heldout"
        groups.setdefault(f"{part}/{profile}", []).append(r)
        groups.setdefault(f"{part}/all", []).append(r)
    summary = {
        k: {
            "cases": len(v),
            **{m: float(np.mean([r[m] for r in v])) for m in ("dice_fgt_raw", "dice_fgt_post", "dice_breast")},
        }
        for k, v in groups.items()
    }
    t1 = time.perf_counter()
    add_tissue_to_store(result.last_path, store_path, device=device, overwrite=True)
    import json

    history = [json.loads(line) for line in (workdir / "tissue-run" / "metrics.jsonl").read_text().splitlines()]
    losses = [h["loss"] for h in history if h["event"] == "train"]  # the whole run, resumed parts included
    return {
        "preset": preset,
        "patch": patch,
        "cluster_features": clusters,
        "steps": steps,
        "train_label_maps": len(train),
        "heldout_real_images": len(held),
        "train_seconds_this_call": train_s,
        "loss_curve": {
            h["step"]: round(h["loss"], 4)
            for h in history
            if h["event"] == "train" and h["step"] % max(1, steps // 10) == 0
        },
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "real_image_dice": summary,
        "per_case": rows,
        "evaluate_seconds_per_case": eval_s,
        "predict_and_write_seconds_per_case": (time.perf_counter() - t1) / max(1, len(cases)),
    }


def run_placements(
    store: Any,
    bank: Any,
    ids: list[str],
    *,
    source: str,
    n: int,
    seed: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``n`` accepted placements cycling over the cases, FGT/breast from ``source``; figures and PNG rows."""
    from synbt_factory.rng import case_generator
    from synbt_factory.synthesis.background_context import context_from_store
    from synbt_factory.synthesis.placement import PlacementError, place_tumor

    contexts, ctx_times = {}, []
    for cid in ids:
        t = time.perf_counter()
        contexts[cid] = context_from_store(store, cid, source=source)
        ctx_times.append(time.perf_counter() - t)
    truth_fgt = {
        cid: (store.read_array(cid, "tissue") == 2) if "tissue" in store.array_names(cid) else None for cid in ids
    }
    accepted, tries, failures, in_fgt, in_breast, in_true_fgt, voxels = 0, 0, 0, [], [], [], []
    rows: list[dict[str, Any]] = []
    t_place = 0.0
    i = 0
    while accepted < n and i < 5 * n:
        cid = ids[i % len(ids)]
        ctx = contexts[cid]
        rng = case_generator(seed, i, "placement")
        i += 1
        t = time.perf_counter()
        try:
            mask, record = place_tumor(rng, bank, ctx)
        except PlacementError:
            failures += 1
            t_place += time.perf_counter() - t
            continue
        t_place += time.perf_counter() - t
        accepted += 1
        tries += record.tries
        in_fgt.append(record.in_fgt_fraction)
        in_breast.append(record.in_breast_fraction)
        voxels.append(record.voxels)
        if truth_fgt[cid] is not None:
            m = mask > 0
            in_true_fgt.append(float((truth_fgt[cid] & m).sum() / m.sum()))
        if len(rows) < 4 and cid not in {r["case"] for r in rows}:
            arrays, _ = store.read_case(cid, ("image", "mask"))
            rows.append(
                {
                    "case": cid,
                    "title": f"{cid} in-breast {record.in_breast_fraction:.0%} in-FGT {record.in_fgt_fraction:.0%}",
                    "image": arrays["image"],
                    "mask": arrays["mask"],
                    "breast": ctx.breast,
                    "fgt": ctx.fgt,
                    "new": mask,
                }
            )
    stats = {
        "fgt_source": sorted({c.notes.get("fgt_source", "?") for c in contexts.values()}),
        "placements": accepted,
        "placement_errors": failures,
        "acceptance_rate": accepted / max(1, tries),
        "mean_tries_per_placement": tries / max(1, accepted),
        "placements_per_second": accepted / max(t_place, 1e-9),
        "context_build_seconds_mean": float(np.mean(ctx_times)),
        "in_fgt_fraction_mean": float(np.mean(in_fgt)),
        "in_fgt_fraction_median": float(np.median(in_fgt)),
        "in_true_fgt_fraction_mean": float(np.mean(in_true_fgt)) if in_true_fgt else None,
        "in_breast_fraction_mean": float(np.mean(in_breast)),
        "in_breast_fraction_min": float(np.min(in_breast)),
        "tumor_voxels_median": float(np.median(voxels)),
    }
    return stats, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="prepared store (default: a fresh phantom)")
    parser.add_argument("--phantom-size", default="small", choices=["tiny", "small", "default"])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--placements", type=int, default=200)
    parser.add_argument("--tissue-steps", type=int, default=0, help="train a tissue model first (0: use labels)")
    parser.add_argument("--tissue-preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--tissue-patch", type=int, default=64, help="training patch / inference window edge")
    parser.add_argument(
        "--tissue-clusters",
        default="image",
        choices=["image", "position"],
        help="k-means features outside the breast (image: real image structure, random intensities)",
    )
    parser.add_argument("--tissue-resume", action="store_true", help="extend the run kept in --keep to --tissue-steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    args = parser.parse_args()

    from synbt_factory.store import CaseStore
    from synbt_factory.synthesis.bank import build_bank
    from synbt_factory.synthesis.placement import placement_figure

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="synbt-placement-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        dataset_dir = None
        if args.data is None:
            dataset_dir, store_path = phantom_prepared(workdir, n=args.cases, size=args.phantom_size, seed=args.seed)
        else:
            store_path = args.data
        figures: dict[str, Any] = {"data": str(args.data or f"phantom {args.phantom_size} n={args.cases}")}
        if args.tissue_steps > 0:
            figures["tissue"] = tissue_stage(
                store_path,
                dataset_dir,
                workdir,
                steps=args.tissue_steps,
                preset=args.tissue_preset,
                patch=args.tissue_patch,
                clusters=args.tissue_clusters,
                resume=args.tissue_resume,
                device=args.device,
            )
            print({k: v for k, v in figures["tissue"].items() if k != "per_case"}, flush=True)
        store = CaseStore.open(store_path)
        t0 = time.perf_counter()
        bank = build_bank(store, workdir / "bank.zarr", overwrite=True)
        figures["bank_build_seconds"] = time.perf_counter() - t0
        figures["bank"] = bank.summary()
        bank.load_all()

        ids = store.case_ids()
        names = set(store.array_names(ids[0]))
        sources = [src for src, need in (("labels", "tissue"), ("pred", "tissue_pred")) if need in names]
        figures.update({"cases": len(ids), "fov": list(store.read_array(ids[0], "mask").shape), "by_fgt_source": {}})
        for source in sources or ["auto"]:
            stats, rows = run_placements(store, bank, ids, source=source, n=args.placements, seed=args.seed)
            figures["by_fgt_source"][source] = stats
            print(source, stats, flush=True)
            if source == (sources or ["auto"])[-1]:
                png = RESULTS_DIR / "placements.png"
                placement_figure(
                    rows,
                    png,
                    title=f"bank placements (cyan) in FGT from {source} (green), breast (yellow), real tumor (red)",
                )
                figures["png"] = str(png)
        figures["peak_rss_mb"] = peak_rss_mb()
        command = (
            f"python -m bench.placement_bench --cases {args.cases} --placements {args.placements} "
            f"--phantom-size {args.phantom_size} --tissue-steps {args.tissue_steps} "
            f"--tissue-preset {args.tissue_preset} --tissue-patch {args.tissue_patch} "
            f"--tissue-clusters {args.tissue_clusters}" + (" --tissue-resume" if args.tissue_resume else "")
        )
        save_result("placement", figures, command=command)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
