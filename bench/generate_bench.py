"""Generate bench: cases/min per method with the stage split, pipeline efficiency, flat memory,
bytes per case, and Dask scaling (1 vs 2 workers, scheduler overhead per task).

    python -m bench.generate_bench [--n 50] [--size small] [--vqvae CKPT --diffusion CKPT] [--device cpu]

Without checkpoints, tiny VQ-VAE and diffusion models are trained for a few steps first: their
quality does not matter for throughput, their architecture does (stated in the JSON).
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

from bench.common import peak_rss_mb, save_result


def _inputs(workdir: Path, size: str) -> tuple[str, str]:
    from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
    from synbt_factory.phantom import PRESETS, write_phantom
    from synbt_factory.synthesis.bank import build_bank

    preset = PRESETS[size]
    fov = tuple(int(round(v)) for v in preset.fov_mm)  # type: ignore[attr-defined]
    write_phantom(workdir / "ph", n=10, seed=0, size=size, healthy_fraction=0.0)
    prepare_dataset(workdir / "ph", workdir / "p.zarr", config=PrepareConfig(fov_mm=fov), workers=2)
    build_bank(workdir / "p.zarr", workdir / "bank.zarr", splits=("train", "test"))
    return str(workdir / "p.zarr"), str(workdir / "bank.zarr")


def _tiny_models(workdir: Path, prepared: str, device: str) -> tuple[Path, Path]:
    import dataclasses

    from synbt_factory.training.diffusion import diffusion_train_preset, train_diffusion_from_store
    from synbt_factory.training.vqvae import train_presets, train_vqvae

    model_cfg, train_cfg = train_presets("tiny", "patch")
    train_vqvae(prepared, workdir / "vq", train_config=dataclasses.replace(train_cfg, steps=4), model_config=model_cfg,
                device=device)
    d_model, d_train = diffusion_train_preset("tiny")
    train_diffusion_from_store(workdir / "vq" / "final.pt", prepared, workdir / "diff", model_config=d_model,
                               train_config=dataclasses.replace(d_train, steps=4), device=device)
    return workdir / "vq" / "final.pt", workdir / "diff" / "final.pt"


def _run(method_name: str, n: int, prepared: str, bank: str, out: Path, *, workers: int = 2, batch_size: int = 4,
         cluster: str = "threads", ckpts: tuple[Path, Path] | None = None, device: str = "cpu") -> dict:
    from synbt_factory.generate import GenerateConfig, run_generate
    from synbt_factory.generate.methods import SynTumorMethod

    if method_name == "syntumor":
        method = SynTumorMethod.from_prepared(prepared)
    else:
        from synbt_factory.generate.synbt_method import SynBTMethod

        method = SynBTMethod.from_checkpoints(ckpts[0], ckpts[1], device=device, steps=10)  # type: ignore[index]
    config = GenerateConfig(n=n, seed=0, method=method_name, workers=workers, batch_size=batch_size)
    t0 = time.perf_counter()
    result = run_generate(config, out=out, prepared=prepared, bank=bank, method=method, cluster=cluster)
    wall = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    stage = result.stage_seconds
    synthesis = stage.get("driver_synthesis", stage.get("synthesis", 0.0))
    return {
        "method": method_name, "n": n, "workers": workers, "batch_size": batch_size, "cluster": cluster,
        "wall_s": wall, "cases_per_min": 60.0 * n / wall,
        "stage_seconds_total": stage,
        "synthesis_only_cases_per_min": 60.0 * n / synthesis if synthesis else None,
        "efficiency_end_to_end_over_synthesis_only": (synthesis / wall) if synthesis else None,
        "bytes_per_case": size / n,
    }


def _rss_child(args: argparse.Namespace) -> None:
    out = Path(args.workdir) / f"rss{args.n}.zarr"
    _run("syntumor", args.n, args.prepared, args.bank, out)
    print(json.dumps({"n": args.n, "peak_rss_mb": peak_rss_mb()}))


def _scheduler_overhead(tasks: int = 200) -> dict:
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.gather(client.map(abs, range(10)))
        t0 = time.perf_counter()
        client.gather(client.map(abs, range(tasks), pure=False))
        dt = time.perf_counter() - t0
    return {"tasks": tasks, "seconds_per_task": dt / tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--size", default="small")
    parser.add_argument("--vqvae", type=Path, default=None)
    parser.add_argument("--diffusion", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prepared", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bank", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _rss_child(args)
        return
    workdir = Path(tempfile.mkdtemp(prefix="synbt-generate-bench-"))
    try:
        t0 = time.perf_counter()
        prepared, bank = _inputs(workdir, args.size)
        setup_s = time.perf_counter() - t0
        ckpts = (args.vqvae, args.diffusion) if args.vqvae and args.diffusion else _tiny_models(workdir, prepared, args.device)
        runs = []
        for method in ("syntumor", "synbt"):
            runs.append(_run(method, args.n, prepared, bank, workdir / f"{method}.zarr", ckpts=ckpts, device=args.device))
            print(runs[-1], flush=True)
        scaling = []
        for workers in (1, 2):
            scaling.append(_run("syntumor", max(10, args.n // 2), prepared, bank, workdir / f"scale{workers}.zarr",
                                workers=workers, cluster="local"))
            print(scaling[-1], flush=True)
        rss = []
        for n in (20, 100):
            child = subprocess.run([sys.executable, "-m", "bench.generate_bench", "--rss-child", "--n", str(n),
                                    "--workdir", str(workdir), "--prepared", prepared, "--bank", bank],
                                   capture_output=True, text=True, check=True)
            rss.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(rss[-1], flush=True)
        figures = {
            "phantom_size": args.size, "setup_seconds": setup_s, "device": args.device,
            "models": "given checkpoints" if args.vqvae else "tiny presets (4 training steps: throughput only)",
            "methods": runs,
            "dask_local_cluster_scaling_syntumor": scaling,
            "scheduler_overhead": _scheduler_overhead(),
            "peak_rss_vs_n_syntumor": rss,
        }
        save_result("generate", figures, command=f"python -m bench.generate_bench --n {args.n} --size {args.size}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
