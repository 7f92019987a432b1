"""Statistics of a segmentation experiment: training arms × real-data sizes × seeds, scored on test sets.

Input is a list of per-case rows (mappings) with keys ``arm``, ``size`` (real training cases), ``seed``
(training seed), ``test_set``, ``case_id`` and the metrics ``dice``, ``hd95``, ``msd``. Every arm of a
(test set, size) group must be trained with the same seeds and scored on the same test cases, so that each
group is a complete (seed × case) matrix per arm and arms pair cell by cell.

Estimators (``S`` seeds, ``C`` cases, matrix ``M[s, c]``):

* **Point estimate**: the mean of ``M`` over its finite cells (all cells when none is skipped).
* **Two-level percentile bootstrap CI**: for each of ``n_boot`` resamples, draw ``S`` seeds with replacement
  and, independently, ``C`` cases with replacement (one case draw shared by every drawn seed); the resample's
  statistic is the mean over the drawn (seed, case) cells. The CI is the ``(1 − level)/2`` and
  ``(1 + level)/2`` quantiles of those means. Seed indices of all resamples are drawn first
  (``rng.integers(0, S, (n_boot, S))``), then case indices (``rng.integers(0, C, (n_boot, C))``), so a
  generator seed fixes the CI. Resampling seeds carries the training-run spread into the CI, resampling cases
  the test-set spread.
* **Paired difference** against a baseline arm: ``Δ[s, c] = arm[s, c] − baseline[s, c]`` on matched (seed,
  case) cells, summarised as above; the per-seed means of ``Δ`` (one per seed); a two-sided Wilcoxon
  signed-rank test over cases of the seed-averaged per-case differences ``d_c = mean_s Δ[s, c]``
  (:func:`synbt_factory.evaluate.paired.paired_difference` of ``d_c`` against 0, which also gives a
  one-level case bootstrap with the seeds held fixed); counts of cases whose ``d_c`` improves / worsens.
  The verdict is "better" or "worse" only if the two-level CI excludes 0 *and* the test rejects at
  ``p < 1 − level`` (the rule of :attr:`~synbt_factory.evaluate.paired.PairedDifference.within_noise`),
  else "within noise". For Dice higher is better; for HD95 and MSD lower is better, so a negative Δ improves.

Non-finite values: Dice must be finite in every row (the project's empty-mask rule,
:data:`~synbt_factory.metrics.EMPTY_RULE`, always gives a Dice). HD95 and MSD are NaN for a case
with exactly one empty mask under ``empty_penalty="nan"`` (and ∞ in the MAMA-MIA convention); like
:func:`~synbt_factory.metrics.summarize`, every mean here skips non-finite values (a Δ cell is
skipped when either side is), and each summary counts the cells it skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synbt_factory.evaluate.paired import PairedDifference, paired_difference
from synbt_factory.metrics import EMPTY_RULE, METRIC_NAMES

__all__ = [
    "ArmSummary",
    "PairedVsBaseline",
    "arm_summary",
    "evidence_markdown",
    "evidence_summary",
    "evidence_tables",
    "paired_vs_baseline",
    "two_level_bootstrap",
]

logger = logging.getLogger(__name__)

#: +1 where a higher value is better, −1 where a lower one is.
_DIRECTION: dict[str, int] = {"dice": 1, "hd95": -1, "msd": -1}
_REQUIRED_KEYS = ("arm", "size", "seed", "test_set", "case_id")
_UNITS = {"dice": "", "hd95": " mm", "msd": " mm"}

Key = tuple[int, str]  # (seed, case_id)


@dataclass(frozen=True, kw_only=True)
class ArmSummary:
    """One arm's metric on one (test set, size) group: mean over the (seed × case) matrix and its CI.

    Attributes:
        arm, size, test_set, metric: the group and metric.
        mean: mean over the finite cells of the (seed × case) matrix.
        ci_low, ci_high: two-level percentile bootstrap CI (seeds and cases resampled; see the module docstring).
        level: CI level.
        n_boot: bootstrap resamples.
        n_seeds, n_cases: matrix shape.
        seeds: the seeds, ascending.
        seed_means: mean over cases of each seed (order of ``seeds``; NaN when a seed has no finite value).
        n_skipped: non-finite cells skipped by the means.
    """

    arm: str
    size: int
    test_set: str
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    level: float
    n_boot: int
    n_seeds: int
    n_cases: int
    seeds: tuple[int, ...]
    seed_means: tuple[float, ...]
    n_skipped: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (NaN → None)."""
        return _json_ready(dataclasses.asdict(self))


@dataclass(frozen=True, kw_only=True)
class PairedVsBaseline:
    """``arm − baseline`` on matched (seed, case) cells of one (test set, size) group.

    Attributes:
        arm, baseline, size, test_set, metric: what is compared.
        mean: mean Δ over the finite matched cells.
        ci_low, ci_high: two-level percentile bootstrap CI of the mean Δ.
        level: CI level.
        n_boot: bootstrap resamples.
        n_seeds, n_cases: matrix shape (cases with at least one finite matched cell).
        seeds: the seeds, ascending.
        seed_means: mean Δ of each seed over cases (paired by seed; order of ``seeds``).
        p_value: two-sided Wilcoxon signed-rank p over cases of the seed-averaged Δ (NaN for fewer than 2 cases).
        better, worse: cases whose seed-averaged Δ improves / worsens the metric (direction of the metric).
        n_skipped: matched cells skipped because either side is non-finite.
        higher_is_better: the metric's direction.
        verdict: "better", "worse" or "within noise".
        case_level: :func:`~synbt_factory.evaluate.paired.paired_difference` of the seed-averaged Δ against 0
            (one-level case bootstrap, seeds held fixed; its ``better``/``worse`` count signs of Δ).
    """

    arm: str
    baseline: str
    size: int
    test_set: str
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    level: float
    n_boot: int
    n_seeds: int
    n_cases: int
    seeds: tuple[int, ...]
    seed_means: tuple[float, ...]
    p_value: float
    better: int
    worse: int
    n_skipped: int
    higher_is_better: bool
    verdict: str
    case_level: PairedDifference

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (NaN → None); ``case_level`` as a nested mapping."""
        return _json_ready(dataclasses.asdict(self))


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _check_settings(metric: str, n_boot: int, level: float) -> None:
    if metric not in _DIRECTION:
        raise ValueError(f"metric must be one of {', '.join(METRIC_NAMES)}, got {metric!r}")
    if not (isinstance(n_boot, int | np.integer) and n_boot >= 1):
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _where(arm: str, size: int, test_set: str) -> str:
    return f"arm {arm!r}, size {size}, test set {test_set!r}"


def _cells(rows: Iterable[Mapping[str, Any]], *, arm: str, size: int, test_set: str, metric: str) -> dict[Key, float]:
    """The ``metric`` of every (seed, case) row of one arm and group; non-finite Dice and duplicates are refused."""
    cells: dict[Key, float] = {}
    for i, row in enumerate(rows):
        missing = [k for k in (*_REQUIRED_KEYS, metric) if k not in row]
        if missing:
            raise ValueError(
                f"row {i} has no {', '.join(missing)}; every row needs {', '.join(_REQUIRED_KEYS)} and the metrics"
            )
        if str(row["arm"]) != arm or int(row["size"]) != size or str(row["test_set"]) != test_set:
            continue
        key = (int(row["seed"]), str(row["case_id"]))
        if key in cells:
            raise ValueError(
                f"{_where(arm, size, test_set)}: seed {key[0]}, case {key[1]!r} appears twice; "
                "keep one row per (arm, size, seed, test set, case)"
            )
        value = float(row[metric])
        if metric == "dice" and not math.isfinite(value):
            raise ValueError(
                f"{_where(arm, size, test_set)}: seed {key[0]}, case {key[1]!r} has Dice {value}; "
                "Dice must be finite (an empty prediction scores 0 or 1)"
            )
        cells[key] = value
    return cells


def _axes(cells: Mapping[Key, float]) -> tuple[list[int], list[str]]:
    return sorted({s for s, _ in cells}), sorted({c for _, c in cells})


def _complete(
    cells: Mapping[Key, float],
    seeds: Sequence[int],
    cases: Sequence[str],
    *,
    arm: str,
    size: int,
    test_set: str,
    partner: str | None = None,
) -> np.ndarray:
    """The (seed × case) matrix; a missing cell is an error naming the first one and the count."""
    absent = [(s, c) for s in seeds for c in cases if (s, c) not in cells]
    if absent:
        s, c = absent[0]
        pair = f" to pair with arm {partner!r}" if partner is not None else ""
        raise ValueError(
            f"{_where(arm, size, test_set)}: no row for seed {s}, case {c!r}{pair} "
            f"({len(absent)} of {len(seeds) * len(cases)} (seed, case) cells missing); every arm "
            "needs the same seeds scored on the same test cases"
        )
    return np.array([[cells[(s, c)] for c in cases] for s in seeds], dtype=np.float64)


def _finite_mean(values: np.ndarray, axis: int | None = None) -> Any:
    """Mean over finite entries (NaN where there is none), without a warning."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    count = finite.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def two_level_bootstrap(
    matrix: np.ndarray, *, rng: np.random.Generator, n_boot: int = 2000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile CI of the mean of a (seed × case) matrix, resampling seeds and cases with replacement.

    Each resample draws ``S`` row indices and ``C`` column indices with replacement (all resamples' rows first,
    then all columns) and takes the mean over the finite cells of ``matrix[rows][:, cols]``; the CI is the
    ``(1 ∓ level)/2`` quantiles of the resample means (resamples without a finite cell are left out).

    Args:
        matrix: (S, C) values; non-finite cells are skipped.
        rng: draws the resamples.
        n_boot: resamples.
        level: CI level.

    Returns:
        ``(low, high)``; NaN when no resample has a finite cell.
    """
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"need a non-empty (seed × case) matrix, got shape {values.shape}")
    n_seeds, n_cases = values.shape
    seed_idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    case_idx = rng.integers(0, n_cases, size=(n_boot, n_cases))
    offsets = np.arange(n_boot)[:, None]
    seed_w = np.bincount((seed_idx + offsets * n_seeds).ravel(), minlength=n_boot * n_seeds).reshape(n_boot, -1)
    case_w = np.bincount((case_idx + offsets * n_cases).ravel(), minlength=n_boot * n_cases).reshape(n_boot, -1)
    finite = np.isfinite(values)
    total = ((seed_w @ np.where(finite, values, 0.0)) * case_w).sum(axis=1)
    count = ((seed_w @ finite.astype(np.float64)) * case_w).sum(axis=1)
    means = total[count > 0] / count[count > 0]
    if means.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def arm_summary(
    rows: Sequence[Mapping[str, Any]],
    *,
    arm: str,
    size: int,
    test_set: str,
    metric: str,
    rng: np.random.Generator,
    n_boot: int = 2000,
    level: float = 0.95,
) -> ArmSummary:
    """Mean of ``metric`` over one arm's (seed × case) matrix with a two-level percentile bootstrap CI.

    Args:
        rows: per-case rows (see the module docstring).
        arm, size, test_set: the group.
        metric: ``"dice"``, ``"hd95"`` or ``"msd"``.
        rng: draws the bootstrap resamples (:func:`two_level_bootstrap`).
        n_boot: bootstrap resamples.
        level: CI level.

    Raises:
        ValueError: no rows for the group, a seed lacking a case another seed has, a duplicate row, a
            non-finite Dice, or bad settings.
    """
    _check_settings(metric, n_boot, level)
    cells = _cells(rows, arm=arm, size=size, test_set=test_set, metric=metric)
    if not cells:
        raise ValueError(f"no rows for {_where(arm, size, test_set)}")
    seeds, cases = _axes(cells)
    matrix = _complete(cells, seeds, cases, arm=arm, size=size, test_set=test_set)
    low, high = two_level_bootstrap(matrix, rng=rng, n_boot=n_boot, level=level)
    return ArmSummary(
        arm=arm,
        size=size,
        test_set=test_set,
        metric=metric,
        mean=float(_finite_mean(matrix)),
        ci_low=low,
        ci_high=high,
        level=level,
        n_boot=int(n_boot),
        n_seeds=len(seeds),
        n_cases=len(cases),
        seeds=tuple(seeds),
        seed_means=tuple(float(v) for v in _finite_mean(matrix, axis=1)),
        n_skipped=int((~np.isfinite(matrix)).sum()),
    )


def paired_vs_baseline(
    rows: Sequence[Mapping[str, Any]],
    *,
    arm: str,
    baseline: str = "real",
    size: int,
    test_set: str,
    metric: str,
    rng: np.random.Generator,
    n_boot: int = 2000,
    level: float = 0.95,
) -> PairedVsBaseline:
    """``arm − baseline`` on matched (seed, case) cells: mean Δ, two-level CI, per-seed Δ, Wilcoxon, verdict.

    Args:
        rows: per-case rows (see the module docstring).
        arm: the compared arm.
        baseline: the reference arm (e.g. real data only).
        size, test_set: the group.
        metric: ``"dice"``, ``"hd95"`` or ``"msd"``.
        rng: draws the case-level resamples of :func:`~synbt_factory.evaluate.paired.paired_difference`, then the
            two-level resamples (:func:`two_level_bootstrap`).
        n_boot: bootstrap resamples (both bootstraps).
        level: CI level; the test rejects at ``p < 1 − level``.

    Raises:
        ValueError: ``arm == baseline``, a (seed, case) cell present in one arm and missing in the other (the error
            names arm, size, seed and case), a duplicate row, a non-finite Dice, no finite matched cell, or bad
            settings.
    """
    _check_settings(metric, n_boot, level)
    if arm == baseline:
        raise ValueError(f"arm and baseline are both {arm!r}; compare a different arm with the baseline")
    cand = _cells(rows, arm=arm, size=size, test_set=test_set, metric=metric)
    base = _cells(rows, arm=baseline, size=size, test_set=test_set, metric=metric)
    if not cand and not base:
        raise ValueError(f"no rows for {_where(arm, size, test_set)} nor for baseline {baseline!r}")
    seeds, cases = _axes({**base, **cand})
    a = _complete(cand, seeds, cases, arm=arm, size=size, test_set=test_set, partner=baseline)
    b = _complete(base, seeds, cases, arm=baseline, size=size, test_set=test_set, partner=arm)
    delta = a - b  # NaN or ±inf where either side is non-finite; ∞ − ∞ is NaN
    delta[~(np.isfinite(a) & np.isfinite(b))] = np.nan
    per_case = _finite_mean(delta, axis=0)
    kept = np.isfinite(per_case)
    if not kept.any():
        raise ValueError(
            f"{_where(arm, size, test_set)}: no case has a finite {metric} in both {arm!r} and {baseline!r}"
        )
    case_level = paired_difference(
        {c: 0.0 for c, k in zip(cases, kept, strict=True) if k},
        {c: float(d) for c, d, k in zip(cases, per_case, kept, strict=True) if k},
        generator=rng,
        resamples=int(n_boot),
        level=level,
    )
    mean = float(_finite_mean(delta))
    low, high = two_level_bootstrap(delta, rng=rng, n_boot=n_boot, level=level)
    direction = _DIRECTION[metric]
    improves = direction * mean > 0
    noise = dataclasses.replace(case_level, mean=mean, ci_low=low, ci_high=high).within_noise
    verdict = "within noise" if noise or mean == 0 else ("better" if improves else "worse")
    better, worse = (case_level.better, case_level.worse) if direction > 0 else (case_level.worse, case_level.better)
    return PairedVsBaseline(
        arm=arm,
        baseline=baseline,
        size=size,
        test_set=test_set,
        metric=metric,
        mean=mean,
        ci_low=low,
        ci_high=high,
        level=level,
        n_boot=int(n_boot),
        n_seeds=len(seeds),
        n_cases=int(kept.sum()),
        seeds=tuple(seeds),
        seed_means=tuple(float(v) for v in _finite_mean(delta, axis=1)),
        p_value=case_level.p_value,
        better=better,
        worse=worse,
        n_skipped=int(np.isnan(delta).sum()),
        higher_is_better=direction > 0,
        verdict=verdict,
        case_level=case_level,
    )


def _first_seen(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def evidence_summary(
    rows: Sequence[Mapping[str, Any]],
    *,
    rng: np.random.Generator,
    baseline: str = "real",
    n_boot: int = 2000,
    level: float = 0.95,
) -> dict[str, Any]:
    """Every arm's Dice / HD95 / MSD and its ΔDice against ``baseline``, per test set and size (JSON-ready).

    Test sets and arms keep the order of their first row (the baseline first); sizes ascend. Each group's
    numbers are :func:`arm_summary` per metric and :func:`paired_vs_baseline` on Dice, drawn from ``rng`` in
    that order.

    Returns:
        ``{"baseline", "level", "n_boot", "estimator", "empty_rule", "test_sets", "sizes", "arms",
        "groups": [{"test_set", "size", "n_seeds", "n_cases", "seeds", "arms": [{"arm", "dice", "hd95",
        "msd", "delta_dice"}]}]}`` with ``delta_dice`` None for the baseline; NaN values are None.

    Raises:
        ValueError: no rows, the baseline arm absent, or any error of :func:`arm_summary` /
            :func:`paired_vs_baseline` (e.g. an arm missing a (seed, case) cell).
    """
    if not rows:
        raise ValueError("no rows to summarise")
    for i, row in enumerate(rows):
        missing = [k for k in _REQUIRED_KEYS if k not in row]
        if missing:
            raise ValueError(
                f"row {i} has no {', '.join(missing)}; every row needs {', '.join(_REQUIRED_KEYS)} and the metrics"
            )
    arms = _first_seen(str(r["arm"]) for r in rows)
    if baseline not in arms:
        raise ValueError(
            f"baseline arm {baseline!r} has no rows (arms present: {', '.join(arms)}); pass baseline= one of them"
        )
    arms = [baseline, *(a for a in arms if a != baseline)]
    test_sets = _first_seen(str(r["test_set"]) for r in rows)
    sizes = sorted({int(r["size"]) for r in rows})
    groups = []
    for test_set in test_sets:
        for size in sizes:
            if not any(str(r["test_set"]) == test_set and int(r["size"]) == size for r in rows):
                continue
            entries = []
            for arm in arms:
                entry: dict[str, Any] = {"arm": arm}
                for metric in METRIC_NAMES:
                    entry[metric] = arm_summary(
                        rows, arm=arm, size=size, test_set=test_set, metric=metric, rng=rng, n_boot=n_boot, level=level
                    ).as_dict()
                entry["delta_dice"] = (
                    None
                    if arm == baseline
                    else paired_vs_baseline(
                        rows,
                        arm=arm,
                        baseline=baseline,
                        size=size,
                        test_set=test_set,
                        metric="dice",
                        rng=rng,
                        n_boot=n_boot,
                        level=level,
                    ).as_dict()
                )
                entries.append(entry)
            first = entries[0]["dice"]
            groups.append(
                {
                    "test_set": test_set,
                    "size": size,
                    "n_seeds": first["n_seeds"],
                    "n_cases": first["n_cases"],
                    "seeds": first["seeds"],
                    "arms": entries,
                }
            )
            logger.info(
                "evidence: test set %s, size %d: %d arms × %d seeds × %d cases",
                test_set,
                size,
                len(arms),
                first["n_seeds"],
                first["n_cases"],
            )
    return {
        "baseline": baseline,
        "level": level,
        "n_boot": int(n_boot),
        "estimator": (
            "mean over the (seed × case) matrix; percentile CI from a two-level bootstrap resampling "
            "seeds and cases with replacement (one case draw per resample shared by all seeds); "
            "Δ = arm − baseline on matched (seed, case) cells; p: two-sided Wilcoxon signed-rank over "
            "cases of the seed-averaged Δ; a verdict other than 'within noise' needs the CI to exclude 0 "
            "and p < 1 − level"
        ),
        "empty_rule": EMPTY_RULE + "; non-finite HD95/MSD cells are skipped by every mean here",
        "test_sets": test_sets,
        "sizes": sizes,
        "arms": arms,
        "groups": groups,
    }


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _with_ci(entry: Mapping[str, Any], fmt: str) -> str:
    return f"{_num(entry['mean'], fmt)} [{_num(entry['ci_low'], fmt)}, {_num(entry['ci_high'], fmt)}]"


def evidence_markdown(summary: Mapping[str, Any]) -> str:
    """Markdown tables of an :func:`evidence_summary`: one per test set and size, one row per arm."""
    level_pct = f"{summary['level'] * 100:g} %"
    baseline = summary["baseline"]
    header = (
        f"| Arm | Dice mean [{level_pct} CI] | HD95 mm [{level_pct} CI] | MSD mm [{level_pct} CI] "
        f"| ΔDice vs {baseline} [{level_pct} CI] | p (Wilcoxon) | better/worse cases | verdict |"
    )
    lines = [
        "Mean over the (seed × case) matrix; CI: two-level percentile bootstrap over seeds and cases "
        f"({summary['n_boot']} resamples). ΔDice = arm − {baseline} on matched (seed, case) pairs; p: two-sided "
        "Wilcoxon signed-rank over cases of the seed-averaged ΔDice; better/worse: cases whose seed-averaged "
        f"ΔDice is above/below 0; a verdict needs the CI to exclude 0 and p < {1 - summary['level']:.2g}.",
    ]
    for group in summary["groups"]:
        lines += [
            "",
            f"### Test set {group['test_set']}: {group['size']} real training cases "
            f"({group['n_seeds']} seeds × {group['n_cases']} test cases)",
            "",
            header,
            "|" + "---|" * 8,
        ]
        skipped = {m: 0 for m in ("hd95", "msd")}
        for entry in group["arms"]:
            for m in skipped:
                skipped[m] += entry[m]["n_skipped"]
            delta = entry["delta_dice"]
            if delta is None:
                paired = ["—", "—", "—", "baseline"]
            else:
                p = delta["p_value"]
                paired = [
                    _with_ci(delta, "+.3f"),
                    "n/a" if p is None else f"{p:.2g}",
                    f"{delta['better']}/{delta['worse']} of {delta['n_cases']}",
                    delta["verdict"],
                ]
            cells = [
                entry["arm"],
                _with_ci(entry["dice"], ".3f"),
                _with_ci(entry["hd95"], ".1f"),
                _with_ci(entry["msd"], ".2f"),
                *paired,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if any(skipped.values()):
            lines += [
                "",
                f"Skipped non-finite (seed, case) values, all arms: HD95 {skipped['hd95']}, "
                f"MSD {skipped['msd']} (empty prediction or truth; means over the rest).",
            ]
    return "\n".join(lines) + "\n"


def evidence_tables(
    rows: Sequence[Mapping[str, Any]],
    *,
    rng: np.random.Generator,
    baseline: str = "real",
    n_boot: int = 2000,
    level: float = 0.95,
) -> str:
    """Markdown of :func:`evidence_summary` (same numbers, same draws from ``rng``); see :func:`evidence_markdown`."""
    return evidence_markdown(evidence_summary(rows, rng=rng, baseline=baseline, n_boot=n_boot, level=level))
