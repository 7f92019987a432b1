"""Segmenter speed and size: training step time, sliding-window inference per case, state size.

Run from the repository root::

    python -m bench.segment_bench [--device cpu|cuda] [--preset tiny|small|paper] [--crop 64 64 64]
                                  [--volume 96 96 64] [--models unet dynunet swinunetr]

For each model: one training step (forward, Dice+CE loss, backward, Adam) on a batch of
``--batch`` random crops; sliding-window inference of one ``--volume`` case with window = crop,
overlap 0.25, ``--sw-batch`` windows per pass; parameter count, state-dict and checkpoint sizes.
Writes ``bench/results/segment.json`` (or ``segment_<preset>_<device>.json`` off the defaults).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import peak_rss_mb, save_result, time_call


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_model(
    name: str,
    *,
    preset: str,
    crop: tuple[int, int, int],
    volume: tuple[int, int, int],
    batch: int,
    sw_batch: int,
    device: torch.device,
    repeat: int,
) -> dict:
    from monai.losses import DiceCELoss

    from synbt_factory.checkpoint import save_checkpoint
    from synbt_factory.models.segmenters import (
        SegmenterConfig,
        build_segmenter,
        check_spatial_size,
        count_parameters,
        predict_volume,
    )

    cfg = SegmenterConfig(name=name, preset=preset, patch_size=crop)
    check_spatial_size(cfg, crop, what="crop")
    torch.manual_seed(0)
    model = build_segmenter(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 2, *crop), generator=gen).to(device)
    y = (torch.rand((batch, 1, *crop), generator=gen) > 0.97).long().to(device)
    amp = device.type == "cuda"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        optimizer.step()
        _sync(device)

    model.train()
    train = time_call(step, repeat=repeat, warmup=1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step()
        train_gpu_mb = torch.cuda.max_memory_allocated() / 2**20
    model.eval()
    image = np.random.default_rng(0).random((2, *volume), dtype=np.float32)

    def infer() -> None:
        predict_volume(model, image, crop, overlap=0.25, sw_batch_size=sw_batch, device=device, amp=amp)
        _sync(device)

    infer_t = time_call(infer, repeat=max(1, repeat - 1), warmup=1)
    # unique storages only: DynUNet registers some modules under two names (aliased tensors)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in model.state_dict().values()}
    state_bytes = sum(storages.values())
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "seg.pt", {"model": model.state_dict()}, kind="segmenter", config={})
        ckpt_mb = path.stat().st_size / 2**20
    out = {
        "train_step_s": round(train["median_s"], 4),
        "train_step_min_s": round(train["min_s"], 4),
        "train_voxels_per_s": round(batch * int(np.prod(crop)) / train["median_s"]),
        "inference_per_case_s": round(infer_t["median_s"], 4),
        "parameters": count_parameters(model),
        "state_dict_mb": round(state_bytes / 2**20, 2),
        "checkpoint_mb": round(ckpt_mb, 2),
    }
    if device.type == "cuda":
        out["train_peak_gpu_mb"] = round(train_gpu_mb, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--preset", default="small", choices=("tiny", "small", "paper"))
    parser.add_argument("--crop", type=int, nargs=3, default=(64, 64, 64), help="training crop = inference window")
    parser.add_argument("--volume", type=int, nargs=3, default=(96, 96, 64), help="inference case size")
    parser.add_argument("--models", nargs="+", default=("unet", "dynunet", "swinunetr"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sw-batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from synbt_factory.device import resolve_device

    device = resolve_device(args.device)
    figures: dict = {
        "preset": args.preset,
        "crop": list(args.crop),
        "volume": list(args.volume),
        "batch": args.batch,
        "sw_batch_size": args.sw_batch,
        "device": str(device),
        "models": {},
    }
    for name in args.models:
        t0 = time.perf_counter()
        figures["models"][name] = bench_model(
            name,
            preset=args.preset,
            crop=tuple(args.crop),
            volume=tuple(args.volume),
            batch=args.batch,
            sw_batch=args.sw_batch,
            device=device,
            repeat=args.repeat,
        )
        figures["models"][name]["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
    figures["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)  # the machine is shared: timings are noisy
    default = args.preset == "small" and device.type == "cpu"
    save_result("segment" if default else f"segment_{args.preset}_{device.type}", figures)


if __name__ == "__main__":
    main()
