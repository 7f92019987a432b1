"""SynBT end-to-end ÷ sampling-only: does ``synbt generate --method synbt`` run at the speed of its sampler?

    python -m bench.synbt_pipeline_bench [--size tiny] [--backgrounds 8] [--n 16] [--batch-size 4] [--rounds 3]
                                         [--no-cli] [--no-encode-ab]

Inputs: a phantom of ``--size`` (prepared, with the placement context stored, and a tumor bank) and the generator
weights shipped with synbt (``phantom_tiny``: the ``cpu`` VQ-VAE and denoiser presets, the demo's models), CPU,
DDIM 10 steps, η = 1, guidance 1, window mode, quality gate off. Arms, each run ``--rounds`` times in a rotating
order so that load changes on a shared machine hit every arm alike:

* ``sampling_only``: the same cases, placed beforehand, through ``SynBTMethod.synthesize`` in the same batches as
  the pipeline (encode, DDIM, decode, blend: what the sampler does, nothing else);
* ``end_to_end``: ``run_generate`` in this process with the same loaded method (placement and writes on Dask
  threads, sampling on the driver: everything ``synbt generate`` does after start-up);
* ``cli`` (unless ``--no-cli``): the ``synbt generate`` command in a fresh process, start-up and model loading
  included;
* unless ``--no-encode-ab``, both in-process arms again with the encoder in calls of 4 patches (the
  encoding before ``PatchVolumeVQVAE.encode(patch_batch=None)``), and whether both encodings give the same images.

Per arm and round: wall seconds, CPU seconds of the process (all threads; the child's for ``cli``), cases/s and the
stage split. Ratios are taken within each round (same load) and their median is reported. Stage seconds of the
pipeline are summed over cases; placement and writes run on worker threads beside the sampler, so they are thread
seconds, not wall seconds. Writes ``bench/results/synbt_pipeline.json`` (``synbt_pipeline_<size>.json`` for
another ``--size``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import run_measured, save_result

_STAGES = {
    "placement": "place",
    "sampler_encode": "encode",
    "sampler_denoise": "sample",
    "sampler_decode": "decode",
    "sampler_blend": "blend",
    "write": "write",
}


def _inputs(workdir: Path, size: str, cases: int, seed: int) -> dict[str, str]:
    from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
    from synbt_factory.phantom import PRESETS, write_phantom
    from synbt_factory.pretrained import install_pretrained
    from synbt_factory.synthesis.bank import build_bank

    fov = tuple(int(round(v)) for v in PRESETS[size].fov_mm)  # type: ignore[attr-defined]
    write_phantom(workdir / "ph", n=cases, seed=seed, size=size, healthy_fraction=0.0)
    prepare_dataset(workdir / "ph", workdir / "p.zarr", config=PrepareConfig(fov_mm=fov), workers=2)
    build_bank(workdir / "p.zarr", workdir / "bank.zarr", splits=("train", "test"))
    install_pretrained("phantom_tiny", "vqvae_volume", workdir / "vqvae.pt")
    install_pretrained("phantom_tiny", "diffusion", workdir / "diffusion.pt")
    return {
        "prepared": str(workdir / "p.zarr"),
        "bank": str(workdir / "bank.zarr"),
        "vqvae": str(workdir / "vqvae.pt"),
        "diffusion": str(workdir / "diffusion.pt"),
    }


@contextlib.contextmanager
def encoder_calls_of_four() -> Iterator[None]:
    """``PatchVolumeVQVAE.encode`` as it was: 4 patches per encoder call unless told otherwise."""
    from synbt_factory.models.vqvae import PatchVolumeVQVAE

    original = PatchVolumeVQVAE.encode

    def encode(self: Any, x: Any, *, patch_batch: int | None = None) -> Any:
        return original(self, x, patch_batch=4 if patch_batch is None else patch_batch)

    PatchVolumeVQVAE.encode = encode  # type: ignore[method-assign]
    try:
        yield
    finally:
        PatchVolumeVQVAE.encode = original  # type: ignore[method-assign]


def _measure(fn: Any) -> dict[str, Any]:
    load = os.getloadavg()[0]
    w0, c0 = time.perf_counter(), time.process_time()
    extra = fn()
    return {
        "wall_s": time.perf_counter() - w0,
        "cpu_s": time.process_time() - c0,
        "load_1min_before": load,
        **(extra or {}),
    }


def _stage_split(totals: dict[str, float]) -> dict[str, float]:
    return {name: round(totals.get(key, 0.0), 3) for key, name in _STAGES.items() if key in totals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=["tiny", "small", "default"], help="phantom preset")
    parser.add_argument("--backgrounds", type=int, default=8, help="phantom cases (backgrounds)")
    parser.add_argument("--n", type=int, default=16, help="synthetic cases per run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cli", action="store_true", help="skip the fresh-process synbt generate arm")
    parser.add_argument("--no-encode-ab", action="store_true", help="skip the 4-patch encoder arms")
    args = parser.parse_args()

    from synbt_factory.generate import run_generate
    from synbt_factory.generate.jobs import GenerateConfig, plan_jobs
    from synbt_factory.generate.placing import Placer
    from synbt_factory.generate.synbt_method import SynBTMethod
    from synbt_factory.store import CaseStore
    from synbt_factory.synthesis.background_context import has_stored_anatomy
    from synbt_factory.synthesis.placement import PlacementConfig

    workdir = Path(tempfile.mkdtemp(prefix="synbt-pipeline-bench-"))
    try:
        t0 = time.perf_counter()
        inputs = _inputs(workdir, args.size, args.backgrounds, args.seed)
        setup_s = time.perf_counter() - t0
        config = GenerateConfig(n=args.n, seed=args.seed, method="synbt", batch_size=args.batch_size)
        source = CaseStore.open(inputs["prepared"])
        backgrounds = [c for c in source.case_ids() if source.case_attrs(c).get("split") == config.background_split]
        stored_context = all(has_stored_anatomy(source, c, PlacementConfig()) for c in backgrounds)
        jobs = plan_jobs(config, backgrounds)
        placer = Placer(inputs["prepared"], inputs["bank"], None)
        placed = [placer.place(job) for job in jobs]
        batches = [placed[i : i + args.batch_size] for i in range(0, len(placed), args.batch_size)]
        t0 = time.perf_counter()
        method = SynBTMethod.from_checkpoints(Path(inputs["vqvae"]), Path(inputs["diffusion"]), device="cpu")
        load_s = time.perf_counter() - t0

        def sampling_only() -> dict[str, Any]:
            stages: dict[str, float] = {}
            images = []
            for batch in batches:
                for image, _, timings in method.synthesize(batch):
                    images.append(image)
                    for k, v in timings.items():
                        stages[k] = stages.get(k, 0.0) + v
            return {"stages": _stage_split(stages), "images": images}

        def end_to_end(tag: str) -> Any:
            def run() -> dict[str, Any]:
                out = workdir / f"e2e-{tag}.zarr"
                shutil.rmtree(out, ignore_errors=True)
                result = run_generate(config, out=out, prepared=inputs["prepared"], bank=inputs["bank"], method=method)
                if len(result.written) != args.n:
                    raise RuntimeError(f"end-to-end wrote {len(result.written)} of {args.n} cases")
                return {
                    "stages": _stage_split(result.stage_seconds),
                    "driver_synthesis_s": result.stage_seconds.get("driver_synthesis", 0.0),
                }

            return run

        def cli() -> dict[str, Any]:
            out = workdir / "cli.zarr"
            shutil.rmtree(out, ignore_errors=True)
            synbt = shutil.which("synbt") or "synbt"
            cmd = [
                synbt,
                "generate",
                "--method",
                "synbt",
                "--n",
                str(args.n),
                "--out",
                str(out),
                "--data",
                inputs["prepared"],
                "--bank",
                inputs["bank"],
                "--vqvae",
                inputs["vqvae"],
                "--diffusion",
                inputs["diffusion"],
                "--batch-size",
                str(args.batch_size),
                "--seed",
                str(args.seed),
                "--device",
                "cpu",
                "--no-quality-gate",
            ]
            load = os.getloadavg()[0]
            measured = run_measured(cmd)
            return {
                "wall_s": measured["wall_s"],
                "cpu_s": measured["cpu_s"],
                "load_1min_before": load,
                "tree_peak_rss_mb": measured["tree_peak_rss_mb"],
            }

        arms: dict[str, Any] = {
            "sampling_only": lambda: _measure(sampling_only),
            "end_to_end": lambda: _measure(end_to_end("new")),
        }
        if not args.no_encode_ab:

            def old(fn: Any) -> Any:
                def run() -> dict[str, Any]:
                    with encoder_calls_of_four():
                        return _measure(fn)

                return run

            arms["sampling_only_encode4"] = old(sampling_only)
            arms["end_to_end_encode4"] = old(end_to_end("old"))
        if not args.no_cli:
            arms["cli"] = cli

        t0 = time.perf_counter()
        sampling_only()  # warm-up: oneDNN builds its kernels for every window shape once
        warmup_s = time.perf_counter() - t0
        names = list(arms)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        identical: list[bool] = []
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                row = arms[name]()
                row["round"] = r
                runs[name].append(row)
                print(
                    f"round {r} {name}: wall {row['wall_s']:.2f} s, cpu {row['cpu_s']:.2f} s, {row.get('stages', '')}",
                    flush=True,
                )
            if "sampling_only_encode4" in runs:
                new, old_ = runs["sampling_only"][-1]["images"], runs["sampling_only_encode4"][-1]["images"]
                identical.append(all(np.array_equal(a, b) for a, b in zip(new, old_, strict=True)))
        for rows in runs.values():
            for row in rows:
                row.pop("images", None)

        def per_round(num: str, den: str, key: str) -> list[float]:
            return [a[key] / b[key] for a, b in zip(runs[num], runs[den], strict=True)]

        def summary(name: str) -> dict[str, Any]:
            rows = runs[name]
            wall = statistics.median(r["wall_s"] for r in rows)
            cpu = statistics.median(r["cpu_s"] for r in rows)
            out = {
                "wall_s_median": wall,
                "cpu_s_median": cpu,
                "cases_per_s": args.n / wall,
                "cpu_s_per_case": cpu / args.n,
            }
            if "stages" in rows[0]:
                best = min(rows, key=lambda r: r["wall_s"])
                out["stage_seconds_fastest_run"] = best["stages"]
            return out

        ratios: dict[str, Any] = {
            "end_to_end_over_sampling_only": {
                "throughput_wall": statistics.median(per_round("sampling_only", "end_to_end", "wall_s")),
                "cpu_efficiency": statistics.median(per_round("sampling_only", "end_to_end", "cpu_s")),
                "per_round_wall": per_round("sampling_only", "end_to_end", "wall_s"),
                "per_round_cpu": per_round("sampling_only", "end_to_end", "cpu_s"),
                "goal": ">= 0.9 (throughput_wall)",
            },
        }
        if "cli" in runs:
            ratios["cli_over_sampling_only"] = {
                "throughput_wall": statistics.median(per_round("sampling_only", "cli", "wall_s")),
                "cpu_efficiency": statistics.median(per_round("sampling_only", "cli", "cpu_s")),
                "fixed_wall_s_median": statistics.median(
                    c["wall_s"] - e["wall_s"] for c, e in zip(runs["cli"], runs["end_to_end"], strict=True)
                ),
            }
        if "sampling_only_encode4" in runs:
            enc = [
                a["stages"]["encode"] / b["stages"]["encode"]
                for a, b in zip(runs["sampling_only_encode4"], runs["sampling_only"], strict=True)
            ]
            enc_e2e = [
                a["stages"]["encode"] / b["stages"]["encode"]
                for a, b in zip(runs["end_to_end_encode4"], runs["end_to_end"], strict=True)
            ]
            ratios["encode_calls_of_four_over_default"] = {
                "encode_stage_sampling_only": statistics.median(enc),
                "encode_stage_end_to_end": statistics.median(enc_e2e),
                "sampling_only_wall": statistics.median(per_round("sampling_only_encode4", "sampling_only", "wall_s")),
                "sampling_only_cpu": statistics.median(per_round("sampling_only_encode4", "sampling_only", "cpu_s")),
                "end_to_end_wall": statistics.median(per_round("end_to_end_encode4", "end_to_end", "wall_s")),
                "end_to_end_cpu": statistics.median(per_round("end_to_end_encode4", "end_to_end", "cpu_s")),
                "images_bit_identical_every_round": all(identical),
            }
            ratios["encode_over_decode"] = {
                name: statistics.median(r["stages"]["encode"] / max(r["stages"]["decode"], 1e-9) for r in runs[name])
                for name in ("sampling_only", "end_to_end", "sampling_only_encode4", "end_to_end_encode4")
            }
        figures = {
            "size": args.size,
            "backgrounds": len(backgrounds),
            "n": args.n,
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "models": "shipped phantom_tiny weights (cpu presets), CPU, DDIM 10 steps, eta 1, "
            "guidance 1, window mode, quality gate off",
            "image_shape": list(placed[0].image.shape),
            "stored_placement_context": stored_context,
            "setup_s": setup_s,
            "model_load_s": load_s,
            "warmup_s": warmup_s,
            "ratios": ratios,
            "arms": {name: summary(name) for name in names},
            "runs": runs,
            "load_average_end": list(os.getloadavg()),
        }
        command = (
            f"python -m bench.synbt_pipeline_bench --size {args.size} --backgrounds {args.backgrounds} "
            f"--n {args.n} --batch-size {args.batch_size} --rounds {args.rounds} --seed {args.seed}"
            + (" --no-cli" if args.no_cli else "")
            + (" --no-encode-ab" if args.no_encode_ab else "")
        )
        save_result(
            "synbt_pipeline" if args.size == "tiny" else f"synbt_pipeline_{args.size}", figures, command=command
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
