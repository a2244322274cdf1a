"""One ``GET`` to CoinGecko: the plan's host and key header, its per-minute budget, and its
errors turned into candlekeep's.

* Host and header by plan: demo ``api.coingecko.com`` with ``x-cg-demo-api-key`` (or no
  key at all: IP-limited), pro ``pro-api.coingecko.com`` with ``x-cg-pro-api-key``.
* Every call costs one from a per-minute WeightLimiter (CoinGecko counts calls, not
  weights): adaptive from the plan's published budget unless ``calls_per_minute`` fixes
  it (``source``). Replies carry ``x-ratelimit-limit``/``-remaining`` (read by
  ``usage_headers``): the calls CoinGecko has counted in its window, which the limiter
  books when they exceed its own (another program on the same key). A 429 goes to the
  limiter (a pause for its ``retry-after``; an adaptive budget is cut; a fixed one
  without ``retry-after`` books its whole budget) and is retried.
* 5xx, transport failures and bodies that are not JSON are transient (retried); a key
  refused (10002, 10010, 10011) names the source and ``sources.<name>.api_key`` (and
  ``plan`` when the key belongs to the other host), never the key, which is also removed
  from anything a reply echoes; other 4xx are SourceErrors naming the request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx

from candlekeep.core.errors import RateLimitedError, SourceError, TransientSourceError
from candlekeep.core.text import redact_url, snippet
from candlekeep.sources.base import Source
from candlekeep.sources.coingecko.granularity import Plan
from candlekeep.sources.ratelimit import WeightLimiter
from candlekeep.sources.usage_headers import parse_usage

log = logging.getLogger("candlekeep.sources")

ROOTS: dict[Plan, str] = {"demo": "https://api.coingecko.com/api/v3",
                          "pro": "https://pro-api.coingecko.com/api/v3"}
HEADERS: dict[Plan, str] = {"demo": "x-cg-demo-api-key", "pro": "x-cg-pro-api-key"}
Params = dict[str, Any] | Callable[[], dict[str, Any]]

PER_MINUTE: dict[str, int] = {"demo": 30, "pro": 250, "keyless": 5}
"""Default budgets. Demo: 30 calls/min (the pricing table; the errors page says 100, so
30 is the safe reading). Pro: 250, the smallest plan on the pro host (Basic; Analyst and
Lite have 500: set ``calls_per_minute``). Keyless: IP-limited with no published figure;
5/min is the low end of what users report."""


class CoinGeckoClient:
    """GETs for one source over one ``httpx.AsyncClient``, through the source's ``call``
    (in-flight bound, circuit breaker, retries)."""

    def __init__(self, source: Source, base_url: str, plan: Plan, api_key: str | None, *,
                 limiter: WeightLimiter, timeout_s: float = 10.0,
                 http: httpx.AsyncClient | None = None) -> None:
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.shown_url = redact_url(self.base_url)
        self.plan = plan
        self._key = api_key or None
        self.limiter = limiter
        headers = {"accept": "application/json"}
        if self._key:
            headers[HEADERS[plan]] = self._key
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=16), follow_redirects=False)
        self._headers = headers

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def redact(self, text: str) -> str:
        """``text`` without the API key or a proxy's password."""
        if self._key:
            text = text.replace(self._key, "***")
        return text.replace(self.base_url, self.shown_url)

    async def get(self, path: str, params: Params, *, what: str) -> Any:
        """The parsed JSON reply of ``GET {base}{path}`` (retried per the source's policy);
        its shape is the caller's to check. ``params`` may be a function: it is called when
        the request is sent (after any wait for the limiter, on every attempt)."""
        return await self.source.call(f"{self.source.name} {what}",
                                      lambda: self._get_once(path, params, what))

    async def _get_once(self, path: str, params: Params, what: str) -> Any:
        async with self.limiter.reserve(1):
            self.source.count_request(1)
            query = params() if callable(params) else params
            try:
                reply = await self._http.get(self.base_url + path, params=query,
                                             headers=self._headers)
            except httpx.UnsupportedProtocol as exc:
                raise SourceError(self.redact(
                    f"source {self.source.name}: cannot send to {self.base_url}: {exc} "
                    "(base_url must start with http:// or https://)")) from None
            except httpx.TransportError as exc:
                raise TransientSourceError(self.redact(
                    f"source {self.source.name}: {what}: {type(exc).__name__}: {exc}")) from None
            return self._parse(reply, what)

    def _parse(self, reply: httpx.Response, what: str) -> Any:
        code = reply.status_code
        name = self.source.name
        where = f"source {name}: {what}"
        usage = parse_usage(reply.headers, self.source.clock.now_ms() / 1000)
        if usage.used is not None:
            self.limiter.observe_used(usage.used, accepted=code != 429)
        if code == 429:
            retry_after = usage.retry_after_s
            self.source.stats.rate_limited += 1
            self.limiter.on_rate_limited(retry_after)
            if retry_after is None and self.limiter.aimd is None:
                self.limiter.observe_used(self.limiter.budget)
            raise RateLimitedError(f"{where}: HTTP 429 rate limited" + (
                f" (retry after {retry_after:g}s)" if retry_after is not None else ""),
                retry_after)
        if code >= 500:
            raise TransientSourceError(self.redact(
                f"{where}: HTTP {code} at {self.base_url}: {snippet(reply.text)}"))
        try:
            body = json.loads(reply.content)
        except ValueError:
            if code == 200:
                raise TransientSourceError(self.redact(
                    f"{where}: unparseable or truncated reply ({len(reply.content)} bytes): "
                    f"{snippet(reply.text)}")) from None
            body = None
        if code == 200:
            return body
        error_code, message = _error_of(body)
        detail = self.redact(f"HTTP {code}" + (f", error {error_code}" if error_code else "")
                             + f": {message or snippet(reply.text)}")
        raise SourceError(f"{where}: {detail}{self._hint(code, error_code)}")

    def _hint(self, code: int, error_code: int | None) -> str:
        key = f"sources.{self.source.name}"
        other: Plan = "pro" if self.plan == "demo" else "demo"
        if error_code in (10010, 10011):
            return (f" (the API key in {key}.api_key is a {other} key but {key}.plan is "
                    f"{self.plan}: set {key}.plan: {other}, or use a {self.plan} key)")
        if error_code == 10002 or (code == 401 and error_code is None):
            if self._key is None:
                return (f" (CoinGecko wants an API key here: set {key}.api_key, e.g. "
                        "api_key: ${COINGECKO_API_KEY})")
            return f" (CoinGecko refused the API key: check {key}.api_key and {key}.plan)"
        if error_code == 10012:
            return (f" (the {self.plan} plan reaches back 365 days: ask for a later start, "
                    "or use a paid plan)")
        if error_code == 10005:
            return f" (not available on the {self.plan} plan)"
        return ""


def _error_of(body: Any) -> tuple[int | None, str | None]:
    """CoinGecko's error code and message from any of its four error shapes."""
    if not isinstance(body, dict):
        return None, None
    node: Any = body
    if isinstance(node.get("error"), str):
        return None, node["error"]
    if isinstance(node.get("error"), dict):
        node = node["error"]
    status = node.get("status") if isinstance(node.get("status"), dict) else {}
    code = status.get("error_code", node.get("error_code"))
    message = status.get("error_message")
    return (code if isinstance(code, int) else None,
            message if isinstance(message, str) else None)


__all__ = ["HEADERS", "PER_MINUTE", "ROOTS", "CoinGeckoClient"]
