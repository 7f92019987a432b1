#!/usr/bin/env bash
# Trains the generator weights that `synbt demo` ships with (synbt_factory/weights/phantom_tiny/), with the
# README's CPU recipe, on a phantom drawn with seed 1 (the demo draws seed 0, so no demo case is seen in training).
# About 25 min on 2 CPU cores (one thread per training: the tiny networks run faster on one thread than on two
# when anything else uses the machine). Then pin the printed sha256 values in synbt_factory/pretrained.py.
#
#   scripts/train_demo_weights.sh [WORK_DIR]        (default runs/demo_weights; resumable: rerun to continue)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
work=${1:-runs/demo_weights}
dest=synbt_factory/weights/phantom_tiny
mkdir -p "$work"

[ -d "$work/phantom" ] || synbt data phantom --out "$work/phantom" --n 60 --size tiny --healthy-fraction 0 --seed 1
synbt data prepare "$work/phantom" --out "$work/phantom.zarr" --fov 64 64 48
synbt train vqvae --stage patch --data "$work/phantom.zarr" --out "$work/vq/patch" --preset cpu --seed 0 --resume
synbt train vqvae --stage volume --data "$work/phantom.zarr" --out "$work/vq/volume" --preset cpu --seed 0 --resume \
                  --init "$work/vq/patch/final.pt"
synbt train diffusion --vqvae "$work/vq/volume/final.pt" --data "$work/phantom.zarr" --out "$work/diffusion" \
                      --preset cpu --seed 0 --resume

python - "$work" "$dest" <<'PY'
import json, sys
from pathlib import Path

from synbt_factory.pretrained import pack_checkpoint

work, dest = Path(sys.argv[1]), Path(sys.argv[2])
dest.mkdir(parents=True, exist_ok=True)
sha = {
    "vqvae_patch": pack_checkpoint(work / "vq/patch/final.pt", dest / "vqvae_patch.pt"),
    "vqvae_volume": pack_checkpoint(work / "vq/volume/final.pt", dest / "vqvae_volume.pt"),
}
# the denoiser names the autoencoder it was trained on: the packed one
sha["diffusion"] = pack_checkpoint(work / "diffusion/final.pt", dest / "diffusion.pt",
                                   replace={"vqvae_sha256": sha["vqvae_volume"]})
manifest = {
    "name": "phantom_tiny",
    "made_by": "scripts/train_demo_weights.sh",
    "phantom": {"n": 60, "size": "tiny", "healthy_fraction": 0.0, "seed": 1, "fov_mm": [64, 64, 48]},
    "recipe": {"vqvae": "preset cpu (patch 30k steps, volume 500 steps)", "diffusion": "preset cpu (2500 steps)",
               "seed": 0},
    "files": {name: {"file": f"{name}.pt", "sha256": value} for name, value in sha.items()},
}
(dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
for name, value in sha.items():
    print(f"{name}: {value}")
PY
