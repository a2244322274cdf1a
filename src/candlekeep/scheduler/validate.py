"""Checking jobs before anything runs: a bad job is a ConfigError naming ``jobs[i].key``.

The daemon, ``candlekeep list`` and ``candlekeep run`` all go through ``load_jobs``, so a
typo in a schedule or a param is reported the same way everywhere, before work starts.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from candlekeep.config.models import Config, JobConfig
from candlekeep.core.errors import ConfigError
from candlekeep.jobs.base import JobType, Params
from candlekeep.jobs.registry import job_types, plugin_failures
from candlekeep.scheduler.spec import JobSpec
from candlekeep.scheduler.triggers import CronError, CronTrigger, cron_trigger, parse_timezone

TEST_JOBS_ENV = "CANDLEKEEP_TEST_JOBS"


def available_job_types() -> dict[str, JobType]:
    """The registry, plus the test job types when ``CANDLEKEEP_TEST_JOBS=1``."""
    if os.environ.get(TEST_JOBS_ENV, "") not in ("", "0"):
        from candlekeep.scheduler import testing

        testing.register_test_jobs()
    return job_types()


def validate_jobs(config: Config) -> None:
    """Raise ConfigError for the first bad job (type, schedule, timezone or params)."""
    load_jobs(config)


def load_jobs(config: Config) -> list[JobSpec]:
    file = config.file
    try:
        parse_timezone(config.timezone)
    except CronError as exc:
        raise ConfigError(file, "timezone", str(exc)) from None
    types = available_job_types()
    return [_spec(file, f"jobs[{i}]", job, config.timezone, types)
            for i, job in enumerate(config.jobs)]


def _spec(file: str, key: str, job: JobConfig, default_tz: str,
          types: dict[str, JobType]) -> JobSpec:
    jt = types.get(job.type)
    if jt is None:
        failed = "; ".join(str(f) for f in plugin_failures())
        fix = f"valid types: {', '.join(sorted(types)) or 'none registered'}"
        raise ConfigError(file, f"{key}.type", f"unknown job type {job.type!r}",
                          fix + (f"; plug-ins skipped: {failed}" if failed else ""))
    tz = job.timezone or default_tz
    try:
        parse_timezone(tz)
    except CronError as exc:
        raise ConfigError(file, f"{key}.timezone", str(exc)) from None
    trigger: CronTrigger | None = None
    if job.schedule is not None:
        try:
            trigger = cron_trigger(job.schedule, tz)
        except CronError as exc:
            raise ConfigError(file, f"{key}.schedule", str(exc),
                              'e.g. "*/5 * * * *" (every 5 minutes) or "0 2 * * *" '
                              "(02:00 daily)") from None
    params = _params(file, f"{key}.params", jt, job.params)
    return JobSpec(
        name=job.name, type=job.type, job_type=jt, params=params, trigger=trigger,
        enabled=job.enabled, misfire=job.misfire,
        grace_ms=None if job.misfire_grace is None else int(job.misfire_grace * 1000),
        max_concurrent=job.max_concurrent, timeout_s=job.timeout, retries=job.retries,
        description=job.description,
    )


def _params(file: str, key: str, jt: JobType, raw: dict[str, Any]) -> Params:
    try:
        return jt.params.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        loc = loc.removeprefix(".")
        where = f"{key}.{loc}" if loc else key
        valid = ", ".join(f.alias or name for name, f in jt.params.model_fields.items()) \
            or "none"
        if err["type"] == "extra_forbidden":
            raise ConfigError(file, where, f"unknown param {loc!r} for job type {jt.name!r}",
                              f"valid params: {valid}") from None
        if err["type"] == "missing":
            raise ConfigError(file, where, f"required param {loc!r} is missing",
                              f"job type {jt.name!r} takes: {valid}") from None
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(file, where, f"{msg} (got {err.get('input')!r})") from None
