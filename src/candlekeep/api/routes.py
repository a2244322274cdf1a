"""The read routes. Each answers from the state DB through the read model (``queries``),
the same functions the CLI's listings call, so the JSON of a route is the ``--json`` of
its command: ``/jobs`` is ``list --json``, ``/runs`` items are ``history --json`` rows,
``/gaps`` items are ``gaps list --json`` rows, ``/coverage`` is ``coverage --json`` (as last
reconciled; the command reconciles first).

Handlers are coroutines that hand their reads to the state DB pool's threads
(``ReaderPool.run``), so a blocking read holds no other request up.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from candlekeep.api import params as p
from candlekeep.api.context import ApiContext
from candlekeep.api.errors import RESPONSES
from candlekeep.api.recent import Recent
from candlekeep.core.timeutil import parse_duration, to_ms
from candlekeep.jobs.runtime import series_plans
from candlekeep.queries import coverage as qc
from candlekeep.queries import freshness as qf
from candlekeep.queries import gaps as qg
from candlekeep.queries import jobs as qj
from candlekeep.queries import providers as qp
from candlekeep.queries.encode import plain
from candlekeep.scheduler.control import PidFile
from candlekeep.state.statuses import RunStatus


def as_json(view: object, status_code: int = 200) -> Response:
    return JSONResponse(plain(view), status_code=status_code)


def encode(view: object) -> bytes:
    """What ``as_json`` sends, as bytes to keep."""
    return bytes(as_json(view).body)


SINCE_HELP = ("not a time: give a duration back from now (24h, 7d), an ISO time "
              "(2026-01-01T00:00:00Z) or epoch ms")
"""The same words whatever was wrong: the value itself is never echoed."""


def _since(value: str | None, now_ms: int) -> int | None:
    """A duration back from now, an ISO time, or epoch ms; 422 naming ``since`` if none."""
    if value is None:
        return None
    try:
        if value.isdigit():
            return int(value)
        if value[-1].isalpha() and "-" not in value:
            return now_ms - int(parse_duration(value) * 1000)
        return to_ms(value)
    except ValueError:
        raise RequestValidationError([{"loc": ("query", "since"), "msg": SINCE_HELP,
                                       "type": "value_error"}]) from None


def router(ctx: ApiContext) -> APIRouter:
    r = APIRouter(dependencies=[Depends(ctx.auth)], responses=RESPONSES)
    status_answers = Recent(ctx.keep_s)

    @r.get("/ingestion/status", response_model=list[qf.SeriesStatusView], tags=["data"])
    async def ingestion_status(source: p.Source = None, symbol: p.Symbol = None,
                               timeframe: p.Timeframe = None) -> Response:
        """Per configured series: newest stored candle (epoch ms and ISO), its age, an
        estimated row count and its freshness status, judged now. Reads ``series_state``
        (one row per series), never a candle table; an answer is reused for up to a
        second, however many monitors ask."""
        async def make() -> bytes:
            now = ctx.now_ms()
            views = await ctx.pool.run(lambda reader: qf.ingestion_status(
                reader, ctx.config, now, source=source, symbol=symbol, timeframe=timeframe))
            return encode(views)

        body = await status_answers.get((source, symbol, timeframe), make)
        return Response(body, media_type="application/json")

    @r.get("/jobs", response_model=qj.JobList, tags=["scheduler"])
    async def jobs() -> Response:
        """Every configured job (schedule in words, next tick, latest run, 7-day success
        rate, whether the cluster runs it with this config) under the health banner of
        ``candlekeep list``."""
        now = ctx.now_ms()
        local = PidFile(ctx.config.data_dir).status().running
        return as_json(await ctx.pool.run(
            lambda reader: qj.job_list(ctx.specs, reader, local, now)))

    @r.get("/nodes", response_model=list[qj.NodeView], tags=["scheduler"])
    async def nodes() -> Response:
        """Daemon nodes registered in the state DB, alive or not, with heartbeat age."""
        now = ctx.now_ms()
        return as_json(await ctx.pool.run(lambda reader: qj.nodes(reader, now)))

    @r.get("/runs", response_model=qj.RunPage, tags=["scheduler"])
    async def runs(job: p.Job = None,
                   status: Annotated[list[RunStatus] | None, Query(max_length=10)] = None,
                   since: p.Since = None, limit: p.Limit = 100,
                   offset: p.Offset = 0) -> Response:
        """Run history, newest first (every attempt is a row); ``status`` may repeat
        (``?status=failed&status=timed_out``). Page with ``offset`` until ``next_offset``
        is null."""
        since_ms = _since(since, ctx.now_ms())
        return as_json(await ctx.pool.run(lambda reader: qj.runs(
            reader, job=job, status=status, since_ms=since_ms, limit=limit, offset=offset)))

    @r.get("/gaps", response_model=qg.GapPage, tags=["data"])
    async def gaps(status: p.GapStatus | None = None, source: p.Source = None,
                   symbol: p.Symbol = None, timeframe: p.Timeframe = None,
                   limit: p.Limit = 100, offset: p.Offset = 0) -> Response:
        """Recorded gaps in series order, filtered; page with ``offset`` until
        ``next_offset`` is null."""
        return as_json(await ctx.pool.run(lambda reader: qg.gaps(
            reader, status=status.value if status else None, source=source, symbol=symbol,
            timeframe=timeframe, limit=limit, offset=offset)))

    @r.get("/gaps/summary", response_model=qg.GapSummary, tags=["data"])
    async def gap_summary() -> Response:
        """Open and failed gaps, confirmed-empty ones, repairs in the last 24 h and the
        oldest open gap."""
        now = ctx.now_ms()
        return as_json(await ctx.pool.run(lambda reader: qg.gap_summary(reader, now)))

    @r.get("/coverage", response_model=list[qc.CoverageView], tags=["data"])
    async def coverage(source: p.Source = None, symbol: p.Symbol = None,
                       timeframe: p.Timeframe = None) -> Response:
        """Per configured series: stored range, rows, expected candles, confirmed-empty
        candles, open gaps, coverage %. From the state DB alone: ``stored`` is exact after
        a reconciliation (``stored_exact``) and an upper bound between them."""
        plans = series_plans(ctx.config, source, symbol, timeframe)
        return as_json(await ctx.pool.run(lambda reader: qc.coverage(reader, plans)))

    @r.get("/freshness", response_model=list[qf.FreshnessView], tags=["data"])
    async def freshness() -> Response:
        """The last freshness check's verdict on every series and watched dataset."""
        return as_json(await ctx.pool.run(qf.freshness))

    @r.get("/providers", response_model=list[qp.ProviderView], tags=["data"])
    async def providers() -> Response:
        """Each source's latest recorded health (``providers_health`` job): status, circuit,
        latency p50/p95, error and 429 rates, rate budget use; ``candlekeep providers``."""
        return as_json(await ctx.pool.run(qp.providers))

    return r
