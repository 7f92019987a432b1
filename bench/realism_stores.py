"""The realism report of several synthetic stores, side by side, with the gate and target verdicts.

    python -m bench.realism_stores NAME=SYNTHETIC:PREPARED:VQVAE [NAME=...] [--segmenter CKPT] [--max-cases 48]

Each store is reported against the prepared store its tumors were placed in (``synbt store report``'s library
call), with the VQ-VAE that made it as the feature space of the Fréchet distance. Writes
``bench/results/realism_stores.json`` and each store's montage as ``bench/results/realism_stores/<NAME>.png``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench.common import RESULTS_DIR, save_result
from synbt_factory.evaluate.realism import RealismConfig, realism_report
from synbt_factory.evaluate.realism_outputs import headline_text, write_report
from synbt_factory.generate.quality_gate import TARGETS, QualityGate, check_gate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stores", nargs="+", help="NAME=SYNTHETIC:PREPARED:VQVAE")
    parser.add_argument("--max-cases", type=int, default=48)
    args = parser.parse_args()
    figures: dict[str, dict] = {}
    montages = RESULTS_DIR / "realism_stores"
    montages.mkdir(parents=True, exist_ok=True)
    for spec in args.stores:
        name, _, paths = spec.partition("=")
        synthetic, prepared, vqvae = paths.split(":")
        report = realism_report(synthetic, prepared, config=RealismConfig(max_cases=args.max_cases), vqvae=Path(vqvae))
        gate, target = check_gate(report.headline, QualityGate()), check_gate(report.headline, TARGETS)
        with tempfile.TemporaryDirectory() as tmp:
            written = write_report(report, Path(tmp))
            shutil.copyfile(written["montage"], montages / f"{name}.png")
        figures[name] = {
            "store": synthetic,
            "prepared": prepared,
            "headline": headline_text(report.headline),
            "gate": gate.to_dict(),
            "targets": target.to_dict(),
            "figures": {k: v for k, v in report.headline.items() if isinstance(v, (int, float))},
            "enhancement_by_size": report.figures["enhancement"].get("by_mask_voxels"),
        }
    save_result("realism_stores", figures)


if __name__ == "__main__":
    main()
