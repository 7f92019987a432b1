"""Store-damage corpus: does ``synbt store verify`` report every kind of damage, crash, or pass it?

    python -m bench.store_damage_corpus [--before-code /tmp/orig_c] [--keep DIR]

Builds one small store per kind of damage (a clean store of three cases, then one damage), runs the
real CLI ``python -m cli.main store verify STORE`` in a subprocess on each, and classifies the outcome:

- ``reported``: exit 1, no traceback, and the output names the damaged case (and the damage's keyword);
- ``reported_unnamed``: exit 1 without naming it;
- ``refused``: another non-zero exit with a one-line error and no traceback;
- ``crashed``: a traceback reached the user (or the run hung);
- ``passed``: exit 0, the damage went unnoticed.

With ``--before-code DIR`` (a checkout of an older commit, e.g. ``git worktree add /tmp/orig_c HEAD``)
each store is also verified by that code (``PYTHONPATH=DIR``), so before and after come from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import save_result

REPO = Path(__file__).resolve().parent.parent
CASES = ("CASE_000", "CASE_001", "CASE_002")
OUTCOMES = ("reported", "reported_unnamed", "refused", "crashed", "passed")


# ----------------------------------------------------------------------------- building
def _write_store(
    path: Path,
    *,
    kind: str = "prepared",
    card: dict[str, Any] | None = None,
    seed: int = 0,
    ids: tuple[str, ...] = CASES,
    extra: Callable[[str], dict[str, Any]] | None = None,
) -> Path:
    from synbt_factory.store import CaseStore, StoreLayout

    rng = np.random.default_rng(seed)
    store = CaseStore.create(path, kind=kind, card=card or {}, layout=StoreLayout(chunk=8))  # type: ignore[arg-type]
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    for case_id in ids:
        image = (rng.random((2, 16, 16, 12)) + 0.5).astype(np.float16)
        mask = (image[1] > 1.3).astype(np.uint8)
        attrs = {"affine": affine.tolist(), "spacing": [0.8, 0.8, 2.0], "split": "train"}
        attrs.update(extra(case_id) if extra else {})
        store.write_case(case_id, {"image": image, "mask": mask}, attrs)
    return path


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _case(store: Path, case_id: str = "CASE_001") -> Path:
    return store / "cases" / case_id


def _chunk(store: Path, case_id: str = "CASE_001", name: str = "image") -> Path:
    chunks = sorted(p for p in (_case(store, case_id) / name / "c").rglob("*") if p.is_file())
    return chunks[len(chunks) // 2]


def _rewrite_array(store: Path, case_id: str, name: str, data: np.ndarray, *, record: bool, **create: Any) -> None:
    """Replace an array with ``data`` written with ``create`` options; record its sha256 when ``record``."""
    import zarr

    from synbt_factory.store import array_sha256

    group = zarr.open_group(str(_case(store, case_id)), mode="r+", zarr_format=3)
    if name in group:
        del group[name]
    create.setdefault("chunks", tuple(min(8, s) for s in data.shape))
    arr = group.create_array(name, shape=data.shape, dtype=data.dtype, fill_value=0, **create)
    arr[...] = data
    if record:
        sha = dict(group.attrs["sha256"])
        sha[name] = array_sha256(data)
        group.attrs.update({"sha256": sha})


def _read(store: Path, case_id: str, name: str) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_array(str(_case(store, case_id) / name), mode="r")[...])


def _damages() -> dict[str, tuple[Callable[[Path], Path], list[str]]]:
    """kind → (make(workdir) → store to verify, tokens the report must name)."""
    from zarr.codecs import Crc32cCodec, GzipCodec, ZstdCodec

    def on_base(damage: Callable[[Path], None]) -> Callable[[Path], Path]:
        def make(work: Path) -> Path:
            store = _write_store(work / "s.zarr")
            damage(store)
            return store

        return make

    def copy_as(name: str) -> Callable[[Path], None]:
        return lambda s: shutil.copytree(_case(s, "CASE_002"), _case(s, name))

    def flip(s: Path) -> None:
        chunk = _chunk(s)
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0xFF
        chunk.write_bytes(bytes(data))

    def truncate(s: Path) -> None:
        chunk = _chunk(s)
        chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])

    def nan_image(s: Path) -> None:
        image = _read(s, "CASE_001", "image")
        image[1, 3, 3, 3] = np.nan
        _rewrite_array(s, "CASE_001", "image", image, record=True, compressors=ZstdCodec())

    def inf_phases(s: Path) -> None:
        phases = _read(s, "CASE_001", "image")[1:].copy()
        phases[0, 2, 2, 2] = np.inf
        _rewrite_array(s, "CASE_001", "phases", phases, record=True, compressors=ZstdCodec())

    def symlink(s: Path) -> None:
        outside = s.parent / "elsewhere"
        shutil.move(str(_case(s)), outside)
        _case(s).symlink_to(outside, target_is_directory=True)

    def source_changed(work: Path) -> Path:
        prepared = _write_store(work / "p.zarr")
        from synbt_factory.store import CaseStore

        src = CaseStore.open(prepared)
        shas = {c: src.case_attrs(c)["sha256"]["image"] for c in CASES}
        card = {"synthetic": True, "run_identity": {"prepared": str(prepared)}}
        synthetic = _write_store(
            work / "syn.zarr",
            kind="synthetic",
            card=card,
            seed=1,
            ids=("SYN_000000", "SYN_000001"),
            extra=lambda c: {"source_case": CASES[int(c[-1])], "source_sha256": shas[CASES[int(c[-1])]]},
        )
        # the background of SYN_000001 is prepared again, with other data
        _write_store(work / "p2.zarr", seed=7)
        shutil.rmtree(_case(prepared))
        shutil.copytree(_case(work / "p2.zarr"), _case(prepared))
        return synthetic

    def several(s: Path) -> None:
        _chunk(s, "CASE_000").unlink()
        (_case(s, "CASE_001") / "zarr.json").write_text("{not json")
        _edit_json(
            _case(s, "CASE_002") / "mask" / "zarr.json",
            lambda d: d["codecs"].__setitem__(1, {"name": "lz77", "configuration": {}}),
        )
        copy_as("-rf")(s)

    kinds: dict[str, tuple[Callable[[Path], Path], list[str]]] = {
        "deleted_chunk": (on_base(lambda s: _chunk(s).unlink()), ["CASE_001", "image"]),
        "truncated_chunk": (on_base(truncate), ["CASE_001", "image"]),
        "flipped_byte_in_chunk": (on_base(flip), ["CASE_001", "image"]),
        "invalid_json_case_metadata": (
            on_base(lambda s: (_case(s) / "zarr.json").write_text("{not json")),
            ["CASE_001", "JSON"],
        ),
        "deleted_case_metadata": (on_base(lambda s: (_case(s) / "zarr.json").unlink()), ["CASE_001"]),
        "invalid_json_array_metadata": (
            on_base(lambda s: (_case(s) / "mask" / "zarr.json").write_text("[1,")),
            ["CASE_001", "mask"],
        ),
        "invalid_json_root": (on_base(lambda s: (s / "zarr.json").write_text('{"zarr_format": 3,')), ["JSON"]),
        "invalid_json_cases_group": (on_base(lambda s: (s / "cases" / "zarr.json").write_text("nope")), ["cases"]),
        "unknown_codec": (
            on_base(
                lambda s: _edit_json(
                    _case(s) / "image" / "zarr.json",
                    lambda d: d["codecs"].__setitem__(1, {"name": "lz77", "configuration": {}}),
                )
            ),
            ["CASE_001", "lz77"],
        ),
        "gzip_codec": (
            on_base(
                lambda s: _rewrite_array(
                    s, "CASE_001", "mask", _read(s, "CASE_001", "mask"), record=False, compressors=GzipCodec()
                )
            ),
            ["CASE_001", "gzip"],
        ),
        "crc32c_codec": (
            on_base(
                lambda s: _rewrite_array(
                    s,
                    "CASE_001",
                    "mask",
                    _read(s, "CASE_001", "mask"),
                    record=False,
                    compressors=[ZstdCodec(), Crc32cCodec()],
                )
            ),
            ["CASE_001", "crc32c"],
        ),
        "sharding_codec": (
            on_base(
                lambda s: _rewrite_array(
                    s,
                    "CASE_001",
                    "mask",
                    _read(s, "CASE_001", "mask"),
                    record=False,
                    chunks=(4, 4, 4),
                    shards=(8, 8, 4),
                    compressors=ZstdCodec(),
                )
            ),
            ["CASE_001", "sharding"],
        ),
        "unsafe_name_dotdot": (on_base(copy_as("..escape")), ["..escape"]),
        "unsafe_name_space": (on_base(copy_as("A B")), ["A B"]),
        "unsafe_name_dash": (on_base(copy_as("-rf")), ["-rf"]),
        "mask_shape_mismatch": (
            on_base(
                lambda s: _rewrite_array(
                    s, "CASE_001", "mask", np.ones((16, 16, 10), np.uint8), record=True, compressors=ZstdCodec()
                )
            ),
            ["CASE_001", "mask"],
        ),
        "image_not_two_channels": (
            on_base(
                lambda s: _rewrite_array(
                    s, "CASE_001", "image", np.ones((3, 16, 16, 12), np.float16), record=True, compressors=ZstdCodec()
                )
            ),
            ["CASE_001", "image"],
        ),
        "huge_declared_shape": (
            on_base(
                lambda s: _edit_json(
                    _case(s) / "image" / "zarr.json", lambda d: d.__setitem__("shape", [2, 100000, 100000, 100000])
                )
            ),
            ["CASE_001", "image"],
        ),
        "missing_sha256_attribute": (
            on_base(lambda s: _edit_json(_case(s) / "zarr.json", lambda d: d["attributes"].pop("sha256"))),
            ["CASE_001", "sha256"],
        ),
        "affine_3x3": (
            on_base(
                lambda s: _edit_json(
                    _case(s) / "zarr.json", lambda d: d["attributes"].__setitem__("affine", np.eye(3).tolist())
                )
            ),
            ["CASE_001", "affine"],
        ),
        "affine_not_finite": (
            on_base(
                lambda s: _edit_json(
                    _case(s) / "zarr.json", lambda d: d["attributes"]["affine"][0].__setitem__(3, float("nan"))
                )
            ),
            ["CASE_001", "affine"],
        ),
        "spacing_missing": (
            on_base(lambda s: _edit_json(_case(s) / "zarr.json", lambda d: d["attributes"].pop("spacing"))),
            ["CASE_001", "spacing"],
        ),
        "nan_in_image": (on_base(nan_image), ["CASE_001", "NaN"]),
        "inf_in_phases": (on_base(inf_phases), ["CASE_001", "NaN/Inf"]),
        "missing_marker": (
            on_base(
                lambda s: _edit_json(_case(s) / "zarr.json", lambda d: d["attributes"].__setitem__("complete", False))
            ),
            ["CASE_001"],
        ),
        "orphan_partial_file": (
            on_base(lambda s: (_case(s) / "image" / "c" / "x.partial").write_bytes(b"x")),
            ["partial"],
        ),
        "array_without_checksum": (
            on_base(
                lambda s: _rewrite_array(
                    s,
                    "CASE_001",
                    "tissue_pred",
                    np.zeros((16, 16, 12), np.uint8),
                    record=False,
                    compressors=ZstdCodec(),
                )
            ),
            ["CASE_001", "unfinished array tissue_pred"],
        ),
        "array_listed_but_missing": (on_base(lambda s: shutil.rmtree(_case(s) / "mask")), ["CASE_001", "mask"]),
        "symlink_case_group": (on_base(symlink), ["CASE_001", "link"]),
        "synthetic_source_changed": (source_changed, ["SYN_000001", "changed"]),
        "several_damages_in_one_store": (on_base(several), ["CASE_000", "CASE_001", "CASE_002", "-rf"]),
    }
    return kinds


# ----------------------------------------------------------------------------- running
def _verify(code: Path, store: Path, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code), "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    t0 = time.perf_counter()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "cli.main", "store", "verify", str(store)],
            cwd=code,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"rc": None, "output": f"timed out after {timeout} s", "seconds": timeout}
    return {"rc": run.returncode, "output": run.stdout + run.stderr, "seconds": round(time.perf_counter() - t0, 2)}


def classify(run: dict[str, Any], tokens: list[str]) -> str:
    out, rc = run["output"], run["rc"]
    if rc is None or "Traceback" in out:
        return "crashed"
    if rc == 0:
        return "passed"
    if rc == 1:
        return "reported" if all(t in out for t in tokens) else "reported_unnamed"
    return "refused"


def _lines(text: str, n: int = 4) -> list[str]:
    keep = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("verify", "━"))]
    return keep[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-code", type=Path, default=None, help="checkout of the code to compare with")
    parser.add_argument("--only", nargs="*", default=None, help="kinds to run (default: all)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the damaged stores in this folder")
    args = parser.parse_args()
    kinds = _damages()
    chosen = args.only or list(kinds)
    codes = {"after": REPO}
    if args.before_code is not None:
        codes = {"before": args.before_code.resolve(), "after": REPO}
    workroot = Path(tempfile.mkdtemp(prefix="synbt-damage-")) if args.keep is None else args.keep
    per_kind: dict[str, dict[str, Any]] = {}
    try:
        for kind in chosen:
            make, tokens = kinds[kind]
            work = workroot / kind
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            store = make(work)
            entry: dict[str, Any] = {"must_name": tokens}
            for label, code in codes.items():
                run = _verify(code, store, args.timeout)
                entry[label] = {
                    "outcome": classify(run, tokens),
                    "exit": run["rc"],
                    "seconds": run["seconds"],
                    "output": _lines(run["output"]),
                }
            per_kind[kind] = entry
            print(f"{kind:32s} " + "  ".join(f"{lb}={entry[lb]['outcome']}" for lb in codes), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(workroot, ignore_errors=True)
    totals = {
        label: {o: Counter(per_kind[k][label]["outcome"] for k in per_kind)[o] for o in OUTCOMES} for label in codes
    }
    save_result(
        "store_damage_corpus",
        {
            "kinds": len(per_kind),
            "totals": totals,
            "codes": {label: str(code) for label, code in codes.items()},
            "per_kind": per_kind,
        },
    )


if __name__ == "__main__":
    main()
