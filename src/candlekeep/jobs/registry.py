"""The job-type registry: built-ins plus any package's ``candlekeep.jobs`` entry points."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points

from candlekeep.jobs.base import JobContext, JobFn, JobType, Params, SeriesFilter, SourcesFn

log = logging.getLogger("candlekeep.jobs")

_REGISTRY: dict[str, JobType] = {}
_loaded = False


def job_type(name: str, params: type[Params], description: str = "",
             sources: SourcesFn | None = None) -> Callable[[JobFn], JobFn]:
    """Register the decorated coroutine function as job type ``name``."""

    def deco(fn: JobFn) -> JobFn:
        register(JobType(name, params, fn, description or (fn.__doc__ or "").strip(), sources))
        return fn

    return deco


def series_sources(ctx: JobContext, p: SeriesFilter) -> set[str]:
    """Sources of the configured series a job's filter selects."""
    return {pl.key.source for pl in p.plans(ctx.runtime)}


def register(jt: JobType) -> None:
    _REGISTRY[jt.name] = jt


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    # Built-ins register themselves on import.
    from candlekeep.jobs import builtin  # noqa: F401

    for ep in entry_points(group="candlekeep.jobs"):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not take the daemon down
            log.error("job plug-in failed to load entry_point=%s error=%r", ep.name, exc)
            continue
        if isinstance(obj, JobType):
            register(obj)
        else:
            log.error("job plug-in entry_point=%s is not a JobType", ep.name)


def get_job_type(name: str) -> JobType | None:
    _load()
    return _REGISTRY.get(name)


def job_types() -> dict[str, JobType]:
    _load()
    return dict(_REGISTRY)
