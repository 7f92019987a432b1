"""Latent diffusion speed: denoiser step vs batch size, FLOP/s against a conv3d/matmul yardstick, time per case.

Run from the repository root::

    python -m bench.diffusion_bench [--device cpu|cuda] [--preset small] [--fov 192,192,128] [--repeat 2]
                                    [--threads N] [--case-batches 1,4] [--skip-steps] [--skip-per-case]

On a shared CPU machine use ``--threads 1``: with more busy processes than cores, OpenMP barrier
waits make small convolutions several times slower with 2 threads than with 1.

Figures (``bench/results/diffusion.json``):

* ``denoiser_step``: one denoiser call (= one DDIM step) of the **paper-size** denoiser
  (``DiffusionConfig`` preset ``paper``: channels 24/48/96/192, attention at the two coarsest
  levels, 2 res blocks, 17→8 channels) at latent 32×48×48 (the paper's 128×192×192 field of view)
  and at a 16³ tumor window (the default window mode's usual size), batch 1/2/4/8: seconds per call
  and per case, FLOPs of one call (``torch.utils.flop_counter.FlopCounterMode``), achieved GFLOP/s and
  its ratio to the yardstick, from the fastest wall time (``ratio_to_yardstick``) and from the fastest
  process CPU time (``ratio_to_yardstick_cpu``, less hit by other processes on a shared machine).
  Each row names its ``path``: ``sampler`` is the denoiser as ``synbt generate`` runs it
  (``load_diffusion``: on CPU :meth:`~synbt_factory.models.diffusion.MaskConditionedDenoiser.use_cpu_inference_path`,
  oneDNN convolutions in channels-last layout); on CPU ``default`` (PyTorch's own convolution dispatch,
  NCDHW) is timed too, in the same rounds. The yardstick is the best of a large conv3d (64→64 channels,
  3³ kernel, 32×48×48) in NCDHW and in channels-last layout and a 2048³ matmul (8192³ on CUDA), each timed
  in the same rounds as the denoiser paths, alternating with them, so load changes hit all alike. A ratio
  above 1 means the yardstick is not the machine's best and is flagged (``yardstick_wrong``).
  ``sampler_batch`` is the batch ``synbt generate`` groups cases in by default (``GenerateConfig.batch_size``);
  ``sampler_denoiser_batch`` the batch its denoiser calls get at guidance 1 — on CPU the whole batch when the
  ``sampler`` path passes the sampler's own batch-invariance check
  (:func:`~synbt_factory.synthesis.sampler.denoiser_batch_invariant`, run here on the paper denoiser), else 1
  (one call per case) — and ``sampler_denoiser_batch_guidance`` the doubled batch of a guided sampler (guidance
  ≠ 1: one call on cat(conditional, null)). That is the batch when every case of a batch gets the same window
  size (the usual 16³ minimum window); a batch whose cases need different windows splits into smaller groups.
  ``sampler_ratio`` / ``sampler_ratio_guidance``: the ``sampler`` path's ratios at those batches.
* ``batch_invariance``: per preset (paper, small; 16³ latent, random weights incl. the layers MONAI zero-initialises,
  whose untrained output would be 0 everywhere and so trivially invariant): ``*_max_abs_diff``, the max |Δ| between
  each case alone and inside a batch of 4 on the ``sampler`` path (the path the sampler calls batched: 0 = bitwise
  invariant); ``*_default_max_abs_diff``, the same on PyTorch's default path; ``*_sampler_check``, the sampler's
  check (batch 1 vs row 1 of batch 3, ``torch.equal``); ``*_path_max_rel_diff``, the largest |Δ| between the
  ``sampler`` and ``default`` paths relative to the largest |output|; ``threads``, torch's thread count.
* ``per_case``: full time per synthetic case (encode + 10 DDIM steps + decode + blend) with the
  ``--preset`` denoiser and VQ-VAE (random weights: speed only), whole vs window mode, window mode with
  mask guidance 1.5 (two denoiser evaluations per step, one call on the doubled batch), and how far
  the window mode's autoencoder passes differ from the whole-volume ones inside the mask.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.common import peak_rss_mb, save_result
from synbt_factory.device import resolve_device
from synbt_factory.models.diffusion import CHECKPOINT_KIND, MaskConditionedDenoiser, diffusion_preset, load_diffusion
from synbt_factory.rng import torch_generator
from synbt_factory.synthesis.sampler import InpaintingSampler, SamplerConfig, denoiser_batch_invariant


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _flops_of(fn: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        fn()
    return int(counter.get_total_flops())


def yardstick_kernels(device: torch.device, dtype: torch.dtype) -> dict[str, tuple[Callable[[], Any], int]]:
    """The yardstick's kernels and their FLOPs: a large conv3d (the denoiser's own kind of work) in NCDHW and in
    channels-last layout, and a matmul."""
    gen = torch.Generator().manual_seed(3)
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    conv = nn.Conv3d(64, 64, 3, padding=1).to(device, dtype).eval()
    x = torch.randn(1, 64, 32, 48, 48, generator=gen).to(device, dtype)
    cl = torch.channels_last_3d
    conv_cl = nn.Conv3d(64, 64, 3, padding=1).to(device, dtype).eval().to(memory_format=cl)
    x_cl = x.contiguous(memory_format=cl)

    def run_conv() -> None:
        with torch.inference_mode():
            conv(x)

    def run_conv_cl() -> None:
        with torch.inference_mode():
            conv_cl(x_cl)

    def run_mm() -> None:
        with torch.inference_mode():
            a @ b

    return {
        "conv3d_64x64_k3_32x48x48": (run_conv, _flops_of(run_conv)),
        "conv3d_64x64_k3_32x48x48_channels_last": (run_conv_cl, _flops_of(run_conv_cl)),
        f"matmul_{n}": (run_mm, 2 * n**3),
    }


def _seconds(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """Wall and process CPU seconds of one call."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def alternating(
    kernels: dict[str, tuple[Callable[[], Any], int]], device: torch.device, repeat: int
) -> dict[str, dict[str, float]]:
    """Time the kernels in ``repeat`` rounds, each round calling every kernel once (after one warm-up round);
    per kernel: the fastest and the median call (wall), the fastest in process CPU time, and GFLOP/s at the
    fastest wall (``gflops``) and CPU (``gflops_cpu``) time."""
    for fn, _ in kernels.values():
        fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in kernels}
    for _ in range(repeat):
        for name, (fn, _) in kernels.items():
            times[name].append(_seconds(fn, device))
    out = {}
    for name, (_, flops) in kernels.items():
        walls = sorted(w for w, _ in times[name])
        cpu = min(c for _, c in times[name])
        out[name] = {
            "min_s": walls[0],
            "median_s": walls[len(walls) // 2],
            "cpu_min_s": cpu,
            "gflops": flops / walls[0] / 1e9,
            "gflops_cpu": flops / max(cpu, 1e-9) / 1e9,
        }
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


def sampler_denoiser(net: MaskConditionedDenoiser, device: torch.device, folder: Path) -> MaskConditionedDenoiser:
    """``net`` as ``synbt generate`` runs it: saved as a diffusion checkpoint and rebuilt by ``load_diffusion``."""
    from synbt_factory.checkpoint import save_checkpoint
    from synbt_factory.config import config_to_dict
    from synbt_factory.models.autoencoder import LatentNorm

    state = {k: v.cpu() for k, v in net.state_dict().items()}
    payload = {
        "model": state,
        "ema": {**{f"module.{k}": v for k, v in state.items()}, "n_averaged": torch.tensor(1)},
        "latent_norm": dataclasses.asdict(LatentNorm()),
    }
    path = save_checkpoint(folder / "denoiser.pt", payload, kind=CHECKPOINT_KIND, config=config_to_dict(net.config))
    return load_diffusion(path, device).model


def _paths(net: MaskConditionedDenoiser, device: torch.device, folder: Path) -> dict[str, MaskConditionedDenoiser]:
    """``sampler`` (what ``synbt generate`` runs) and, where that differs, ``default`` (PyTorch's own dispatch)."""
    sampler = sampler_denoiser(net, device, folder)
    return {"sampler": sampler} if sampler.memory_format == net.memory_format else {"sampler": sampler, "default": net}


def sampler_denoiser_batch(device: torch.device, invariant: bool) -> int:
    """The batch of the sampler's denoiser calls under ``synbt generate``'s defaults (guidance 1: one call per step),
    given whether the denoiser passed the sampler's batch-invariance check (``invariant``, used on CPU only)."""
    from synbt_factory.generate.jobs import GenerateConfig

    per_case = SamplerConfig().per_case_calls
    if per_case is None:
        per_case = device.type != "cuda" and not invariant
    return 1 if per_case else GenerateConfig(n=1).batch_size


def denoiser_steps(device: torch.device, repeat: int, folder: Path) -> list[dict[str, Any]]:
    """The paper denoiser per latent size, precision, batch and path, timed alternately with the yardstick kernels."""
    gen = torch.Generator().manual_seed(0)
    net = MaskConditionedDenoiser(diffusion_preset("paper")).to(device).eval()
    paths = _paths(net, device, folder)
    rows = []
    precisions = ["fp32"] + (["bf16"] if device.type == "cuda" else [])
    for precision in precisions:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        yardstick = yardstick_kernels(device, dtype)
        for shape in [(32, 48, 48), (16, 16, 16)]:
            flops = denoiser_flops(net, shape, device)
            for batch in (1, 2, 4, 8):
                z = torch.randn(batch, 8, *shape, generator=gen).to(device)
                c = torch.randn(batch, 9, *shape, generator=gen).to(device)
                t = torch.full((batch,), 500, device=device, dtype=torch.long)

                def call(model: MaskConditionedDenoiser, z=z, t=t, c=c, bf16=precision == "bf16") -> None:
                    with (
                        torch.inference_mode(),
                        torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16),
                    ):
                        model(z, t, c)

                dens = {f"denoiser_{p}": (functools.partial(call, m), flops * batch) for p, m in paths.items()}
                timed = alternating({**yardstick, **dens}, device, repeat)
                dens_timed = {name: timed.pop(name) for name in dens}
                best_name = max(timed, key=lambda k: timed[k]["gflops"])
                best_cpu = max(v["gflops_cpu"] for v in timed.values())
                for name, den in dens_timed.items():
                    ratio = den["gflops"] / timed[best_name]["gflops"]
                    ratio_cpu = den["gflops_cpu"] / best_cpu
                    rows.append(
                        {
                            "latent": list(shape),
                            "batch": batch,
                            "precision": precision,
                            "path": name.removeprefix("denoiser_"),
                            "median_s": den["median_s"],
                            "per_case_s": den["median_s"] / batch,
                            "cpu_min_s": den["cpu_min_s"],
                            "gflop_per_case": flops / 1e9,
                            "achieved_gflops": den["gflops"],
                            "yardstick": {k: v["gflops"] for k, v in timed.items()},
                            "yardstick_best": best_name,
                            "ratio_to_yardstick": ratio,
                            "ratio_to_yardstick_cpu": ratio_cpu,
                            **(
                                {
                                    "yardstick_wrong": f"the denoiser ran {max(ratio, ratio_cpu):.2f}× the yardstick's "
                                    "GFLOP/s: the yardstick is not this machine's best, so this ratio is no measure of "
                                    "efficiency"
                                }
                                if max(ratio, ratio_cpu) > 1
                                else {}
                            ),
                        }
                    )
                    print(rows[-1], flush=True)
    return rows


def batch_invariance(device: torch.device, folder: Path) -> dict[str, Any]:
    """A case alone vs inside a batch of 4, on the sampler's path and on the default path (see the module doc)."""
    gen = torch.Generator().manual_seed(1)
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "latent": [16, 16, 16], "batch": 4}
    for preset, shape in [("paper", (16, 16, 16)), ("small", (16, 16, 16))]:
        plain = MaskConditionedDenoiser(diffusion_preset(preset)).to(device).eval()
        _randomise_zero_init(plain, gen)
        net = sampler_denoiser(plain, device, folder)
        z = torch.randn(4, 8, *shape, generator=gen).to(device)
        c = torch.randn(4, 9, *shape, generator=gen).to(device)
        t = torch.tensor([999, 500, 100, 1], device=device)
        with torch.inference_mode():
            full = net(z, t, c)
            single = torch.cat([net(z[i : i + 1], t[i : i + 1], c[i : i + 1]) for i in range(4)])
            plain_full = plain(z, t, c)
            default = torch.cat([plain(z[i : i + 1], t[i : i + 1], c[i : i + 1]) for i in range(4)])
        out[f"{preset}_max_abs_diff"] = float((full - single).abs().max())
        out[f"{preset}_default_max_abs_diff"] = float((plain_full - default).abs().max())
        out[f"{preset}_sampler_check"] = denoiser_batch_invariant(net, shape)
        out[f"{preset}_output_abs_mean"] = float(full.abs().mean())
        out[f"{preset}_path_max_rel_diff"] = float((single - default).abs().max() / default.abs().max())
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
    device: torch.device,
    preset: str,
    fov: tuple[int, int, int],
    repeat: int,
    batches: tuple[int, ...],
    folder: Path,
) -> dict[str, Any]:
    from synbt_factory.models.vqvae import PatchVolumeVQVAE, vqvae_preset

    gen = torch.Generator().manual_seed(2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vq = PatchVolumeVQVAE(vqvae_preset(preset)).to(device).eval()
        den = MaskConditionedDenoiser(diffusion_preset(preset)).to(device).eval()
    _randomise_zero_init(den, gen)
    den = sampler_denoiser(den, device, folder)
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
                "per_case_denoiser": sampler.per_case_denoiser,
                "per_case_autoencoder": sampler.per_case_autoencoder,
            }
            print(key, result[key], flush=True)
    for batch in batches:
        result[f"window_speedup_batch{batch}"] = (
            result[f"whole_batch{batch}"]["seconds_per_case"] / result[f"window_batch{batch}"]["seconds_per_case"]
        )
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
            (z_whole[(slice(None), slice(None), *lat)] == z_win).all(1)[0][cells].float().mean()
        ),
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
    parser.add_argument("--skip-per-case", action="store_true", help="skip the per-case sampler timing")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--case-batches", default=None, help="batch sizes of the per-case timing (cpu: 1, cuda: 1,4)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    batches = tuple(int(v) for v in (args.case_batches or ("1,4" if device.type == "cuda" else "1")).split(","))
    fov = tuple(int(v) for v in args.fov.split(","))
    figures: dict[str, Any] = {
        "device": str(device),
        "load_average_at_start": list(os.getloadavg()),
        "denoiser_paper_channels": list(diffusion_preset("paper").channels),
    }
    with tempfile.TemporaryDirectory(prefix="diffusion_bench_") as tmp:  # checkpoints for load_diffusion
        folder = Path(tmp)
        figures["batch_invariance"] = batch_invariance(device, folder)
        print(figures["batch_invariance"], flush=True)
        if not args.skip_steps:
            from synbt_factory.generate.jobs import GenerateConfig

            figures["sampler_batch"] = GenerateConfig(n=1).batch_size
            batch = sampler_denoiser_batch(device, figures["batch_invariance"]["paper_sampler_check"])
            figures["sampler_denoiser_batch"] = batch
            figures["sampler_denoiser_batch_guidance"] = 2 * batch
            figures["denoiser_step"] = denoiser_steps(device, args.repeat, folder)
            figures["yardstick_wrong_rows"] = sum("yardstick_wrong" in row for row in figures["denoiser_step"])
            for key, at in (("sampler_ratio", batch), ("sampler_ratio_guidance", 2 * batch)):
                figures[key] = {
                    f"{'x'.join(map(str, r['latent']))}_{r['precision']}": {
                        k: r[k] for k in ("batch", "ratio_to_yardstick", "ratio_to_yardstick_cpu")
                    }
                    for r in figures["denoiser_step"]
                    if r["path"] == "sampler" and r["batch"] == at
                }
        if not args.skip_per_case:
            figures["per_case"] = per_case(device, args.preset, fov, args.repeat, batches, folder)  # type: ignore[arg-type]
    figures["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        figures["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    save_result("diffusion", figures)


if __name__ == "__main__":
    main()
