"""Providers health: judge every configured source (``sources.health``), record the verdicts
in ``provider_health`` and ``data_dir/health.json``, and mark degraded sources so their
cached reference data (market lists) lives twice as long.

Run by the daemon, the job sees the very sources (breakers, counters, limiters) its ingest
jobs use; run from the CLI it sees fresh ones, which only the probe measures, so
``candlekeep providers --probe`` shows its verdicts without recording them (``record``). A provider
that is down does not fail the run: it is reported (a warning, the recorded status, the
``provider_degraded`` alert)."""

from __future__ import annotations

import asyncio
import json
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from candlekeep.config.ops import Duration
from candlekeep.core.errors import ConfigError
from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type
from candlekeep.sources.health import (
    Counters,
    ProviderHealth,
    ProviderStatus,
    Thresholds,
    probe,
    provider_health,
)

if TYPE_CHECKING:
    from candlekeep.core.series import SeriesKey
    from candlekeep.queries.providers import ProviderView
    from candlekeep.sources.base import Source

HEALTH_FILE = "health.json"

_last: weakref.WeakKeyDictionary[Source, Counters] = weakref.WeakKeyDictionary()
"""Each live source's counters at this process's previous check: rates are judged over the
requests since then."""


class ProvidersHealthParams(Params):
    sources: list[str] | None = None
    """Sources to check (default: every configured source)."""
    probe: bool = True
    """Send one light request per source first (the newest candles of one of its series, or
    its market list), so that a provider nobody asked lately is measured too."""
    probe_timeout: Duration = Field(default=60.0, gt=0)
    """A probe still waiting after this long (retrying, say) is given up and reported."""
    error_rate: float = Field(default=0.2, gt=0, le=1)
    """Degraded at or above this share of failed calls in the circuit's window."""
    rate_limited_rate: float = Field(default=0.1, gt=0, le=1)
    """Degraded at or above this share of 429/418 replies since the last check."""
    min_requests: int = Field(default=5, ge=1)
    """Calls (requests) before a rate is judged."""
    record: bool = True
    """Record the verdicts (``provider_health``, ``health.json``). ``candlekeep providers
    --probe`` does not: its fresh process (closed breakers, zero counters) would overwrite
    the daemon's verdict as every source's latest; its verdicts come back in the run's
    ``details["found"]`` instead."""
    keep: Duration = Field(default=7 * 86400.0, gt=0)
    """How long the recorded history of checks is kept."""

    def thresholds(self) -> Thresholds:
        return Thresholds(self.error_rate, self.rate_limited_rate, self.min_requests)


def _names(ctx: JobContext, p: ProvidersHealthParams) -> list[str]:
    configured = list(ctx.config.sources)
    if p.sources is None:
        return configured
    unknown = [n for n in p.sources if n not in ctx.config.sources]
    if unknown:
        raise ConfigError(ctx.config.file,
                          f"jobs.{ctx.job_name}.params.sources",
                          f"unknown source(s) {', '.join(unknown)}",
                          f"configured: {', '.join(configured) or 'none'}")
    return list(dict.fromkeys(p.sources))


def _probe_series(ctx: JobContext, name: str) -> SeriesKey | None:
    return next((pl.key for pl in ctx.runtime.plans(source=name)), None)


async def _check(ctx: JobContext, p: ProvidersHealthParams, name: str) -> ProviderHealth:
    source = await ctx.source(name)
    probed, error = False, None
    if p.probe:
        try:
            probed, error = await asyncio.wait_for(
                probe(source, _probe_series(ctx, name)), p.probe_timeout)
        except TimeoutError:
            probed, error = True, f"no answer within {p.probe_timeout:g}s"
    since = _last.get(source, Counters())
    found = provider_health(source, ctx.config.sources[name].type, since,
                            ctx.clock.now_ms(), thresholds=p.thresholds(),
                            probe_error=error, probed=probed)
    _last[source] = Counters.of(source)
    source.degraded = found.status is not ProviderStatus.UP
    return found


@job_type("providers_health", ProvidersHealthParams,
          "Circuit state, error and 429 rates, latency and budget of every source, recorded "
          "in the state DB and health.json.")
async def providers_health(ctx: JobContext, p: ProvidersHealthParams) -> JobResult:
    names = _names(ctx, p)
    if ctx.dry_run:
        return JobResult(details={"plan": f"check {', '.join(names) or 'no source'}"
                                          + (" with a probe each" if p.probe else "")})
    found = list(await asyncio.gather(*(_check(ctx, p, n) for n in names)))
    res = JobResult(requests=sum(1 for h in found if h.probed))
    res.details["providers"] = [
        {"source": h.source, "status": h.status.value, "score": h.score,
         "circuit": h.circuit.value, "reasons": h.reasons} for h in found]
    for h in found:
        if h.status is not ProviderStatus.UP:
            res.warnings.append(f"provider {h.source} {h.status}: {'; '.join(h.reasons)}")
            ctx.log.warning("provider %s source=%s reasons=%s", h.status, h.source,
                            "; ".join(h.reasons))
    if not p.record:
        from candlekeep.queries.encode import plain

        res.details["found"] = plain(found)
        res.details["node"] = ctx.runtime.node
        return res
    now = ctx.clock.now_ms()
    views = await asyncio.to_thread(_save, ctx, found, now - int(p.keep * 1000))
    res.artifacts.append(str(ctx.config.data_dir / HEALTH_FILE))
    res.details["recorded"] = len(views)
    return res


def _save(ctx: JobContext, found: list[ProviderHealth],
          forget_before_ms: int) -> list[ProviderView]:
    """Record the checks, then write health.json from every source's latest row (a check
    of some sources leaves the others' last verdicts in it)."""
    from candlekeep.queries.providers import providers
    from candlekeep.state.db import reader_on
    from candlekeep.state.provider_health import record

    engine = ctx.runtime.state.engine
    record(engine, found, ctx.runtime.node, forget_before_ms)
    with reader_on(engine) as reader:
        views = providers(reader, ctx.clock.now_ms())
    write_health_file(ctx.config.data_dir / HEALTH_FILE, views, ctx.clock.now_ms())
    return views


def write_health_file(path: Path, views: list[ProviderView], now_ms: int) -> None:
    """``{"written_at": …, "providers": [what GET /providers answers]}``, atomically: a
    temporary file synced, renamed over the old one, the directory synced."""
    from candlekeep.core.fsync import write_text_atomic
    from candlekeep.core.timeutil import iso_ms
    from candlekeep.queries.encode import plain

    body = json.dumps({"written_at": iso_ms(now_ms), "providers": plain(views)}, indent=2)
    write_text_atomic(path, body + "\n")
