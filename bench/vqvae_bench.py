"""Patch-to-volume VQ-VAE speed and memory.

Run from the repository root::

    python -m bench.vqvae_bench [--device cpu|cuda] [--preset paper|small|tiny]
                                [--volume 128 192 192] [--train-repeat 2] [--skip-train] [--skip-monai]

Figures (each measured in a fresh subprocess, so peak RSS = that variant alone):

* ``train_step``: one patch-stage optimiser step (encoder → MONAI EMA quantiser → decoder, L1 +
  commitment + hinge adversarial, generator and discriminator Adam steps) on a batch of
  ``--batch`` patches of the preset's patch size (paper: 8 × 2 × 64³), median of ``--train-repeat``.
* ``quantize_decode``: quantise a (1, 8, X/4, Y/4, Z/4) latent (paper volume 128×192×192 → 32×48×48)
  with MONAI's quantiser or the chunked search, then decode it in one pass or tiled
  (``--tile`` latent voxels, ``--overlap``), reporting time of each part and the peak RSS.

Writes ``bench/results/vqvae.json`` (``vqvae_<preset>_<device>.json`` off the defaults).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

MARK = "VQVAE_BENCH_RESULT "


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _sync(device) -> None:  # noqa: ANN001
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(preset: str, device):  # noqa: ANN001, ANN202
    import torch

    from synbt_factory.models.vqvae import PatchVolumeVQVAE, vqvae_preset

    torch.manual_seed(0)
    return PatchVolumeVQVAE(vqvae_preset(preset)).to(device)


def worker_train(args: argparse.Namespace) -> dict:
    import torch

    from synbt_factory.config import replace
    from synbt_factory.training.vqvae import _Stage, build_discriminator, train_presets

    device = torch.device(args.device)
    model_cfg, cfg = train_presets(args.preset, "patch")
    cfg = replace(cfg, batch_size=args.batch, adv_start_step=0)
    model = _model(args.preset, device)
    disc = build_discriminator(cfg, model_cfg.in_channels).to(device)
    stage = _Stage(model, disc, cfg, None, torch.Generator(device=device).manual_seed(0))
    p = model_cfg.patch_size
    x = torch.rand(args.batch, 2, p, p, p, generator=torch.Generator().manual_seed(1)).to(device)
    times = []
    for i in range(1 + args.train_repeat):
        _sync(device)
        t0 = time.perf_counter()
        stage.step(x, step_index=i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    n_params = sum(q.numel() for q in model.parameters())
    return {
        "batch": args.batch,
        "patch": p,
        "step_s_median": statistics.median(times[1:]),
        "step_s_all": times,
        "first_step_s": times[0],
        "vqvae_parameters": n_params,
        "discriminator_parameters": sum(q.numel() for q in disc.parameters()),
        "peak_rss_mb": _rss_mb(),
        **({"cuda_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20} if device.type == "cuda" else {}),
    }


def worker_decode(args: argparse.Namespace) -> dict:
    import torch

    device = torch.device(args.device)
    model = _model(args.preset, device).eval()
    f = model.downsample_factor
    lat = [s // f for s in args.volume]
    gen = torch.Generator().manual_seed(2)
    codes = model.codebook.detach().cpu()
    idx = torch.randint(codes.shape[0], (1, *lat), generator=gen)
    z = (codes[idx].permute(0, 4, 1, 2, 3) + 0.05 * torch.randn((1, codes.shape[1], *lat), generator=gen)).contiguous()
    z = z.to(device)
    rss_before = _current_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        _sync(device)
        t0 = time.perf_counter()
        if args.quantizer == "monai":
            model.net.quantizer.eval()
            z_q, _ = model.net.quantize(z)
        else:
            z_q = model.quantize(z)
        _sync(device)
        t1 = time.perf_counter()
        quant_peak = _rss_mb()
        if args.decode == "tiled":
            out = model.decode_tiled(z_q, tile=args.tile, overlap=args.overlap, out_device="cpu")
        else:
            out = model.decode(z_q)
        _sync(device)
        t2 = time.perf_counter()
    assert tuple(out.shape[2:]) == tuple(args.volume), out.shape
    res = {
        "quantizer": args.quantizer,
        "decode": args.decode,
        "latent": lat,
        "volume": list(args.volume),
        "quantize_s": t1 - t0,
        "decode_s": t2 - t1,
        "total_s": t2 - t0,
        "rss_before_mb": rss_before,
        "peak_rss_after_quantize_mb": quant_peak,
        "peak_rss_mb": _rss_mb(),
        "output_mean": float(out.float().mean()),
    }
    if args.decode == "tiled":
        res.update({"tile": args.tile, "overlap": args.overlap})
    if device.type == "cuda":
        res["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return res


def _run_worker(kind: str, args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "bench.vqvae_bench",
        "--worker",
        kind,
        "--device",
        args.device,
        "--preset",
        args.preset,
        "--volume",
        *map(str, args.volume),
        "--batch",
        str(args.batch),
        "--train-repeat",
        str(args.train_repeat),
        "--tile",
        str(args.tile),
        "--overlap",
        str(args.overlap),
        *extra,
    ]
    print("running:", " ".join(cmd[2:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            result = json.loads(line[len(MARK) :])
            print(json.dumps(result), flush=True)
            return result
    return {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="paper", choices=["tiny", "small", "paper"])
    parser.add_argument("--volume", type=int, nargs=3, default=[128, 192, 192])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train-repeat", type=int, default=2)
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-monai", action="store_true", help="skip the MONAI-quantiser variants (~10 GB peak)")
    parser.add_argument("--worker", choices=["train", "decode"], help=argparse.SUPPRESS)
    parser.add_argument("--quantizer", choices=["monai", "chunked"], help=argparse.SUPPRESS)
    parser.add_argument("--decode", choices=["onepass", "tiled"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = worker_train(args) if args.worker == "train" else worker_decode(args)
        print(MARK + json.dumps(result), flush=True)
        return

    import os

    from bench.common import save_result

    figures: dict = {"preset": args.preset, "device": args.device, "load_average_start": list(os.getloadavg())}
    if not args.skip_train:
        figures["train_step"] = _run_worker("train", args, [])
    runs = []
    quantizers = ["chunked"] if args.skip_monai else ["chunked", "monai"]
    for quantizer in quantizers:
        for decode in ("onepass", "tiled"):
            runs.append(_run_worker("decode", args, ["--quantizer", quantizer, "--decode", decode]))
    figures["quantize_decode"] = runs
    figures["load_average_end"] = list(os.getloadavg())
    name = "vqvae" if (args.preset, args.device) == ("paper", "cpu") else f"vqvae_{args.preset}_{args.device}"
    save_result(name, figures, command=" ".join(["python -m bench.vqvae_bench", *sys.argv[1:]]).strip())


if __name__ == "__main__":
    main()
