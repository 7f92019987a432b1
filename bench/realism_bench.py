"""Do synthetic tumors enhance like real ones? Mean post/pre ratio inside synthetic masks (SynBT and
SynTumor) next to inside real tumors, over N generated cases each, and a PNG grid (pre, post, subtraction).
Also the ratio inside real tumors after a VQ-VAE encode-decode (SynBT cannot enhance more than its
autoencoder can represent) and inside real tumors re-synthesised by SynBT at their own mask (the diffusion
model alone, without placement).

    python -m bench.realism_bench --prepared P.zarr --bank BANK.zarr --vqvae VQ.pt --diffusion DIFF.pt [--n 20]

Use the checkpoints of a `synbt demo` run (runs/demo/...) or of your own training; the figures are only as good
as the models' training budget, which the JSON records next to them.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import save_result
from synbt_factory.evaluate.realism_figures import by_size, post_over_pre, summary
from synbt_factory.figures import CaseView, case_montage
from synbt_factory.generate import GenerateConfig, run_generate
from synbt_factory.generate.methods import SynTumorMethod
from synbt_factory.generate.synbt_method import SynBTMethod
from synbt_factory.store import CaseStore

RESULTS = Path(__file__).resolve().parent / "results"
#: ``python -m bench`` (run every bench) skips this one: it needs trained checkpoints.
REQUIRES_ARGUMENTS = True


def _real_tumor_ratios(
    prepared: CaseStore, method: SynBTMethod, n: int, device: str, *, with_recon: bool = True
) -> tuple[list[float], list[int], list[float], dict[str, list[float]], list[CaseView]]:
    """post/pre inside every real tumor, and for the first ``n`` also after a VQ-VAE encode-decode (the
    ceiling of SynBT's enhancement) and re-synthesised by SynBT at their own mask (the diffusion model alone,
    no placement), the latter keyed by the case's split (``train``: a tumor the denoiser was trained on;
    ``held_out``: any other split); each case is read once. Also the real tumors' voxel counts and the
    first four cases as preview rows. ``with_recon=False`` skips the encode-decode (its list stays empty).
    """
    import torch

    from synbt_factory.evaluate.vqvae_eval import VQVAEEvalConfig, reconstruct_volume
    from synbt_factory.rng import torch_generator

    sampler, eval_config = method.sampler(), VQVAEEvalConfig()
    real, real_sizes, recon, views = [], [], [], []
    in_place: dict[str, list[float]] = {"train": [], "held_out": []}
    done = 0
    for index, case_id in enumerate(prepared.case_ids()):
        arrays, _ = prepared.read_case(case_id, ("image", "mask"))
        r = post_over_pre(arrays["image"], arrays["mask"])
        if r is None:
            continue
        real.append(r)
        real_sizes.append(int((np.asarray(arrays["mask"]) > 0).sum()))
        if len(views) < 4:
            views.append(CaseView(f"real {case_id}", arrays["image"], arrays["mask"]))
        if done >= n:
            continue
        done += 1
        split = "train" if prepared.case_attrs(case_id).get("split") in ("train", None) else "held_out"
        image = np.asarray(arrays["image"][:2], dtype=np.float32)
        mask = np.asarray(arrays["mask"]) > 0
        if with_recon:
            decoded, _ = reconstruct_volume(sampler.autoencoder, image, config=eval_config, device=torch.device(device))
            _append_ratio(recon, decoded, mask)
        with torch.inference_mode():
            out = sampler.sample(
                torch.from_numpy(image)[None],
                torch.from_numpy(mask.astype(np.uint8))[None],
                [torch_generator(0, index, "ddim")],
            )
        _append_ratio(in_place[split], out[0].float().cpu().numpy(), mask)
    return real, real_sizes, recon, in_place, views


def _append_ratio(values: list[float], image: np.ndarray, mask: np.ndarray) -> None:
    ratio = post_over_pre(image, mask)
    if ratio is not None:
        values.append(ratio)


def _placed_ratios(
    name: str, method: Any, args: argparse.Namespace, out: Path, views: list[CaseView] | None = None, n_views: int = 0
) -> tuple[list[float], list[int]]:
    """Generate ``args.n`` cases (seed 0) with ``method`` into ``out``; post/pre and voxels of each synthetic mask.
    The first ``n_views`` cases are appended to ``views`` as preview rows."""
    run_generate(
        GenerateConfig(n=args.n, seed=0, method=name), out=out, prepared=args.prepared, bank=args.bank, method=method
    )
    store = CaseStore.open(out)
    values, sizes = [], []
    for i, case_id in enumerate(store.case_ids()):
        arrays, _ = store.read_case(case_id, ("image", "mask", "synthetic_mask"))
        r = post_over_pre(arrays["image"], arrays["synthetic_mask"])
        if r is not None:
            values.append(r)
            sizes.append(int((np.asarray(arrays["synthetic_mask"]) > 0).sum()))
        if views is not None and i < n_views:
            views.append(CaseView(f"{name} {case_id}", arrays["image"], None, arrays["synthetic_mask"]))
    return values, sizes


def _guidance_sweep(args: argparse.Namespace, prepared: CaseStore, scales: list[float], work: Path) -> dict[str, Any]:
    """Per mask guidance scale: placed SynBT tumors (the same placements as the main run) and real tumors
    re-synthesised at their own mask, by split."""
    sweep = {}
    for scale in scales:
        method = SynBTMethod.from_checkpoints(
            args.vqvae, args.diffusion, device=args.device, steps=args.steps, eta=args.eta, guidance=scale
        )
        _, _, _, in_place, _ = _real_tumor_ratios(prepared, method, args.n, args.device, with_recon=False)
        placed, _ = _placed_ratios("synbt", method, args, work / f"sweep_{scale}.zarr")
        sweep[str(scale)] = {
            "placed": summary(placed),
            **{f"in_place_{split}": summary(v) for split, v in in_place.items() if v},
        }
        print("guidance", scale, {k: round(v["mean"], 3) for k, v in sweep[str(scale)].items()}, flush=True)
    return sweep


def _checkpoint_steps(path: Path) -> int | None:
    from synbt_factory.checkpoint import load_checkpoint

    return load_checkpoint(path).get("step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True)
    parser.add_argument("--bank", required=True)
    parser.add_argument("--vqvae", type=Path, required=True)
    parser.add_argument("--diffusion", type=Path, required=True)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps (the paper's 10)")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM eta")
    parser.add_argument("--guidance", type=float, default=1.0, help="mask guidance scale (1 = the paper's sampler)")
    parser.add_argument(
        "--sweep-guidance",
        default="",
        help="also these guidance scales, e.g. 0,1,1.5,2: placed "
        "tumors and in-place re-synthesis per scale (about a minute per scale on the phantom)",
    )
    parser.add_argument("--name", default="realism", help="results name: bench/results/NAME.json and NAME.png")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="synbt-realism-"))
    try:
        prepared = CaseStore.open(args.prepared)
        synbt = SynBTMethod.from_checkpoints(
            args.vqvae, args.diffusion, device=args.device, steps=args.steps, eta=args.eta, guidance=args.guidance
        )
        real, real_sizes, recon, in_place, real_views = _real_tumor_ratios(prepared, synbt, args.n, args.device)
        ratios, sizes_table, views = {}, {"real": by_size(real, real_sizes)}, list(real_views)
        for name, method in (("synbt", synbt), ("syntumor", SynTumorMethod.from_prepared(args.prepared))):
            values, sizes = _placed_ratios(name, method, args, work / f"{name}.zarr", views, 4)
            ratios[name] = summary(values)
            sizes_table[name] = by_size(values, sizes)
        png = case_montage(views, RESULTS / f"{args.name}.png", title="real tumors (red) vs synthetic (cyan)")
        figures = {
            "post_over_pre_inside_real_tumors": summary(real),
            "post_over_pre_inside_real_tumors_after_vqvae": summary(recon),
            "post_over_pre_inside_real_tumors_resynthesised_in_place": summary(sum(in_place.values(), [])),
            "post_over_pre_inside_real_tumors_resynthesised_in_place_by_split": {
                split: summary(values) for split, values in in_place.items() if values
            },
            "post_over_pre_inside_synthetic_masks": ratios,
            "post_over_pre_by_mask_voxels": sizes_table,
            "samples_per_method": args.n,
            "ddim": {"steps": args.steps, "eta": args.eta, "guidance": args.guidance},
            "checkpoints": {"vqvae": str(args.vqvae), "diffusion": str(args.diffusion)},
            "training_steps": {"vqvae": _checkpoint_steps(args.vqvae), "diffusion": _checkpoint_steps(args.diffusion)},
            "png": str(png.relative_to(RESULTS.parent.parent)),
        }
        if args.sweep_guidance:
            scales = [float(v) for v in args.sweep_guidance.split(",")]
            figures["guidance_sweep"] = _guidance_sweep(args, prepared, scales, work)
        save_result(
            args.name,
            figures,
            command=(
                f"python -m bench.realism_bench --prepared P --bank B --vqvae VQ --diffusion D --n {args.n} "
                f"--steps {args.steps} --eta {args.eta} --guidance {args.guidance} --name {args.name}"
                + (f" --sweep-guidance {args.sweep_guidance}" if args.sweep_guidance else "")
            ),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
