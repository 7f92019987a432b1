"""What to generate: the run config and one job per synthetic case.

A job is fully determined by ``(seed, case_index)``: its id, its background case and every
random stream it uses. So a case's content never depends on batch size, worker count, the
order jobs finish in, or on how many cases the run asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

from synbt_factory.rng import case_generator

__all__ = ["GenerateConfig", "CaseJob", "by_background", "plan_jobs", "synthetic_case_id"]


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    """A generation run.

    Args:
        n: number of synthetic cases (ids ``SYN_000000`` … ``SYN_{n-1}``).
        seed: run seed; per-case streams derive from (seed, case index).
        method: ``"syntumor"`` (analytical baseline, no model), ``"synbt"`` (diffusion) or ``"copypaste"``
            (real bank tumors pasted with their own voxels, no model).
        batch_size: cases per sampler call (synbt); does not change results.
        workers: Dask worker threads for placement, CPU synthesis and writing; does not change results.
        background_split: prepared-store split the backgrounds come from (None: every case).
        max_inflight: cases placed/written ahead of the sampler at most (memory bound);
            0 = ``4 × batch_size + 2 × workers``.
    """

    n: int
    seed: int = 0
    method: str = "syntumor"
    batch_size: int = 4
    workers: int = 2
    background_split: str | None = "train"
    max_inflight: int = 0

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError(f"n must be > 0, got {self.n}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.method not in ("syntumor", "synbt", "copypaste"):
            raise ValueError(f"method must be 'syntumor', 'synbt' or 'copypaste', got {self.method!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    @property
    def inflight(self) -> int:
        return self.max_inflight or 4 * self.batch_size + 2 * self.workers

    def identity(self) -> dict[str, object]:
        """What must match for a rerun to resume into the same store (n, batch size, workers may change)."""
        return {"seed": self.seed, "method": self.method, "background_split": self.background_split}


@dataclass(frozen=True, kw_only=True)
class CaseJob:
    """One synthetic case: its background and, if no tumor fits there, the next ones to try."""

    index: int
    case_id: str
    background: str
    seed: int
    alternates: tuple[str, ...] = ()

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.background, *self.alternates)


def synthetic_case_id(index: int) -> str:
    return f"SYN_{index:06d}"


def plan_jobs(config: GenerateConfig, backgrounds: list[str], *, alternates: int = 3) -> list[CaseJob]:
    """One job per case index; the background (and ``alternates`` fallbacks) drawn from the case's own stream."""
    if not backgrounds:
        raise ValueError("no background cases to place tumors in (is the prepared store empty, or the split wrong?)")
    jobs = []
    for i in range(config.n):
        rng = case_generator(config.seed, i, "background")
        first = backgrounds[int(rng.integers(len(backgrounds)))]
        others = [b for b in backgrounds if b != first]
        k = min(alternates, len(others))
        extra = tuple(others[j] for j in rng.permutation(len(others))[:k]) if k else ()
        jobs.append(
            CaseJob(index=i, case_id=synthetic_case_id(i), background=first, seed=config.seed, alternates=extra)
        )
    return jobs


def by_background(jobs: list[CaseJob]) -> list[CaseJob]:
    """``jobs`` grouped by their first-choice background, the groups in the order of their first case (each
    group in case order).

    A job's content depends on ``(seed, case_index)`` alone, so the order only decides when each background's
    placement context is needed: grouped, a run needs each context while its group runs, reads it once, and
    keeps about one per worker (:class:`~synbt_factory.generate.placing.Placer`'s ``max_contexts``) whatever N;
    in case order it needs every background all along. Groups follow their first case, not the backgrounds'
    names: backgrounds are drawn at random per case, so a run stopped early holds a random subset of them, not
    the first ones by name (MAMA-MIA's names start with the site). A job whose background rejects the tumor falls
    back to its alternates outside its group (rare; a context read again at worst).
    """
    first: dict[str, int] = {}
    for job in jobs:
        first[job.background] = min(job.index, first.get(job.background, job.index))
    return sorted(jobs, key=lambda job: (first[job.background], job.index))
