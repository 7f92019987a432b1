"""Latent diffusion speed: denoiser step vs batch size, FLOPs and FLOP/s vs a matmul peak, time per synthetic case.

Run from the repository root::

    python -m bench.diffusion_bench [--device cpu|cuda] [--preset small] [--fov 192,192,128] [--repeat 2]
                                    [--threads N] [--case-batches 1,4]

On a shared CPU machine use ``--threads 1``: with more busy processes than cores, OpenMP barrier
waits make small convolutions several times slower with 2 threads than with 1.

Figures (``bench/results/diffusion.json``):

* ``matmul_peak``: a large square matmul (fp32; bf16 too on CUDA) measured in the same run.
* ``denoiser_step``: one denoiser call (= one DDIM step) of the **paper-size** denoiser
  (``DiffusionConfig`` preset ``paper``: channels 24/48/96/192, attention at the two coarsest
  levels, 2 res blocks, 17→8 channels) at latent 32×48×48 (the paper's 128×192×192 field of view)
  and at a 16³ tumor window, batch 1/2/4/8: seconds per call and per case, FLOPs of one call
  (``torch.utils.flop_counter.FlopCounterMode``), achieved FLOP/s and its ratio to the matmul peak.
* ``batch_invariance``: max |Δ| between a case's denoiser output alone and inside a batch of 4.
* ``per_case``: full time per synthetic case (encode + 10 DDIM steps + decode + blend) with the
  ``--preset`` denoiser and VQ-VAE (random weights: speed only), whole vs window mode, window mode with
  mask guidance 1.5 (two denoiser evaluations per step, one call on the doubled batch), and how far
  the window mode's autoencoder passes differ from the whole-volume ones inside the mask.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.common import peak_rss_mb, save_result, time_call
from synbt_factory.device import resolve_device
from synbt_factory.models.diffusion import MaskConditionedDenoiser, diffusion_preset
from synbt_factory.rng import torch_generator
from synbt_factory.synthesis.sampler import InpaintingSampler, SamplerConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, repeat: int) -> dict[str, float]:
    def call() -> None:
        fn()
        _sync(device)

    return time_call(call, repeat=repeat, warmup=1)


def matmul_peak(device: torch.device, repeat: int) -> dict[str, Any]:
    """Achieved FLOP/s of an n×n @ n×n matmul (2n³ FLOPs): fp32, and bf16 on CUDA."""
    n = 8192 if device.type == "cuda" else 2048
    out: dict[str, Any] = {"n": n}
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    for dtype in dtypes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        t = _timed(lambda a=a, b=b: a @ b, device, max(repeat, 5))
        out[str(dtype).replace("torch.", "")] = {"median_s": t["median_s"], "tflops": 2 * n**3 / t["min_s"] / 1e12}
    return out


def _randomise_zero_init(module: nn.Module, generator: torch.Generator) -> None:
    """MONAI zero-initialises output/residual convolutions; random values make the outputs non-trivial."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1 and not bool(p.any()):
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))


def denoiser_flops(net: MaskConditionedDenoiser, shape: tuple[int, int, int], device: torch.device) -> int:
    z = torch.zeros(1, 8, *shape, device=device)
    c = torch.zeros(1, 9, *shape, device=device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(z, torch.tensor([500], device=device), c)
    return int(counter.get_total_flops())


def denoiser_steps(device: torch.device, repeat: int, peak: dict[str, Any]) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    net = MaskConditionedDenoiser(diffusion_preset("paper")).to(device).eval()
    rows = []
    precisions = ["fp32"] + (["bf16"] if device.type == "cuda" else [])
    for shape in [(32, 48, 48), (16, 16, 16)]:
        flops = denoiser_flops(net, shape, device)
        for precision in precisions:
            for batch in (1, 2, 4, 8):
                z = torch.randn(batch, 8, *shape, generator=gen).to(device)
                c = torch.randn(batch, 9, *shape, generator=gen).to(device)
                t = torch.full((batch,), 500, device=device, dtype=torch.long)

                def call(z=z, t=t, c=c, bf16=precision == "bf16") -> None:
                    with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                                                enabled=bf16):
                        net(z, t, c)

                timing = _timed(call, device, repeat)
                achieved = flops * batch / timing["min_s"]
                ref = peak["bfloat16" if precision == "bf16" else "float32"]["tflops"] * 1e12
                rows.append({
                    "latent": list(shape), "batch": batch, "precision": precision,
                    "median_s": timing["median_s"], "per_case_s": timing["median_s"] / batch,
                    "gflop_per_case": flops / 1e9, "achieved_tflops": achieved / 1e12,
                    "ratio_to_matmul_peak": achieved / ref,
                })
                print(rows[-1], flush=True)
    return rows


def batch_invariance(device: torch.device) -> dict[str, float]:
    gen = torch.Generator().manual_seed(1)
    out = {}
    for preset, shape in [("paper", (16, 16, 16)), ("small", (16, 16, 16))]:
        net = MaskConditionedDenoiser(diffusion_preset(preset)).to(device).eval()
        _randomise_zero_init(net, gen)
        z = torch.randn(4, 8, *shape, generator=gen).to(device)
        c = torch.randn(4, 9, *shape, generator=gen).to(device)
        t = torch.tensor([999, 500, 100, 1], device=device)
        with torch.inference_mode():
            full = net(z, t, c)
            single = torch.cat([net(z[i : i + 1], t[i : i + 1], c[i : i + 1]) for i in range(4)])
        out[f"{preset}_max_abs_diff"] = float((full - single).abs().max())
        out[f"{preset}_output_abs_mean"] = float(full.abs().mean())
    return out


def _case(fov: tuple[int, int, int], batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.nn.functional.avg_pool3d(torch.rand(batch, 2, *fov, generator=generator), 5, stride=1, padding=2)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in fov], indexing="ij"))
    masks = []
    for b in range(batch):
        centre = torch.tensor([s * (0.35 + 0.1 * b) for s in fov])[:, None, None, None]
        masks.append((((grid - centre) ** 2).sum(0) <= 10.0**2).to(torch.uint8))  # a 20 mm tumor
    return images, torch.stack(masks)


def per_case(
    device: torch.device, preset: str, fov: tuple[int, int, int], repeat: int, batches: tuple[int, ...]
) -> dict[str, Any]:
    from synbt_factory.models.vqvae import PatchVolumeVQVAE, vqvae_preset

    gen = torch.Generator().manual_seed(2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vq = PatchVolumeVQVAE(vqvae_preset(preset)).to(device).eval()
        den = MaskConditionedDenoiser(diffusion_preset(preset)).to(device).eval()
    _randomise_zero_init(den, gen)
    norm = vq.latent_norm()
    result: dict[str, Any] = {"preset": preset, "fov": list(fov), "tumor_diameter_voxels": 21}
    warmed: set[str] = set()
    for batch in batches:
        images, masks = _case(fov, batch, gen)
        for mode, guidance in (("whole", 1.0), ("window", 1.0), ("window", 1.5)):
            sampler = InpaintingSampler(vq, den, norm, SamplerConfig(mode=mode, guidance=guidance))
            key = f"{mode}_batch{batch}" if guidance == 1.0 else f"{mode}_guidance{guidance}_batch{batch}"
            gens = lambda n=batch: [torch_generator(0, i, "ddim") for i in range(n)]  # noqa: E731
            if mode not in warmed:
                sampler.sample(images[:1], masks[:1], gens(1))  # warm-up
                warmed.add(mode)
            times, stages = [], []
            for _ in range(repeat):
                t0 = time.perf_counter()
                sampler.sample(images, masks, gens())
                times.append(time.perf_counter() - t0)
                stages.append(dict(sampler.last_timings))
            best = min(range(repeat), key=lambda i: times[i])
            result[key] = {
                "seconds_per_case": times[best] / batch,
                "stage_seconds_per_case": {k: v / batch for k, v in stages[best].items()},
                "per_case_calls": sampler.per_case_calls,
            }
            print(key, result[key], flush=True)
    for batch in batches:
        result[f"window_speedup_batch{batch}"] = (result[f"whole_batch{batch}"]["seconds_per_case"]
                                                  / result[f"window_batch{batch}"]["seconds_per_case"])
    result["mask_region_equivalence"] = _window_equivalence(vq, images[:1].to(device), masks[:1].to(device))
    return result


def _window_equivalence(vq: Any, image: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Autoencoder passes on a 16³-latent window vs the whole volume, compared inside the mask."""
    f = vq.downsample_factor
    idx = torch.nonzero(mask[0])
    centre = ((idx.min(0).values + idx.max(0).values) // 2).tolist()
    start = [max(0, min(c // f - 8, s // f - 16)) for c, s in zip(centre, image.shape[2:], strict=True)]
    lat = tuple(slice(s, s + 16) for s in start)
    img = tuple(slice(f * s, f * (s + 16)) for s in start)
    with torch.inference_mode():
        z_whole = vq.quantize(vq.encode(image))
        z_win = vq.quantize(vq.encode(image[(slice(None), slice(None), *img)]))
        cells = torch.nn.functional.max_pool3d(mask[:, None].float(), f)[0, 0][lat] > 0
        dec_whole = vq.decode(z_whole)[(slice(None), slice(None), *img)]
        dec_win = vq.decode(z_whole[(slice(None), slice(None), *lat)])
        inside = mask[0][img] > 0
    scale = float(dec_whole[:, :, inside].abs().mean())
    return {
        "encode_codes_equal_fraction_in_mask_cells": float(
            (z_whole[(slice(None), slice(None), *lat)] == z_win).all(1)[0][cells].float().mean()),
        "decode_max_abs_diff_in_mask": float((dec_whole - dec_win)[:, :, inside].abs().max()),
        "decode_abs_mean_in_mask": scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--preset", default="small", help="denoiser and VQ-VAE preset of the per-case timing")
    parser.add_argument("--fov", default="192,192,128", help="image size X,Y,Z of the per-case timing")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-steps", action="store_true", help="skip the paper-size batch sweep")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--case-batches", default=None, help="batch sizes of the per-case timing (cpu: 1, cuda: 1,4)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    batches = tuple(int(v) for v in (args.case_batches or ("1,4" if device.type == "cuda" else "1")).split(","))
    fov = tuple(int(v) for v in args.fov.split(","))
    figures: dict[str, Any] = {"device": str(device), "load_average_at_start": list(os.getloadavg()),
                               "denoiser_paper_channels": list(diffusion_preset("paper").channels)}
    figures["matmul_peak"] = matmul_peak(device, args.repeat)
    print(figures["matmul_peak"], flush=True)
    if not args.skip_steps:
        figures["denoiser_step"] = denoiser_steps(device, args.repeat, figures["matmul_peak"])
    figures["batch_invariance"] = batch_invariance(device)
    print(figures["batch_invariance"], flush=True)
    figures["per_case"] = per_case(device, args.preset, fov, args.repeat, batches)  # type: ignore[arg-type]
    figures["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        figures["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    save_result("diffusion", figures)


if __name__ == "__main__":
    main()
