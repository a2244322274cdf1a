"""The job-type registry: built-ins plus any package's ``candlekeep.jobs`` entry points.

Plug-ins are looked for once, at the first lookup. One that cannot be used (it fails to
import, names something that is not a job type, or takes a name already taken) is skipped
whole, logged, and kept in ``plugin_failures()``: a broken package must not stop a daemon
from running every other job, yet whoever reports a missing job type can say why it is
missing. A built-in is never replaced, so a plug-in cannot change what ``backfill`` means.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING

from pydantic import BaseModel

from candlekeep.core.errors import CandlekeepError
from candlekeep.core.plugins import PluginFailure, load_group
from candlekeep.jobs.base import JobContext, JobFn, JobType, Params, SeriesFilter, SourcesFn

if TYPE_CHECKING:
    from candlekeep.config.models import SloConfig

log = logging.getLogger("candlekeep.jobs")

GROUP = "candlekeep.jobs"
_BUILTIN_PACKAGE = "candlekeep.jobs."
_MARK = "__candlekeep_job_type__"
"""Attribute ``@job_type`` leaves on the function, so an entry point may name the function."""


class JobTypeError(CandlekeepError):
    """A job type that must not be registered: its name is taken or its params are loose."""


_REGISTRY: dict[str, JobType] = {}
_failures: list[PluginFailure] = []
_loaded = False


def job_type(name: str, params: type[Params], description: str = "",
             sources: SourcesFn | None = None,
             slo: SloConfig | None = None) -> Callable[[JobFn], JobFn]:
    """Register the decorated coroutine function as job type ``name`` (``slo``: the
    objective its jobs have without an ``slo:`` block of their own).

    The function is returned unchanged but for a reference to its JobType, which is what
    lets a ``candlekeep.jobs`` entry point name the function rather than a JobType object.
    """

    def deco(fn: JobFn) -> JobFn:
        jt = JobType(name, params, fn, description or (fn.__doc__ or "").strip(), sources, slo)
        register(jt)
        setattr(fn, _MARK, jt)
        return fn

    return deco


def series_sources(ctx: JobContext, p: SeriesFilter) -> set[str]:
    """Sources of the configured series a job's filter selects."""
    return {pl.key.source for pl in p.plans(ctx.runtime)}


def register(jt: JobType) -> None:
    """Add ``jt``; JobTypeError if it would replace a built-in or ignore unknown params.

    Any other name may be registered again (the test job types are, at every config load).
    """
    p = jt.params
    if not (isinstance(p, type) and issubclass(p, BaseModel)) \
            or p.model_config.get("extra") != "forbid":
        raise JobTypeError(
            f"job type {jt.name!r}: its params model {getattr(p, '__name__', p)!r} must forbid "
            "unknown keys (derive it from candlekeep.jobs.base.Params), or a typo in a job's "
            "params would silently fall back to a default")
    if not _is_builtin(jt):
        # Built-ins first, whatever imports a plug-in module early: a clash is then always
        # caught here rather than decided by import order.
        from candlekeep.jobs import builtin  # noqa: F401

        held = _REGISTRY.get(jt.name)
        if held is not None and _is_builtin(held):
            raise JobTypeError(f"job type {jt.name!r} clashes with the built-in job type of "
                               "that name; choose another name")
    _REGISTRY[jt.name] = jt


def _is_builtin(jt: JobType) -> bool:
    """Built-ins are the job types whose code lives in this package."""
    return (getattr(jt.run, "__module__", None) or "").startswith(_BUILTIN_PACKAGE)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    # Built-ins register themselves on import.
    from candlekeep.jobs import builtin  # noqa: F401

    def restore(before: dict[str, JobType]) -> None:
        _REGISTRY.clear()
        _REGISTRY.update(before)

    _failures.extend(load_group(GROUP, "job", _load_plugin, lambda: dict(_REGISTRY), restore,
                                JobTypeError, log))


def _load_plugin(ep: EntryPoint) -> None:
    before = dict(_REGISTRY)
    obj = ep.load()
    jt = obj if isinstance(obj, JobType) else getattr(obj, _MARK, None)
    if not isinstance(jt, JobType):
        raise JobTypeError(f"got {_describe(obj)}; a {GROUP} entry point must name a JobType "
                           "or a coroutine function decorated with @job_type(name, Params)")
    if _REGISTRY.get(jt.name) is not jt:  # a decorated function registered on import
        register(jt)
    for name, held in before.items():
        if _REGISTRY.get(name) is not held:
            raise JobTypeError(f"job type {name!r} is already registered by "
                               f"{getattr(held.run, '__module__', '?')}; choose another name")


def _describe(obj: object) -> str:
    name = getattr(obj, "__qualname__", None)
    if inspect.iscoroutinefunction(obj):
        return f"coroutine function {name} without @job_type"
    kind = "class" if isinstance(obj, type) else type(obj).__name__
    return f"{kind} {name}" if name else kind


def get_job_type(name: str) -> JobType | None:
    _load()
    return _REGISTRY.get(name)


def job_types() -> dict[str, JobType]:
    _load()
    return dict(_REGISTRY)


def plugin_failures() -> list[PluginFailure]:
    """Plug-ins that were skipped (logged once, when first looked for), so that a caller
    reporting an unknown job type can say which plug-in failed and why."""
    _load()
    return list(_failures)
