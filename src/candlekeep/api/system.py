"""Liveness, reachability, health and metrics: what load balancers, uptime checks and
Prometheus call."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from candlekeep import __version__
from candlekeep.api.context import ApiContext
from candlekeep.api.errors import RESPONSES, StateDBUnavailable
from candlekeep.api.metrics import Metrics
from candlekeep.api.routes import as_json
from candlekeep.queries.freshness import FreshnessView, freshness
from candlekeep.queries.health import HealthStatus, HealthView, SystemStatus, health
from candlekeep.queries.jobs import NodeView, nodes
from candlekeep.queries.providers import ProviderView, providers

LIVE = Response(f'{{"status":"ok","version":"{__version__}"}}'.encode(),
                media_type="application/json")


def public_router(metrics: Metrics) -> APIRouter:
    """Routes that need no token: a liveness probe and a scrape must work without one."""
    r = APIRouter(tags=["system"])

    @r.api_route("/health", methods=["GET", "HEAD"], responses={200: {"content": {
        "application/json": {"example": {"status": "ok", "version": __version__}}}}})
    async def live() -> Response:
        """Liveness: the process answers. Touches no database. HEAD works too, for uptime
        monitors that only ask for the status."""
        return LIVE

    @r.get("/metrics", response_class=Response, responses={200: {
        "content": {CONTENT_TYPE_LATEST: {}}}})
    async def scrape() -> Response:
        """Prometheus text format: cluster facts from the state DB, read at scrape time,
        and this process's own counters (see the help text of each metric). A scrape is
        reused for up to a second, however many scrapers ask."""
        return Response(await metrics.scrape(), media_type=CONTENT_TYPE_LATEST)

    return r


def router(ctx: ApiContext) -> APIRouter:
    r = APIRouter(tags=["system"], dependencies=[Depends(ctx.auth)],
                  responses={401: RESPONSES[401]})

    @r.get("/system/status", response_model=SystemStatus)
    async def status() -> Response:
        """The state DB and each configured store: reachable or not, and how fast
        (probes run in threads, at most 3 s each; answers are reused for 2 s)."""
        state_db, stores = await asyncio.gather(ctx.prober.state_db(), ctx.prober.stores())
        return as_json(SystemStatus(state_db, stores))

    @r.get("/system/health", response_model=HealthView,
           responses={503: {"model": HealthView, "description": "A component is down."}})
    async def system_health() -> Response:
        """Each component (state DB, stores, scheduler and daemon nodes, sources as their
        latest providers_health check found them, freshness) with its status and the worst
        of them; HTTP 503 when ``down`` (a provider that is down makes its source
        ``degraded``: the exchange's outage is not candlekeep's)."""
        state_db, stores = await asyncio.gather(ctx.prober.state_db(), ctx.prober.stores())
        found: tuple[list[NodeView], list[FreshnessView], list[ProviderView]] | None = None
        unread: str | None = None
        if state_db.reachable:
            now = ctx.now_ms()
            try:
                found = await ctx.pool.run(lambda reader: (nodes(reader, now),
                                                           freshness(reader),
                                                           providers(reader, now)))
            except StateDBUnavailable as exc:  # answers a ping, yet the routes get 503
                unread = str(exc)
        now = ctx.now_ms()
        view = health(ctx.config, state_db, stores, found[0] if found else None,
                      found[1] if found else None,
                      any(s.scheduled for s in ctx.specs), now, read_error=unread,
                      providers=found[2] if found else None)
        return as_json(view, 503 if view.status == HealthStatus.DOWN else 200)

    return r
