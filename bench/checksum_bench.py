"""Read-side checksum cost: whole-case read MB/s with and without the sha256 check, and a training step.

    python -m bench.checksum_bench [--prepared STORE] [--cases 4] [--repeats 7] [--steps 8]

Every figure is measured with the check on and off in the same run, interleaved (the order
alternates from one repeat to the next), so machine load hits both alike:

- ``read``: all arrays a training sample or a generated case reads (``image``, ``mask``) and the
  largest one (``phases``), every case, through ``CaseStore.read_case(..., verify=True/False)``.
  MB/s of decoded data, wall and CPU seconds, min and median, and the on/off ratio per repeat.
- ``hash``: ``array_sha256`` alone on the decoded arrays (the check's own cost), next to hashing
  a ``tobytes()`` copy (how the checksum was computed before).
- ``regions``: the partial reads that cannot be checked (one phase of ``phases``; a 64³ patch of
  ``image``) against a checked whole-array read, to show what checking them would cost.
- ``train_step``: one ``segment train`` step (``MixedDataset`` sample: whole-case read, crop,
  augmentation; then forward, Dice+CE, backward, Adam) of the tiny U-Net, the loader reading with
  and without the check, alternating step by step (DataLoader ``num_workers=0``: loading is on the
  step's critical path).

Without ``--prepared`` a 4-case phantom (``small`` preset) is prepared at the default 192×192×128
field of view into a temporary folder first.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import peak_rss_mb, save_result
from synbt_factory.store import CaseStore, array_sha256


def _prepared(workdir: Path, n: int) -> str:
    from synbt_factory.data.prepare import prepare_dataset
    from synbt_factory.phantom import write_phantom

    write_phantom(workdir / "ph", n=n, seed=0, size="small", healthy_fraction=0.0)
    prepare_dataset(workdir / "ph", workdir / "p.zarr", workers=2)
    return str(workdir / "p.zarr")


def _clock(fn: Callable[[], Any]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 4), "median": round(statistics.median(values), 4)}


def _ab(run: Callable[[bool], tuple[float, float]], repeats: int) -> dict[str, list[tuple[float, float]]]:
    """``run(check)`` timed ``repeats`` times per mode, the order alternating; one untimed warm-up each."""
    run(True), run(False)
    times: dict[str, list[tuple[float, float]]] = {"checked": [], "unchecked": []}
    for r in range(repeats):
        for check in (True, False) if r % 2 == 0 else (False, True):
            times["checked" if check else "unchecked"].append(run(check))
    return times


def bench_read(store: CaseStore, case_ids: list[str], names: tuple[str, ...], repeats: int) -> dict[str, Any]:
    nbytes = sum(store.open_array(c, n).nbytes for c in case_ids for n in names)

    def run(check: bool) -> tuple[float, float]:
        return _clock(lambda: [store.read_case(c, names, verify=check) for c in case_ids])

    times = _ab(run, repeats)
    out: dict[str, Any] = {"arrays": list(names), "cases": len(case_ids), "decoded_mb": round(nbytes / 1e6, 2)}
    for mode, pairs in times.items():
        walls, cpus = [w for w, _ in pairs], [c for _, c in pairs]
        out[mode] = {
            "wall_s": _summary(walls),
            "cpu_s": _summary(cpus),
            "mb_per_s_wall": {
                "max": round(nbytes / 1e6 / min(walls), 1),
                "median": round(nbytes / 1e6 / statistics.median(walls), 1),
            },
            "mb_per_s_cpu": {
                "max": round(nbytes / 1e6 / min(cpus), 1),
                "median": round(nbytes / 1e6 / statistics.median(cpus), 1),
            },
        }
    ratios = [c[0] / u[0] for c, u in zip(times["checked"], times["unchecked"], strict=True)]
    cpu_ratios = [c[1] / u[1] for c, u in zip(times["checked"], times["unchecked"], strict=True)]
    out["checked_over_unchecked_wall"] = _summary(ratios)
    out["checked_over_unchecked_cpu"] = _summary(cpu_ratios)
    return out


def bench_hash(arrays: list[np.ndarray], repeats: int) -> dict[str, Any]:
    nbytes = sum(a.nbytes for a in arrays)

    def copy_hash(a: np.ndarray) -> str:
        h = hashlib.sha256()
        h.update(f"{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    assert all(copy_hash(a) == array_sha256(a) for a in arrays)

    def run(no_copy: bool) -> tuple[float, float]:
        fn = array_sha256 if no_copy else copy_hash
        return _clock(lambda: [fn(a) for a in arrays])

    times = _ab(run, repeats)
    cpus = {k: [c for _, c in v] for k, v in times.items()}
    return {
        "mb": round(nbytes / 1e6, 2),
        "array_sha256_mb_per_cpu_s": round(nbytes / 1e6 / statistics.median(cpus["checked"]), 1),
        "tobytes_copy_then_sha256_mb_per_cpu_s": round(nbytes / 1e6 / statistics.median(cpus["unchecked"]), 1),
    }


def bench_regions(store: CaseStore, case_id: str, repeats: int) -> dict[str, Any]:
    phases, image = store.open_array(case_id, "phases"), store.open_array(case_id, "image")
    cases: dict[str, Callable[[], Any]] = {
        "one_phase_slice_unchecked": lambda: np.asarray(phases[2]),
        "phases_whole_checked_then_slice": lambda: store.read_array(case_id, "phases")[2],
        "patch_64_unchecked": lambda: np.asarray(image[:, 64:128, 64:128, 32:96]),
        "image_whole_checked_then_patch": lambda: store.read_array(case_id, "image")[:, 64:128, 64:128, 32:96],
    }
    out: dict[str, Any] = {"case": case_id, "phases_shape": list(phases.shape), "image_shape": list(image.shape)}
    for fn in cases.values():
        fn()
    clocks: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for r in range(repeats):
        for name in list(cases) if r % 2 == 0 else list(reversed(cases)):
            clocks[name].append(_clock(cases[name]))
    for name, values in clocks.items():
        out[name] = {"wall_s": _summary([w for w, _ in values]), "cpu_s": _summary([c for _, c in values])}
    return out


def bench_train_step(location: str, case_ids: list[str], steps: int, crop: int) -> dict[str, Any]:
    import torch
    from monai.losses import DiceCELoss

    from synbt_factory.data.mixing import MixConfig, MixedDataset
    from synbt_factory.models.segmenters import SegmenterConfig, build_segmenter

    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig(name="unet", preset="tiny", patch_size=(crop, crop, crop)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    dataset = MixedDataset(
        location, case_ids, config=MixConfig(crop=(crop, crop, crop), samples_per_epoch=10**6), seed=0
    )
    checked_read = CaseStore.read_array

    def unchecked_read(self: CaseStore, case_id: str, name: str, *, verify: bool = True) -> np.ndarray:
        return checked_read(self, case_id, name, verify=False)

    def step(index: int, check: bool) -> tuple[float, float, float, float]:
        CaseStore.read_array = checked_read if check else unchecked_read  # type: ignore[method-assign]
        try:
            w0, c0 = time.perf_counter(), time.process_time()
            sample = dataset[index]
            load, load_cpu = time.perf_counter() - w0, time.process_time() - c0
            image, label = sample["image"][None], sample["label"][None]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(image), label)
            loss.backward()
            optimizer.step()
            return time.perf_counter() - w0, time.process_time() - c0, load, load_cpu
        finally:
            CaseStore.read_array = checked_read  # type: ignore[method-assign]

    model.train()
    step(0, True), step(1, False)
    runs: dict[str, list[tuple[float, float, float, float]]] = {"checked": [], "unchecked": []}
    index = 2
    for r in range(steps):
        for check in (True, False) if r % 2 == 0 else (False, True):
            runs["checked" if check else "unchecked"].append(step(index, check))
            index += 1
    out: dict[str, Any] = {
        "model": "unet tiny",
        "crop": [crop] * 3,
        "batch": 1,
        "steps_per_mode": steps,
        "torch_threads": torch.get_num_threads(),
        "loader_workers": 0,
    }
    for mode, values in runs.items():
        out[mode] = {
            "step_wall_s": _summary([v[0] for v in values]),
            "step_cpu_s": _summary([v[1] for v in values]),
            "sample_load_wall_s": _summary([v[2] for v in values]),
            "sample_load_cpu_s": _summary([v[3] for v in values]),
        }
    for label, col in (("wall", 0), ("cpu", 1)):
        med = {m: statistics.median(v[col] for v in runs[m]) for m in runs}
        out[f"step_{label}_checked_over_unchecked_median"] = round(med["checked"] / med["unchecked"], 4)
        out[f"step_{label}_added_ms_median"] = round((med["checked"] - med["unchecked"]) * 1e3, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", default=None, help="prepared store to read (default: a phantom, made here)")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=12, help="training steps per mode")
    parser.add_argument("--crops", type=int, nargs="*", default=[64], help="cubic training crops to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        location = args.prepared or _prepared(Path(tmp), args.cases)
        store = CaseStore.open(location)
        case_ids = store.case_ids()[: args.cases]
        layout = store.layout
        figures: dict[str, Any] = {
            "store": {
                "location": "phantom (small preset, prepared 192x192x128)" if args.prepared is None else str(location),
                "cases": len(case_ids),
                "codec": layout.codec,
                "level": layout.level,
                "chunk": layout.chunk,
                "arrays": {n: list(store.open_array(case_ids[0], n).shape) for n in store.array_names(case_ids[0])},
            },
            "read_image_mask": bench_read(store, case_ids, ("image", "mask"), args.repeats),
            "read_phases": bench_read(store, case_ids, ("phases",), args.repeats),
            "hash": bench_hash([store.read_array(c, n) for c in case_ids for n in ("image", "mask")], args.repeats),
            "regions": bench_regions(store, case_ids[0], args.repeats),
            "train_step": [bench_train_step(location, case_ids, args.steps, crop) for crop in args.crops],
            "peak_rss_mb": 0.0,
        }
        figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
    save_result("checksum", figures)


if __name__ == "__main__":
    main()
