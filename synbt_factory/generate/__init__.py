"""``synbt generate``: mass production of synthetic cases into a resumable Zarr store."""

from synbt_factory.generate.jobs import CaseJob, GenerateConfig, plan_jobs, synthetic_case_id
from synbt_factory.generate.pipeline import GenerateResult, run_generate

__all__ = ["GenerateConfig", "CaseJob", "plan_jobs", "synthetic_case_id", "GenerateResult", "run_generate"]
