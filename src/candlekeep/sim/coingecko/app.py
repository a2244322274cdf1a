"""CoinGecko's REST API as the sim serves it: both hosts, keys, per-minute limits, faults.

``CoinGeckoSim(exchange, CoinGeckoSpec(...))`` is mounted by the sim server
(``run_in_thread(exchange, coingecko=sim)``). The demo host (``api.coingecko.com/api/v3``)
is served under ``/coingecko/api/v3`` and the pro host (``pro-api.coingecko.com/api/v3``)
under ``/coingecko-pro/api/v3``: a source's base-URL override replaces the root URL with
``{sim}/coingecko/api/v3`` or ``{sim}/coingecko-pro/api/v3`` (``base_url(...)``). A
prefix, not ``/api/v3`` itself, because the Binance sim answers there.

Order of a request: an outage (``down_for``) answers 503 before anything; then the key
(header or query parameter, host-specific); then the per-minute budget of that key (or of
keyless callers); then forced faults; then the endpoint. A 429 costs nothing; every other
answered request costs one call of the window.

Budget: fixed windows of ``window_s`` on the sim clock. ``x-ratelimit-limit`` shows the
key's advertised figure and ``x-ratelimit-remaining`` what remains of it, whatever the sim
enforces (``KeySpec.enforced_per_minute``), so a client that trusts the headers meets
429s it did not expect. The headers come with every answer past the key check (CoinGecko
was seen sending them on 429s: coingecko/coingecko-typescript#42; on 200s they are the
sim's assumption); a 429 adds ``retry-after`` in seconds to the window's end.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from candlekeep.core.timeframes import DAY_MS, HOUR_MS
from candlekeep.sim.coingecko import wire
from candlekeep.sim.coingecko.model import ChartPoints, CoinGeckoModel, OhlcCandles
from candlekeep.sim.coingecko.spec import (
    DEMO_HEADER,
    DEMO_PREFIX,
    DEMO_QUERY,
    OHLC_DAILY_DAYS,
    OHLC_DAYS,
    OHLC_HOURLY_DAYS,
    PRO_HEADER,
    PRO_PREFIX,
    PRO_QUERY,
    CoinGeckoSpec,
    Granularity,
    Host,
    KeySpec,
)
from candlekeep.sim.exchange import SimExchange

CgFault = Literal["500", "502", "503", "504", "slow", "truncate", "html", "lag"]
KEYLESS = "(keyless)"
HOURLY_MAX_DAYS = 100
"""[range]: ``interval=hourly`` covers "up to any 100 days" per request."""
FIVE_MIN_MAX_DAYS = 10
"""[range]: ``interval=5m`` covers "up to any 10 days" per request."""
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?)?$")


class Reply(Exception):
    """An answer other than 200, raised from anywhere in a handler."""

    def __init__(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(body)
        self.status = status
        self.body = body
        self.headers = headers


@dataclass(slots=True)
class _Forced:
    kind: CgFault
    endpoint: str
    delay_s: float | None
    points: int = 0


@dataclass(slots=True)
class _Window:
    index: int = -1
    used: int = 0


class CoinGeckoSim:
    """The simulated CoinGecko: its truth (``model``, ``chart``, ``ohlc``) and its routes."""

    def __init__(self, exchange: SimExchange, spec: CoinGeckoSpec | None = None) -> None:
        self.exchange = exchange
        self.spec = spec or CoinGeckoSpec()
        self.clock = exchange.clock
        self.model = CoinGeckoModel(self.spec, exchange.generator)
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._forced: deque[_Forced] = deque()
        self._down_until_ms: int | None = None
        self._down_status = 503
        self.requests = 0
        self.rejected_429 = 0
        self.requests_by_endpoint: dict[str, int] = {}

    # ================================================================== truth

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def chart(self, coin_id: str, from_s: float, to_s: float,
              granularity: Granularity | None = None) -> ChartPoints:
        """What ``market_chart/range?from=&to=`` (seconds, as the query has them) returns
        now."""
        return self.model.chart(coin_id, math.ceil(from_s * 1000), math.floor(to_s * 1000),
                                self.now_ms(), granularity)

    def ohlc(self, coin_id: str, days: int, candle_ms: int | None = None) -> OhlcCandles:
        """What ``/ohlc?days=`` returns now."""
        return self.model.ohlc(coin_id, days, self.now_ms(), candle_ms)

    def used(self, key: str | None = None) -> int:
        """Calls counted in the current window for ``key`` (None: keyless callers)."""
        with self._lock:
            w = self._windows.get(key or KEYLESS)
            return w.used if w is not None and w.index == self._window_index() else 0

    @staticmethod
    def base_url(server_url: str, host: Host) -> str:
        """The root URL a source uses in place of CoinGecko's for ``host``."""
        return server_url.rstrip("/") + (DEMO_PREFIX if host == "demo" else PRO_PREFIX)

    # ================================================================== faults

    def force(self, kind: CgFault, count: int = 1, *, endpoint: str = "*",
              delay_s: float | None = None, points: int = 1) -> None:
        """Make the next ``count`` admitted requests to ``endpoint`` ("*": any; else
        ``ping``, ``coins_list``, ``ohlc``, ``market_chart_range``) fail or misbehave.
        ``lag``: a reply from a replica that lags, without its newest ``points`` points
        (candles)."""
        with self._lock:
            for _ in range(count):
                self._forced.append(_Forced(kind, endpoint, delay_s, points))

    def down_for(self, seconds: float, status: int = 503) -> None:
        """Answer every request with ``status`` until the sim clock has moved ``seconds``
        on (a provider outage; nothing is counted against budgets meanwhile)."""
        with self._lock:
            self._down_until_ms = self.now_ms() + int(seconds * 1000)
            self._down_status = status

    def up(self) -> None:
        """End an outage and drop forced faults."""
        with self._lock:
            self._down_until_ms = None
            self._forced.clear()

    def down_until_ms(self) -> int | None:
        with self._lock:
            if self._down_until_ms is not None and self.now_ms() >= self._down_until_ms:
                self._down_until_ms = None
            return self._down_until_ms

    # ================================================================== HTTP

    def routes(self) -> list[Route]:
        endpoints: list[tuple[str, str, Callable[[Request, Host, KeySpec | None], str]]] = [
            ("/ping", "ping", self._ping),
            ("/coins/list", "coins_list", self._coins_list),
            ("/coins/{id}/ohlc", "ohlc", self._ohlc),
            ("/coins/{id}/market_chart/range", "market_chart_range", self._range),
        ]
        hosts: tuple[tuple[Host, str], ...] = (("demo", DEMO_PREFIX), ("pro", PRO_PREFIX))
        return [Route(prefix + path, self._endpoint(host, name, handler))
                for host, prefix in hosts for path, name, handler in endpoints]

    def _endpoint(self, host: Host, name: str,
                  handler: Callable[[Request, Host, KeySpec | None], str],
                  ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            with self._lock:
                self.requests += 1
                self.requests_by_endpoint[name] = self.requests_by_endpoint.get(name, 0) + 1
            down = self.down_until_ms()
            if down is not None:
                return _gateway(self._down_status)
            try:
                key = self._authenticate(request, host)
                headers, forced = self._admit(key, name)
            except Reply as r:
                return _json(r.body, r.status, r.headers)
            if forced is not None and forced.kind in ("500", "502", "503", "504"):
                return _gateway(int(forced.kind), headers)
            if forced is not None and forced.kind == "slow":
                await asyncio.sleep(forced.delay_s if forced.delay_s is not None
                                    else self.spec.slow_s)
            try:
                body = handler(request, host, key)
            except Reply as r:
                return _json(r.body, r.status, headers)
            if forced is not None and forced.kind == "html":
                return Response(wire.GATEWAY_PAGE.format(status=200, reason="OK"),
                                headers=headers, media_type="text/html")
            if forced is not None and forced.kind == "truncate":
                body = body[: max(1, len(body) // 2)]
            if forced is not None and forced.kind == "lag":
                body = wire.without_newest(body, forced.points)
            return _json(body, 200, headers)

        return endpoint

    def _authenticate(self, request: Request, host: Host) -> KeySpec | None:
        """The caller's key on ``host``, or None for an accepted keyless call; Reply with
        CoinGecko's answer otherwise ([errors] codes 10002, 10010, 10011)."""
        h, q = request.headers, request.query_params
        demo_key = h.get(DEMO_HEADER) or q.get(DEMO_QUERY)
        pro_key = h.get(PRO_HEADER) or q.get(PRO_QUERY)
        now = self.now_ms()
        if host == "demo":
            if pro_key:
                raise Reply(400, wire.host_error(10010, wire.PRO_KEY_ON_DEMO_HOST))
            if not demo_key:
                if self.spec.keyless_per_minute is None:
                    raise Reply(401, wire.status_error(10002, wire.KEY_MISSING_MESSAGE, now))
                return None
            key = self.spec.key(demo_key)
            if key is None:
                raise Reply(401, wire.status_error(10002, wire.KEY_INVALID_MESSAGE))
            if key.host != "demo":
                raise Reply(400, wire.host_error(10010, wire.PRO_KEY_ON_DEMO_HOST))
            return key
        if demo_key and not pro_key:
            raise Reply(400, wire.host_error(10011, wire.DEMO_KEY_ON_PRO_HOST))
        if not pro_key:
            raise Reply(401, wire.status_error(10002, wire.KEY_MISSING_MESSAGE, now))
        key = self.spec.key(pro_key)
        if key is None:
            raise Reply(401, wire.status_error(10002, wire.KEY_INVALID_MESSAGE))
        if key.host != "pro":
            raise Reply(400, wire.host_error(10011, wire.DEMO_KEY_ON_PRO_HOST))
        return key

    def _window_index(self) -> int:
        return self.now_ms() // int(self.spec.window_s * 1000)

    def _admit(self, key: KeySpec | None, name: str) -> tuple[dict[str, str], _Forced | None]:
        """Count the call against its window; Reply 429 when the enforced budget is spent.
        Returns the rate-limit headers and the forced fault to apply, if any."""
        advertised = key.advertised if key else int(self.spec.keyless_per_minute or 0)
        enforced = key.enforced if key else advertised
        window_ms = int(self.spec.window_s * 1000)
        with self._lock:
            index = self._window_index()
            w = self._windows.setdefault(key.key if key else KEYLESS, _Window())
            if w.index != index:
                w.index, w.used = index, 0
            end_ms = (index + 1) * window_ms
            over = w.used >= enforced
            if not over:
                w.used += 1
            headers = {"x-ratelimit-limit": str(advertised),
                       "x-ratelimit-remaining": str(max(0, advertised - w.used)),
                       "x-ratelimit-reset": wire.reset_header(end_ms)}
            if over:
                self.rejected_429 += 1
                headers["retry-after"] = str(max(1, math.ceil((end_ms - self.now_ms()) / 1000)))
                raise Reply(429, wire.status_error(429, wire.RATE_LIMIT_MESSAGE), headers)
            forced = self._take_forced(name)
        return headers, forced

    def _take_forced(self, name: str) -> _Forced | None:
        for i, f in enumerate(self._forced):
            if f.endpoint in ("*", name):
                del self._forced[i]
                return f
        return None

    # ================================================================== endpoints

    def _ping(self, request: Request, host: Host, key: KeySpec | None) -> str:
        return wire.PING

    def _coins_list(self, request: Request, host: Host, key: KeySpec | None) -> str:
        include = request.query_params.get("include_platform", "false").lower() == "true"
        return wire.coins_list(self.spec.coins, include)

    def _ohlc(self, request: Request, host: Host, key: KeySpec | None) -> str:
        q = request.query_params
        coin_id = request.path_params["id"]
        self._vs_currency(q.get("vs_currency"))
        days_text = q.get("days")
        if not days_text:
            raise Reply(400, wire.plain_error("Missing parameter days"))
        if self.spec.coin(coin_id) is None:
            raise Reply(404, wire.plain_error("coin not found"))
        now = self.now_ms()
        if days_text == "max":
            days = max(1, -(-(now - self.model.listed_ms(coin_id)) // DAY_MS))
        else:
            try:
                days = int(days_text)
            except ValueError:
                raise Reply(400, wire.plain_error("invalid days")) from None
            if days not in OHLC_DAYS:
                raise Reply(400, wire.plain_error(
                    f"invalid days: use {'/'.join(map(str, OHLC_DAYS))}/max"))
        interval = q.get("interval") or None
        candle_ms: int | None = None
        if interval is not None:
            if interval not in ("daily", "hourly"):
                raise Reply(400, wire.plain_error("invalid interval"))
            if key is None or key.host != "pro":
                raise Reply(401, wire.status_error(
                    10005, wire.PLAN_RESTRICTED_MESSAGE.format(plans="paid plan")))
            allowed = OHLC_DAILY_DAYS if interval == "daily" else OHLC_HOURLY_DAYS
            if days not in allowed:
                raise Reply(400, wire.plain_error(
                    f"interval={interval} is available for days "
                    f"{'/'.join(map(str, allowed))} only"))
            candle_ms = DAY_MS if interval == "daily" else HOUR_MS
        self._history(key, now - days * DAY_MS, now)
        return wire.ohlc(self.model.ohlc(coin_id, days, now, candle_ms))

    def _range(self, request: Request, host: Host, key: KeySpec | None) -> str:
        q = request.query_params
        coin_id = request.path_params["id"]
        self._vs_currency(q.get("vs_currency"))
        from_ms = _time_param(q.get("from"), "from", ceil=True)
        to_ms = _time_param(q.get("to"), "to", ceil=False)
        if self.spec.coin(coin_id) is None:
            raise Reply(404, wire.plain_error("coin not found"))
        now = self.now_ms()
        interval = q.get("interval") or None
        granularity: Granularity | None = None
        if interval is not None:
            if interval == "daily":
                granularity = "1d"
            elif interval in ("hourly", "5m"):
                if key is None or key.tier != "enterprise":
                    raise Reply(401, wire.status_error(
                        10005, wire.PLAN_RESTRICTED_MESSAGE.format(plans="Enterprise")))
                limit = HOURLY_MAX_DAYS if interval == "hourly" else FIVE_MIN_MAX_DAYS
                if to_ms - from_ms > limit * DAY_MS:
                    raise Reply(400, wire.plain_error(
                        f"interval={interval} covers at most {limit} days per request"))
                granularity = "1h" if interval == "hourly" else "5m"
            else:
                raise Reply(400, wire.plain_error("invalid interval"))
        self._history(key, from_ms, now)
        return wire.chart(self.model.chart(coin_id, from_ms, to_ms, now, granularity))

    def _vs_currency(self, value: str | None) -> None:
        if not value:
            raise Reply(400, wire.plain_error("Missing parameter vs_currency"))
        if value.lower() not in self.spec.vs_currencies:
            raise Reply(400, wire.plain_error("invalid vs_currency"))

    def _history(self, key: KeySpec | None, from_ms: int, now_ms: int) -> None:
        """The Demo plan (and keyless calls) reach back 365 days: 401/10012 beyond."""
        days = key.history_days if key is not None else 365
        if days is not None and from_ms < now_ms - days * DAY_MS:
            raise Reply(401, wire.nested_error(10012, wire.BEYOND_HISTORY_MESSAGE, now_ms))


def _time_param(value: str | None, name: str, *, ceil: bool) -> int:
    """``from``/``to``: UNIX seconds or an ISO date (``YYYY-MM-DD[THH:MM]``, UTC), as ms."""
    if not value:
        raise Reply(400, wire.plain_error(f"Missing parameter {name}"))
    if _ISO_DATE.match(value):
        dt = datetime.fromisoformat(value).replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    try:
        seconds = float(value)
    except ValueError:
        raise Reply(400, wire.plain_error(f"invalid {name}")) from None
    if not math.isfinite(seconds):
        raise Reply(400, wire.plain_error(f"invalid {name}"))
    return math.ceil(seconds * 1000) if ceil else math.floor(seconds * 1000)


def _json(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _gateway(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(wire.GATEWAY_PAGE.format(status=status,
                                             reason=wire.REASONS.get(status, "Error")),
                    status_code=status, headers=headers, media_type="text/html")
