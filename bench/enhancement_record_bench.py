"""What the prepared store's enhancement records save ``synbt generate --method syntumor`` per call.

SynTumor draws each tumor's intensities from the enhancement measured on the real tumors. Without the
``tumor_enhancement`` record that ``data prepare`` writes, every ``generate`` reads every prepared case's image to
measure it again: a fixed cost that grows with the number of backgrounds.

Method: a phantom is prepared once (records written), and a copy of the store has the records removed. Then
``synbt generate --method syntumor --n 1`` runs as a fresh child process on each, alternately (A B A B ...), the
same bank and seed, and the CPU (user + system) and wall seconds of each child are measured. The ratios are taken
pair by pair, so a drift of the shared machine's speed cancels. The two stores' generated cases are checked to be
identical. ``EnhancementStats.from_store`` is also timed in this process both ways, per case.

    python -m bench.enhancement_record_bench --backgrounds 24 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import run_measured, save_result


def _strip_records(store: Path) -> None:
    for meta in store.glob("cases/*/zarr.json"):
        data = json.loads(meta.read_text())
        data.get("attributes", {}).pop("tumor_enhancement", None)
        meta.write_text(json.dumps(data))


def _generate(prepared: Path, bank: Path, out: Path) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "cli.main", "generate", "--method", "syntumor", "--n", "1", "--out", str(out)]
    run = run_measured([*cmd, "--data", str(prepared), "--bank", str(bank)])
    return {"cpu_s": run["cpu_s"], "wall_s": run["wall_s"]}


def _case_bytes(store: Path) -> list[bytes]:
    import numpy as np

    from synbt_factory.store import CaseStore

    s = CaseStore.open(store)
    return [np.ascontiguousarray(a).tobytes() for c in s.case_ids() for a in s.read_case(c)[0].values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backgrounds", type=int, default=24, help="phantom cases (tiny, 64×64×48 mm)")
    parser.add_argument("--rounds", type=int, default=6, help="A/B pairs")
    args = parser.parse_args()

    from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
    from synbt_factory.phantom import write_phantom
    from synbt_factory.synthesis.bank import build_bank
    from synbt_factory.synthesis.syntumor import EnhancementStats

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_phantom(tmp / "phantom", n=args.backgrounds, seed=0, size="tiny", healthy_fraction=0.1)
        with_records = tmp / "with_records.zarr"
        prepare_dataset(tmp / "phantom", with_records, config=PrepareConfig(fov_mm=(64, 64, 48)), workers=2)
        build_bank(with_records, tmp / "bank.zarr", splits=("train", "test"))
        without = tmp / "without_records.zarr"
        shutil.copytree(with_records, without)
        _strip_records(without)

        in_process = {}
        for label, stored in (("records", True), ("arrays", False)):
            t0 = time.process_time()
            EnhancementStats.from_store(with_records, use_stored=stored)
            in_process[label] = (time.process_time() - t0) / args.backgrounds

        _generate(with_records, tmp / "bank.zarr", tmp / "warm.zarr")  # warm the file cache
        pairs = []
        for _ in range(args.rounds):
            a = _generate(with_records, tmp / "bank.zarr", tmp / "a.zarr")
            b = _generate(without, tmp / "bank.zarr", tmp / "b.zarr")
            pairs.append({"records": a, "arrays": b, "cpu_ratio": a["cpu_s"] / b["cpu_s"]})
        identical = _case_bytes(tmp / "a.zarr") == _case_bytes(tmp / "b.zarr")

    ratios = [p["cpu_ratio"] for p in pairs]
    figures = {
        "backgrounds": args.backgrounds,
        "generate_n1_cpu_s_median": {
            "with_records": statistics.median(p["records"]["cpu_s"] for p in pairs),
            "measured_from_arrays": statistics.median(p["arrays"]["cpu_s"] for p in pairs),
        },
        "generate_n1_wall_s_median": {
            "with_records": statistics.median(p["records"]["wall_s"] for p in pairs),
            "measured_from_arrays": statistics.median(p["arrays"]["wall_s"] for p in pairs),
        },
        "cpu_ratio_records_over_arrays": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        "from_store_cpu_s_per_case": in_process,
        "generated_cases_identical": identical,
        "pairs": pairs,
    }
    save_result("enhancement_record", figures)


if __name__ == "__main__":
    main()
