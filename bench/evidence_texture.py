"""Same placements, different textures: one montage of the evidence experiment's synthetic stores.

Every synthetic store of one real-data size shares its backgrounds and placed masks (same generation seed), so
case ``SYN_00000k`` of each store differs in the tumor's texture only. Rows: each listed case in each arm's store,
one shared grey window, so brightness compares by eye (the real tumor of the background in red, the placed one
in cyan).

    python -m bench.evidence_texture runs/evidence --size 8 --arms copypaste synbt synbt_guided \\
        --cases 0 3 7 --out bench/results/evidence/texture_before_after.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from synbt_factory.experiments.evidence_data import EvidencePaths
from synbt_factory.figures import CaseView, case_montage
from synbt_factory.store import CaseStore


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the evidence run folder (--out of synbt experiment evidence)")
    parser.add_argument("--size", type=int, default=8, help="real-data size whose stores are drawn")
    parser.add_argument("--arms", nargs="+", default=["copypaste", "synbt", "synbt_guided"])
    parser.add_argument("--cases", nargs="+", type=int, default=[0, 3, 7], help="case indices (same in every store)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    paths = EvidencePaths(args.run)
    stores = {arm: CaseStore.open(paths.synthetic(arm, args.size)) for arm in args.arms}
    views = []
    for index in args.cases:
        case_id = f"SYN_{index:06d}"
        for arm, store in stores.items():
            arrays, _ = store.read_case(case_id, ("image", "mask", "synthetic_mask"))
            real_part = (arrays["mask"] > 0) & (arrays["synthetic_mask"] == 0)
            views.append(
                CaseView(
                    f"{arm} {case_id}",
                    arrays["image"].astype(np.float32),
                    mask=real_part.astype(np.uint8),
                    second_mask=arrays["synthetic_mask"],
                )
            )
    post = np.concatenate([v.image[1].ravel() for v in views])
    sub = np.concatenate([(v.image[1] - v.image[0]).ravel() for v in views])
    window = (float(np.percentile(post, 99.8)), float(np.percentile(sub, 99.8)))
    case_montage(
        views,
        args.out,
        window=window,
        title=f"same placement, texture by arm ({args.size} real cases; red: background's tumor, cyan: placed)",
    )
    print(args.out)


if __name__ == "__main__":
    main()
