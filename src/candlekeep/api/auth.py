"""Who may read: with ``api.token`` set, every route but ``/health`` and ``/metrics`` wants
``Authorization: Bearer <token>`` or the session cookie that ``POST /login`` sets for
browsers (HttpOnly, SameSite=Strict, Secure when served beyond this host).

The cookie is ``<issued-at>.<HMAC-SHA256(token, issued-at)>``: never the token itself, a new
token ends every session, and the server refuses one older than ``SESSION_S`` whatever the
browser keeps. Comparisons are constant-time; a failed login waits ``FAILED_LOGIN_S``
(awaited: other requests go on) so guessing is slow. A login form is read up to
``MAX_FORM`` bytes and refused beyond, before the rest arrives. The token is never logged,
echoed or put in an error.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from candlekeep.core.clock import Clock

COOKIE = "candlekeep_session"
SESSION_S = 7 * 86400
MAX_FORM = 4096
FAILED_LOGIN_S = 0.5
FUTURE_SKEW_S = 300
"""A cookie issued this much 'later' than now still counts (the clock was set back)."""


class NotAuthenticated(Exception):
    """No valid token or session: a browser asking for a page goes to /login, anything
    else gets 401 JSON."""


class Auth:
    def __init__(self, token: str | None, clock: Clock, *, secure: bool = False) -> None:
        self._token = token.encode() if token else None
        self.clock = clock
        self.secure = secure
        """Cookies only over HTTPS: set when the API is served beyond this host."""

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def token_ok(self, given: str) -> bool:
        return self._token is not None and hmac.compare_digest(given.encode(), self._token)

    def _mac(self, issued: str) -> str:
        assert self._token is not None
        return hmac.new(self._token, f"candlekeep-session-v2:{issued}".encode(),
                        hashlib.sha256).hexdigest()

    def session_value(self) -> str:
        """A new session cookie's value, issued now."""
        issued = str(self.clock.now_ms() // 1000)
        return f"{issued}.{self._mac(issued)}"

    def session_ok(self, value: str) -> bool:
        issued, _, mac = value.partition(".")
        if self._token is None or not issued.isdigit() or len(issued) > 12:
            return False
        age = self.clock.now_ms() // 1000 - int(issued)
        return (-FUTURE_SKEW_S <= age < SESSION_S
                and hmac.compare_digest(mac.encode(), self._mac(issued).encode()))

    def allowed(self, request: Request) -> bool:
        if self._token is None:
            return True
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer " and self.token_ok(header[7:].strip()):
            return True
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and self.session_ok(cookie)

    async def __call__(self, request: Request) -> None:
        """The dependency every protected route carries."""
        if not self.allowed(request):
            raise NotAuthenticated()


def _wants_page(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


def _safe_next(value: str | None) -> str:
    """Only a path on this server (no ``//host``, no scheme): no open redirect."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) \
            or len(value) > 300 or any(c in value for c in "\r\n"):
        return "/"
    return value


async def _denied(request: Request, _exc: Exception) -> Response:
    if _wants_page(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(_safe_next(target), safe='')}",
                                status_code=303)
    return JSONResponse(
        {"detail": "authentication required: send 'Authorization: Bearer <token>' (the "
                   "config's api.token), or log in at /login in a browser"},
        status_code=401, headers={"WWW-Authenticate": "Bearer"})


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>candlekeep: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 24rem; margin: 4rem auto">
<h1>candlekeep</h1>{message}
<form method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label>API token <input type="password" name="token" autocomplete="current-password"
 autofocus required></label>
<button type="submit">Log in</button>
</form></body></html>"""

_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                       "form-action 'self'; frame-ancestors 'none'",
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _page(next_path: str, message: str = "", status: int = 200) -> HTMLResponse:
    shown = f'<p role="alert">{html.escape(message)}</p>' if message else ""
    return HTMLResponse(_PAGE.format(message=shown, next=html.escape(next_path)),
                        status_code=status, headers=_HEADERS)


async def _form_body(request: Request) -> bytes | None:
    """The request's body, or None when it is (or says it is) over ``MAX_FORM`` bytes:
    read no further than that, whatever was declared or keeps coming."""
    declared = request.headers.get("content-length", "")
    if declared and (not declared.isdigit() or int(declared) > MAX_FORM):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    return bytes(body)


def router(auth: Auth) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/login")
    def login_page(
            next_path: Annotated[str | None, Query(alias="next", max_length=300)] = None,
    ) -> Response:
        if not auth.enabled:
            return RedirectResponse(_safe_next(next_path), status_code=303)
        return _page(_safe_next(next_path))

    @r.post("/login")
    async def login(request: Request) -> Response:
        body = await _form_body(request)
        if body is None:
            return JSONResponse({"detail": f"a login form is at most {MAX_FORM} bytes"},
                                status_code=413, headers={"Connection": "close"})
        form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        target = _safe_next((form.get("next") or [""])[0])
        if not auth.enabled:
            return RedirectResponse(target, status_code=303)
        if not auth.token_ok((form.get("token") or [""])[0]):
            await auth.clock.sleep(FAILED_LOGIN_S)
            return _page(target, "That is not the API token.", status=401)
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(COOKIE, auth.session_value(), max_age=SESSION_S, path="/",
                        httponly=True, samesite="strict",
                        secure=auth.secure or request.url.scheme == "https")
        return resp

    @r.post("/logout")
    def logout() -> Response:
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=auth.secure)
        return resp

    return r


def install(app: FastAPI, auth: Auth) -> None:
    app.add_exception_handler(NotAuthenticated, _denied)
    app.include_router(router(auth))
