"""The HTTP API as one FastAPI app: ``candlekeep serve`` runs it alone, the daemon inside
its own event loop (sharing its Runtime, so ``/metrics`` sees the daemon's sources and
runs).

Routes (JSON shapes are the response models in ``/openapi.json``, documented at ``/docs``):

- no token needed: ``/health``, ``/metrics``, ``/login``;
- with ``api.token`` set, everything else needs ``Authorization: Bearer <token>`` or the
  session cookie of ``/login``: ``/system/status``, ``/system/health``, ``/jobs``,
  ``/nodes``, ``/runs``, ``/gaps``, ``/gaps/summary``, ``/coverage``,
  ``/ingestion/status``, ``/freshness``, ``/openapi.json``, ``/docs``, and the dashboard
  (``/``, ``/static/…``);
- without a token, a request must name this host in its Host header (``localhost``,
  ``127.0.0.1``, ``[::1]``, the configured or bound address): another name is a 400, so a
  web page whose domain was made to resolve here (DNS rebinding) reads nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Depends, FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from candlekeep import __version__
from candlekeep.api import auth as auth_mod
from candlekeep.api import docs, errors, routes, system
from candlekeep.api.auth import Auth
from candlekeep.api.context import ApiContext
from candlekeep.api.db import ReaderPool
from candlekeep.api.metrics import Metrics
from candlekeep.api.probes import Prober
from candlekeep.config.models import Config
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.spec import JobSpec

log = logging.getLogger("candlekeep.api")

KEEP_S = 1.0
"""How long an answer of ``/ingestion/status`` or ``/metrics`` is reused."""
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True, slots=True)
class Binding:
    """Where the app is served. ``public``: the bound address is beyond this host, so the
    session cookie is ``Secure`` (uvicorn runs without proxy headers: behind a TLS proxy
    the scheme seen here is http). ``hosts``: the Host names, besides loopback's, that a
    server without a token answers to: a page on another site whose name was made to
    resolve to this address (DNS rebinding) names its own host, and is refused."""

    public: bool = False
    hosts: tuple[str, ...] = ()


def create_app(config: Config, specs: list[JobSpec], runtime: Runtime | None = None, *,
               binding: Binding = Binding(), keep_s: float | None = None) -> FastAPI:
    """The API over ``config``'s state DB. ``runtime``: the daemon's (else one is made,
    and closed with the app). ``keep_s``: how long answers are reused (``KEEP_S``; 0
    computes every request, for benchmarks and debugging)."""
    own = runtime is None
    rt = runtime or Runtime(config)
    if own:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    pool = ReaderPool(config.state_url)
    token = config.api.token.get_secret_value() if config.api and config.api.token else None
    keep = KEEP_S if keep_s is None else keep_s
    ctx = ApiContext(config, specs, rt, pool, Prober(rt, config.state_url),
                     Auth(token, rt.clock, secure=binding.public), keep)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Created or upgraded in the background: the API answers /health (and says what
        # is wrong) while the state DB does not.
        warm = asyncio.ensure_future(pool.prepare())
        try:
            yield
        finally:
            warm.cancel()
            ctx.prober.dispose()
            pool.dispose()
            if own:
                await rt.aclose()

    app = FastAPI(title="candlekeep", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan,
                  description="Operations API of candlekeep: health, jobs and runs, gaps, "
                              "coverage, freshness and Prometheus metrics.")
    errors.install(app, pool.outage)
    if token is None:
        app.add_middleware(TrustedHostMiddleware,  # type: ignore[arg-type]
                           allowed_hosts=[*LOOPBACK_HOSTS, *binding.hosts],
                           www_redirect=False)
    # Routes are matched in order, one by one: what monitors poll hardest comes first.
    app.include_router(system.public_router(Metrics(ctx)))
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
