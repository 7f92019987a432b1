"""Head to head: one synthetic arm against another, paired by seed and case (the evidence run's own statistics).

``synbt experiment evidence`` compares every arm with real-only. Whether SynBT beats the cheaper arms, and
whether a generator change helped, is the same paired comparison with another baseline:
:func:`~synbt_factory.evaluate.evidence_stats.paired_vs_baseline` (two-level bootstrap CI over seeds and cases,
Wilcoxon over seed-averaged cases).

    python -m bench.evidence_pairs runs/evidence --arm synbt_guided --vs synbt syntumor copypaste \\
        --out bench/results/evidence/pairs
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from synbt_factory.evaluate.evidence_stats import paired_vs_baseline


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the evidence run folder")
    parser.add_argument("--arm", required=True, help="the arm compared")
    parser.add_argument("--vs", nargs="+", required=True, help="the arms it is compared with (each a baseline)")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="bootstrap generator seed")
    parser.add_argument("--out", type=Path, required=True, help="prefix: writes <out>.json and <out>.md")
    args = parser.parse_args(argv)

    rows = [
        dict(r, size=int(r["size"]), seed=int(r["seed"]), dice=float(r["dice"]))
        for r in csv.DictReader((args.run / "evidence_cases.csv").open())
    ]
    rng = np.random.default_rng(args.seed)
    result = []
    lines = [
        f"# {args.arm} against other arms (ΔDice = {args.arm} − other; 95 % CI over seeds and cases; "
        "Wilcoxon over seed-averaged cases)",
        "",
        "| test set | real cases | vs | ΔDice | 95 % CI | per-seed Δ | better / worse cases | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for test_set in ("own", "external"):
        for size in sorted({r["size"] for r in rows}):
            for other in args.vs:
                paired = paired_vs_baseline(
                    rows,
                    arm=args.arm,
                    baseline=other,
                    size=size,
                    test_set=test_set,
                    metric="dice",
                    rng=rng,
                    n_boot=args.n_boot,
                ).as_dict()
                result.append({"test_set": test_set, "size": size, "vs": other, **paired})
                lines.append(_row(test_set, size, other, paired))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _row(test_set: str, size: int, other: str, paired: dict) -> str:
    seeds = ", ".join(f"{v:+.3f}" for v in paired["seed_means"])
    p = paired["p_value"]
    return (
        f"| {test_set} | {size} | {other} | {paired['mean']:+.3f} | {paired['ci_low']:+.3f} … "
        f"{paired['ci_high']:+.3f} | {seeds} | {paired['better']} / {paired['worse']} | "
        f"{'–' if p is None else f'{p:.3g}'} |"
    )


if __name__ == "__main__":
    main()
