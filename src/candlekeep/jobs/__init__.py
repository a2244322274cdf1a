"""Job types: one module each. The CLI and the scheduler run the same ones."""

from candlekeep.jobs.base import JobContext, JobResult, JobType, Params
from candlekeep.jobs.registry import get_job_type, job_type, job_types

__all__ = ["JobContext", "JobResult", "JobType", "Params", "get_job_type", "job_type", "job_types"]
