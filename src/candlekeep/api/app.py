"""The HTTP API as one FastAPI app: ``candlekeep serve`` runs it alone, the daemon inside
its own event loop (sharing its Runtime, so ``/metrics`` sees the daemon's sources and
runs).

Routes (JSON shapes are the response models in ``/openapi.json``, documented at ``/docs``):

- no token needed: ``/health``, ``/metrics``, ``/login``;
- with ``api.token`` set, everything else needs ``Authorization: Bearer <token>`` or the
  session cookie of ``/login``: ``/system/status``, ``/system/health``, ``/jobs``,
  ``/nodes``, ``/runs``, ``/gaps``, ``/gaps/summary``, ``/coverage``,
  ``/ingestion/status``, ``/freshness``, ``/openapi.json``, ``/docs``, and the dashboard
  (``/``, ``/static/…``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI

from candlekeep import __version__
from candlekeep.api import auth as auth_mod
from candlekeep.api import docs, errors, routes, system
from candlekeep.api.auth import Auth
from candlekeep.api.context import ApiContext
from candlekeep.api.db import ReaderPool
from candlekeep.api.metrics import ClusterCollector, registry
from candlekeep.api.probes import Prober
from candlekeep.api.runmetrics import run_metrics
from candlekeep.config.models import Config
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.spec import JobSpec

log = logging.getLogger("candlekeep.api")


def create_app(config: Config, specs: list[JobSpec], runtime: Runtime | None = None
               ) -> FastAPI:
    """The API over ``config``'s state DB. ``runtime``: the daemon's (else one is made,
    and closed with the app)."""
    own = runtime is None
    rt = runtime or Runtime(config)
    if own:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    pool = ReaderPool(config.state_url)
    token = config.api.token.get_secret_value() if config.api and config.api.token else None
    ctx = ApiContext(config, specs, rt, pool, Prober(rt, pool), Auth(token))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(pool.ensure_schema)
        try:
            yield
        finally:
            pool.dispose()
            if own:
                await rt.aclose()

    app = FastAPI(title="candlekeep", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan,
                  description="Operations API of candlekeep: health, jobs and runs, gaps, "
                              "coverage, freshness and Prometheus metrics.")
    errors.install(app)
    metrics = registry(ClusterCollector(config, [s.name for s in specs], pool, ctx.now_ms),
                       run_metrics(rt).registry)
    # Routes are matched in order, one by one: what monitors poll hardest comes first.
    app.include_router(system.public_router(metrics))
    app.include_router(routes.router(ctx))
    app.include_router(system.router(ctx))
    auth_mod.install(app, ctx.auth)
    app.include_router(docs.router(app, ctx.auth))
    _dashboard(app, ctx.auth)
    return app


def _dashboard(app: FastAPI, auth: Auth) -> None:
    """The dashboard's page and assets (``api.dashboard``), behind the same auth."""
    try:
        from candlekeep.api.dashboard import router
    except ModuleNotFoundError as exc:
        if exc.name != "candlekeep.api.dashboard":
            raise
        log.info("no dashboard module: / is not served")
        return
    app.include_router(router, dependencies=[Depends(auth)])
