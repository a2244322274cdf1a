"""Every error is JSON with a ``detail`` a person can act on: 422 names the parameter,
404 the path, 503 the state DB, 500 (anything unforeseen) points to the server's log, which
has the exception; values are never echoed back (a huge or hostile query string stays out
of responses and logs)."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from candlekeep.core.text import clean_text

if TYPE_CHECKING:
    from candlekeep.api.quiet import Throttled

log = logging.getLogger("candlekeep.api")


@dataclass(frozen=True, slots=True)
class Problem:
    """Any error: what went wrong and what to do."""

    detail: str


@dataclass(frozen=True, slots=True)
class ParamError:
    parameter: str
    message: str


@dataclass(frozen=True, slots=True)
class InvalidParams:
    """422: every query parameter that failed, by name (the values are not echoed)."""

    detail: str
    errors: list[ParamError]


@dataclass(frozen=True, slots=True)
class Unavailable:
    """503: the state DB could not be read; ``component`` is ``state_db``."""

    detail: str
    component: str


RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": Problem, "description": "No valid token or session."},
    422: {"model": InvalidParams, "description": "A query parameter is invalid."},
    503: {"model": Unavailable, "description": "The state DB is unavailable."},
    500: {"model": Problem, "description": "An unexpected error; the server's log has it."},
}
"""The error answers of every protected route, for the OpenAPI document."""


class StateDBUnavailable(Exception):
    """The state DB could not be reached or read: 503, naming it."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(describe_db_error(exc))


def describe_db_error(exc: BaseException) -> str:
    """The driver's first line (SQLAlchemy's own wrapping, with its SQL and links,
    dropped); never a URL or password, which drivers do not put in their messages."""
    if isinstance(exc, StateDBUnavailable):
        return str(exc)
    inner = getattr(exc, "orig", None) or exc
    first = (str(inner).strip().splitlines() or [""])[0]
    return clean_text(f"{type(inner).__name__}: {first}", 300) or type(inner).__name__


def db_errors() -> tuple[type[BaseException], ...]:
    """What reading the state DB may raise when the database (not the code) is at fault."""
    import sqlalchemy.exc

    found: list[type[BaseException]] = [sqlite3.Error, sqlalchemy.exc.SQLAlchemyError,
                                        OSError]
    try:
        import psycopg

        found.append(psycopg.Error)
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    return tuple(found)


def _parameter(err: dict[str, Any]) -> str:
    # an int in the location is the position of a repeated parameter (status=…&status=…)
    loc = [str(p) for p in err.get("loc", ())
           if p not in ("query", "path", "body") and not isinstance(p, int)]
    return ".".join(loc) or "request"


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"parameter": _parameter(e), "message": str(e.get("msg", "invalid value"))}
              for e in exc.errors()]
    names = ", ".join(dict.fromkeys(e["parameter"] for e in errors))
    return JSONResponse({"detail": f"invalid query parameter(s): {names}", "errors": errors},
                        status_code=422)


async def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {_request.url.path[:200]!r}; see /docs for the API"
    return JSONResponse({"detail": detail}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


INTERNAL = "internal error: the server's log has the cause"


class Unexpected:
    """Whatever no handler claimed (a bug, a value this version does not know): a 500 in
    the Problem shape, the exception and its traceback in the log, never in the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            log.exception("request failed method=%s path=%s", scope.get("method"),
                          str(scope.get("path", ""))[:200])
            if started:  # too late for an answer of our own
                raise
            await JSONResponse({"detail": INTERNAL}, status_code=500)(scope, receive, send)


def install(app: FastAPI, outage: Throttled) -> None:
    async def state_db(request: Request, exc: Exception) -> JSONResponse:
        outage.warning("unavailable", "state DB unavailable path=%s error=%s",
                       request.url.path[:200], exc)
        return JSONResponse({"detail": f"state DB unavailable: {exc}",
                             "component": "state_db"}, status_code=503)

    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(StateDBUnavailable, state_db)
    app.add_middleware(Unexpected)  # type: ignore[arg-type]
