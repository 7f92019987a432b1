"""The quality gate: are a store's synthetic tumors close enough to real ones? Thresholds live here.

``synbt generate`` checks the first batch of a SynBT run with the cheap figures of the realism report
(:func:`synbt_factory.evaluate.realism.cheap_figures`) and stops when one is far from real;
``synbt store report --fail-under`` applies the same check to a whole store.

The figures (medians over the checked synthetic cases):

- **enhancement**: |post/pre inside the synthetic masks − the mean post/pre inside the real tumors|.
  A dark square where a tumor should be gives post/pre ≈ 1 against ≈ 2 for the phantom's tumors.
- **outside/inside**: sum |Δ| outside the synthetic mask ÷ sum |Δ| inside, against the background the
  case was drawn on: the share of the change that is not the tumor. A box halo gives 6–17.
- **far changed**: voxels changed by more than 0.02 farther than 3 mm from the mask ÷ mask voxels.

:data:`TARGETS` are the figures a good store reaches (post/pre within 0.25, outside/inside ≤ 1.5, far
changed ≤ 1). The gate's defaults (:class:`QualityGate`) are looser where a first batch of a few cases is
noisy, so that it stops runs that are clearly broken and not good runs with an unlucky batch:
enhancement within 0.5 (post/pre varies with tumor size, and the median of a few cases is noisy; a
dark hole is off by about 1) and outside/inside ≤ 3 (half of the lowest value a box halo gave). The far
changed figure keeps its target of 1: a blend that reaches past 3 mm exceeds it whatever the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TARGETS",
    "GateVerdict",
    "QualityGate",
    "check_first_batch",
    "check_gate",
    "gate_applies",
    "gate_off_record",
    "parse_fail_under",
]

log = logging.getLogger(__name__)

_ADVICE = (
    "train longer (synbt train diffusion with more --steps; synbt train vqvae if the VQ-VAE is weak), check "
    "the VQ-VAE's ceiling with `synbt eval vqvae` (post/pre of real tumors after an encode-decode), or rerun "
    "with --no-quality-gate to keep generating anyway"
)


@dataclass(frozen=True, kw_only=True)
class QualityGate:
    """Thresholds of the quality gate (see the module docstring for why these values).

    Args:
        enhancement_tolerance: largest |median synthetic post/pre − mean real post/pre|.
        max_outside_over_inside: largest median of sum|Δ| outside ÷ inside the synthetic mask.
        max_far_changed_over_mask: largest median of voxels changed by > 0.02 farther than 3 mm ÷ mask voxels.
    """

    enhancement_tolerance: float = 0.5
    max_outside_over_inside: float = 3.0
    max_far_changed_over_mask: float = 1.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")


#: What a good store reaches (the demo's targets); stricter than the gate's defaults.
TARGETS = QualityGate(enhancement_tolerance=0.25, max_outside_over_inside=1.5, max_far_changed_over_mask=1.0)


@dataclass(frozen=True)
class GateFailure:
    """One figure outside its range: ``key`` (short, for scripts and the card), ``figure`` (its description)."""

    key: str
    figure: str
    value: float | None
    expected: str

    def describe(self) -> str:
        shown = "not measurable" if self.value is None else f"{self.value:.3g}"  # inf: nothing changed inside
        return f"{self.figure} = {shown}, expected {self.expected}"


@dataclass(frozen=True)
class GateVerdict:
    """The outcome of :func:`check_gate`: ``passed``, the failures, and the thresholds used."""

    passed: bool
    failures: tuple[GateFailure, ...]
    gate: QualityGate
    n_cases: int

    def message(self, what: str, *, kept: str = "") -> str:
        """One paragraph naming each failing figure, its value and range, and what to do.

        Args:
            what: the cases checked (e.g. "the first 4 SynBT case(s) of OUT").
            kept: a sentence on what was kept, put before the advice.
        """
        listed = "; ".join(f.describe() for f in self.failures)
        return f"quality gate: {what} are far from real tumors: {listed}. {kept}What to do: {_ADVICE}."

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": "pass" if self.passed else "fail",
            "failed": [f.key for f in self.failures],
            "details": [f.describe() for f in self.failures],
            "thresholds": asdict(self.gate),
            "n_cases": self.n_cases,
        }


def check_gate(headline: dict[str, Any], gate: QualityGate | None = None, *, require_all: bool = False) -> GateVerdict:
    """Check the headline of a realism report (:func:`~synbt_factory.evaluate.realism.cheap_figures`).

    Args:
        headline: the report's headline.
        gate: thresholds (default :class:`QualityGate`).
        require_all: a figure that could not be measured (no real tumor, no background to compare with)
            fails; otherwise it is passed over with a warning.
    """
    gate = gate or QualityGate()
    failures = []
    syn, real = headline.get("synthetic_post_over_pre_median"), headline.get("real_post_over_pre_mean")
    tol = gate.enhancement_tolerance
    expected = (
        f"{real - tol:.3g}–{real + tol:.3g} (real tumors' mean {real:.3g} ± {tol:g})"
        if real is not None
        else f"within {tol:g} of the real tumors' mean (no real tumor was found)"
    )
    checks: list[tuple[str, str, float | None, bool, str]] = [
        (
            "enhancement",
            "synthetic post/pre (median)",
            syn,
            syn is not None and real is not None and abs(syn - real) <= tol,
            expected,
        ),
    ]
    for key, figure, limit in (
        ("outside_over_inside", "sum|Δ| outside ÷ inside the mask (median)", gate.max_outside_over_inside),
        (
            "far_changed_over_mask",
            "voxels changed by > 0.02 farther than 3 mm ÷ mask voxels (median)",
            gate.max_far_changed_over_mask,
        ),
    ):
        value = headline.get(f"footprint_{key}_median")
        checks.append((key, figure, value, value is not None and value <= limit, f"≤ {limit:g}"))
    for key, figure, value, ok, expected in checks:
        measured = value is not None and (key != "enhancement" or real is not None)
        if not measured and not require_all:
            log.warning("quality gate: %s could not be measured; not checked", figure)
            continue
        if not ok:
            failures.append(GateFailure(key, figure, value if measured else None, expected))
    return GateVerdict(not failures, tuple(failures), gate, int(headline.get("n_synthetic") or 0))


def parse_fail_under(spec: str) -> QualityGate:
    """``gate`` (the defaults), ``target`` (:data:`TARGETS`) or ``field=value[,field=value]`` over the defaults
    (fields of :class:`QualityGate`).

    Raises:
        ValueError: naming the unknown field or bad value.
    """
    text = spec.strip().lower()
    if text in ("gate", "default", ""):
        return QualityGate()
    if text in ("target", "targets"):
        return TARGETS
    changes: dict[str, float] = {}
    fields = set(asdict(QualityGate()))
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip().replace("-", "_")
        if name not in fields:
            raise ValueError(
                f"--fail-under: unknown figure {name!r}; use gate, target or {', '.join(sorted(fields))} as field=value"
            )
        try:
            changes[name] = float(value)
        except ValueError:
            raise ValueError(f"--fail-under: {name} needs a number, got {value!r}") from None
    return QualityGate(**changes)


def gate_applies(method_name: str) -> bool:
    """The gate checks SynBT runs (SynTumor is analytical: nothing to train longer)."""
    return method_name == "synbt"


def gate_off_record(method_name: str) -> dict[str, Any]:
    """The card's ``quality_gate`` entry of a run that was not checked."""
    reason = (
        "off (--no-quality-gate, or a library call without a gate)"
        if gate_applies(method_name)
        else f"not applicable (method {method_name})"
    )
    return {"verdict": "not checked", "reason": reason}


def check_first_batch(
    out: str | Path, prepared: str | Path, case_ids: Sequence[str], gate: QualityGate, store: Any
) -> GateVerdict:
    """Check the first written cases of a run; record the verdict in the card (``quality_gate``) and return it.

    Args:
        out: the synthetic store.
        prepared: its prepared store of backgrounds.
        case_ids: the cases to check.
        gate: thresholds.
        store: the open, writable synthetic :class:`~synbt_factory.store.CaseStore` (the run holds its lock).
    """
    from synbt_factory.evaluate.realism import cheap_figures, json_ready

    figures = cheap_figures(out, prepared, case_ids=case_ids)
    verdict = check_gate(figures.headline, gate)
    record = {
        **verdict.to_dict(),
        "checked_cases": list(case_ids),
        "figures": {k: v for k, v in figures.headline.items() if k != "n_synthetic"},
    }
    store.update_card(quality_gate=json_ready(record))
    log.info("quality gate on %d case(s): %s", len(case_ids), record["verdict"])
    return verdict
