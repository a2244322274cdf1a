"""``POST /info`` as Hyperliquid serves it: request types, paging, weights, 429s, faults.

``HyperliquidSim`` wraps a ``SimExchange`` (its clock, seed and candle generator) and a
``HyperliquidSpec``. It is both the HTTP handler the sim server mounts and the truth a test
asks: ``fills``, ``orders``, ``funding``, ``ledger``, ``positions``, ``account_state``,
``candles``, ``funding_history`` and ``l2_book`` return what exists at the sim clock's
``now``.

Bad requests answer as Hyperliquid's axum server does: a body that is not JSON is HTTP 400
"Failed to parse the request body as JSON", a JSON body of the wrong shape (unknown type,
missing field, a string where a number belongs, an address that is not 0x + 40 hex) is
HTTP 422 "Failed to deserialize the JSON body into the target type", both text/plain. A
well-formed address nobody uses gets empty data, never an error.

Rate limit: one weight budget (default 1200) per fixed window of ``window_s`` on the sim
clock, shared by every request type. A request whose base weight does not fit gets HTTP
429 and costs nothing; an admitted one costs its base weight plus the extra weight of the
items it returned.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.generator import CandleArrays
from candlekeep.sim.hyperliquid import wire
from candlekeep.sim.hyperliquid.accounts import (
    AccountModel,
    Fill,
    FundingPayment,
    LedgerEvent,
    Order,
    Position,
    fmt_num,
)
from candlekeep.sim.hyperliquid.market import HlBook, HlMarkets
from candlekeep.sim.hyperliquid.spec import (
    ADDRESS_RE,
    INTERVALS,
    HyperliquidSpec,
    base_weight,
    items_weight,
)

HlFault = Literal["429", "500", "502", "503", "504", "truncate", "slow", "html"]
PARSE_ERROR = "Failed to parse the request body as JSON"
DESERIALIZE_ERROR = "Failed to deserialize the JSON body into the target type"
CONTENT_TYPE_ERROR = "Expected request with `Content-Type: application/json`"
GATEWAY_PAGE = ("<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
                "<center><h1>{status} {reason}</h1></center>\r\n</body>\r\n</html>\r\n")
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Time-out"}
USER_TYPES = frozenset({"clearinghouseState", "openOrders", "frontendOpenOrders",
                        "historicalOrders", "userFillsByTime", "userFunding",
                        "userNonFundingLedgerUpdates"})


class BadRequest(Exception):
    """A request Hyperliquid would refuse: HTTP ``status`` with ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class _Forced:
    kind: HlFault
    info_type: str
    delay_s: float | None


@dataclass(slots=True)
class _Verdict:
    status: int = 200
    delay_s: float = 0.0
    truncate: bool = False
    html: bool = False
    reason: str = ""


class HyperliquidSim:
    """The simulated Hyperliquid: its truth and its ``/info`` endpoint."""

    def __init__(self, exchange: SimExchange, spec: HyperliquidSpec | None = None) -> None:
        self.exchange = exchange
        self.spec = spec or HyperliquidSpec()
        self.clock = exchange.clock
        self.seed = exchange.seed
        self.markets = HlMarkets(exchange.seed, self.spec, exchange.generator)
        self.models = {a.address: AccountModel(exchange.seed, a, self.markets)
                       for a in self.spec.accounts}
        self._lock = threading.Lock()
        self._window = -1
        self._used = 0
        self._forced: deque[_Forced] = deque()
        self._rng = random.Random(self.spec.fault_seed)
        self._burst_left = 0
        self.requests = 0
        self.rejected = 0
        self.requests_by_type: dict[str, int] = {}

    # ================================================================== truth

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def model(self, address: str) -> AccountModel | None:
        """The account's model; None for an address the spec does not list."""
        return self.models.get(address.lower())

    def fills(self, address: str, start_ms: int = 0, end_ms: int | None = None) -> list[Fill]:
        """Every fill of ``address`` in ``[start_ms, end_ms]`` up to now, oldest first, ties
        by tid, regardless of the 10,000-fill horizon."""
        m = self.model(address)
        now = self.now_ms()
        return m.fills(start_ms, now if end_ms is None else end_ms, now) if m else []

    def reachable_fills(self, address: str) -> list[Fill]:
        """The fills userFillsByTime can still return: the 10,000 most recent."""
        fills = self.fills(address)
        return fills[-self.spec.fills_horizon:] if self.spec.fills_horizon else []

    def orders(self, address: str) -> list[Order]:
        """Every order placed up to now, oldest first; ``Order.status(now)`` is its state."""
        m = self.model(address)
        return m.orders(self.now_ms()) if m else []

    def open_orders(self, address: str) -> list[Order]:
        m = self.model(address)
        return m.open_orders(self.now_ms()) if m else []

    def funding(self, address: str, start_ms: int = 0,
                end_ms: int | None = None) -> list[FundingPayment]:
        """Every funding payment of ``address`` in ``[start_ms, end_ms]``, oldest first."""
        m = self.model(address)
        now = self.now_ms()
        return m.funding(start_ms, now if end_ms is None else end_ms, now) if m else []

    def ledger(self, address: str, start_ms: int = 0,
               end_ms: int | None = None) -> list[LedgerEvent]:
        """Every non-funding ledger update of ``address`` in ``[start_ms, end_ms]``."""
        m = self.model(address)
        now = self.now_ms()
        return m.ledger(start_ms, now if end_ms is None else end_ms, now) if m else []

    def positions(self, address: str) -> list[Position]:
        m = self.model(address)
        return m.positions(self.now_ms()) if m else []

    def account_state(self, address: str) -> dict[str, Any]:
        """clearinghouseState's reply for ``address`` now."""
        return wire.clearinghouse_state(self.model(address), self.markets, self.now_ms())

    def candles(self, coin: str, interval: str, start_ms: int,
                end_ms: int | None = None) -> CandleArrays:
        """candleSnapshot's candles for ``coin`` (perp name, ``PURR/USDC`` or ``@i``)."""
        symbol = self.markets.symbol_of(coin)
        if symbol is None:
            raise KeyError(f"the Hyperliquid sim lists no coin {coin!r}")
        now = self.now_ms()
        return self.markets.candles(symbol, interval, start_ms,
                                    now if end_ms is None else end_ms, now)

    def funding_history(self, coin: str, start_ms: int,
                        end_ms: int | None = None) -> list[dict[str, Any]]:
        """fundingHistory's entries for a perp in ``[start_ms, end_ms]``, all of them."""
        now = self.now_ms()
        times, rate, premium = self.markets.funding_history(
            coin, start_ms, now if end_ms is None else end_ms, now)
        return [{"coin": coin, "fundingRate": fmt_num(r, 8),
                 "premium": fmt_num(p, 8), "time": t}
                for t, r, p in zip(times.tolist(), rate.tolist(), premium.tolist(),
                                   strict=True)]

    def l2_book(self, coin: str) -> HlBook | None:
        """l2Book's book of ``coin`` now (perp name, ``PURR/USDC`` or ``@i``); None for a
        coin the sim does not list, which Hyperliquid answers with ``null``."""
        return self.markets.book(coin, self.now_ms())

    # ================================================================== faults

    def force(self, kind: HlFault, count: int = 1, *, info_type: str = "*",
              delay_s: float | None = None) -> None:
        """Make the next ``count`` requests of ``info_type`` ("*": any) fail or misbehave:
        an HTTP status, a truncated 200, an HTML 200 (not JSON) or a slow reply."""
        with self._lock:
            for _ in range(count):
                self._forced.append(_Forced(kind, info_type, delay_s))

    def clear_forced(self) -> None:
        with self._lock:
            self._forced.clear()

    def used_weight(self) -> int:
        """Weight used in the current window."""
        with self._lock:
            return self._used if self._window == self._window_index() else 0

    def _window_index(self) -> int:
        return self.clock.now_ms() // int(self.spec.window_s * 1000)

    def _admit(self, info_type: str, weight: int) -> _Verdict:
        with self._lock:
            self.requests += 1
            self.requests_by_type[info_type] = self.requests_by_type.get(info_type, 0) + 1
            window = self._window_index()
            if window != self._window:
                self._window, self._used = window, 0
            verdict = _Verdict()
            if self._used + weight > self.spec.weight_limit:
                verdict.status, verdict.reason = 429, "rate limit"
            else:
                self._used += weight
                self._apply_forced(verdict, info_type)
                if verdict.status == 200 and not verdict.reason:
                    self._apply_random(verdict)
            if verdict.status != 200:
                self.rejected += 1
            return verdict

    def _charge(self, weight: int) -> None:
        with self._lock:
            if self._window == self._window_index():
                self._used += weight

    def _apply_forced(self, verdict: _Verdict, info_type: str) -> None:
        for i, forced in enumerate(self._forced):
            if forced.info_type in ("*", info_type):
                del self._forced[i]
                break
        else:
            return
        verdict.reason = f"forced {forced.kind}"
        if forced.kind == "truncate":
            verdict.truncate = True
        elif forced.kind == "html":
            verdict.html = True
        elif forced.kind == "slow":
            verdict.delay_s = forced.delay_s if forced.delay_s is not None else self.spec.slow_s
        else:
            verdict.status = int(forced.kind)

    def _apply_random(self, verdict: _Verdict) -> None:
        s = self.spec
        if self._burst_left > 0:
            self._burst_left -= 1
            verdict.status, verdict.reason = s.error_status, "error"
            return
        if s.error_rate > 0 and self._rng.random() < s.error_rate:
            verdict.status, verdict.reason = s.error_status, "error"
            return
        if s.truncate_rate > 0 and self._rng.random() < s.truncate_rate:
            verdict.truncate = True
        if s.slow_rate > 0 and self._rng.random() < s.slow_rate:
            verdict.delay_s = s.slow_s

    # ================================================================== HTTP

    def route(self) -> Route:
        return Route("/info", self.endpoint, methods=["POST"])

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        info_type = "?"
        try:
            if "application/json" not in content_type:
                raise BadRequest(415, CONTENT_TYPE_ERROR)
            try:
                payload = json.loads(body)
            except ValueError:
                raise BadRequest(400, PARSE_ERROR) from None
            if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
                raise BadRequest(422, DESERIALIZE_ERROR)
            info_type = payload["type"]
        except BadRequest as exc:
            self._admit(info_type, base_weight(info_type))
            return _text(exc.message, exc.status)
        verdict = self._admit(info_type, base_weight(info_type))
        if verdict.status == 429:
            return Response("null", status_code=429, media_type="application/json")
        if verdict.status >= 500:
            return Response(GATEWAY_PAGE.format(status=verdict.status,
                                                reason=_REASONS.get(verdict.status, "Error")),
                            status_code=verdict.status, media_type="text/html")
        if verdict.delay_s > 0:
            await asyncio.sleep(verdict.delay_s)
        try:
            reply, items = self.answer(payload)
        except BadRequest as exc:
            return _text(exc.message, exc.status)
        self._charge(items_weight(info_type, items))
        if verdict.html:
            return Response(GATEWAY_PAGE.format(status=200, reason="OK"), status_code=200,
                            media_type="text/html")
        text = json.dumps(reply, separators=(",", ":"))
        if verdict.truncate:
            text = text[: max(1, len(text) // 2)]
        return Response(text, status_code=200, media_type="application/json")

    def answer(self, payload: dict[str, Any]) -> tuple[Any, int]:
        """The reply to one ``/info`` body and how many items it holds (for the weight)."""
        now = self.now_ms()
        kind = payload["type"]
        if kind == "meta":
            _dex(payload)
            return wire.meta(self.markets), 0
        if kind == "metaAndAssetCtxs":
            _dex(payload)
            return [wire.meta(self.markets), wire.asset_ctxs(self.markets, now)], 0
        if kind == "spotMeta":
            return wire.spot_meta(self.markets), 0
        if kind == "candleSnapshot":
            return self._candles(payload, now)
        if kind == "l2Book":
            return self._l2_book(payload, now), 0
        if kind == "fundingHistory":
            coin = _str(payload, "coin")
            start, end = _time_range(payload, now)
            if coin not in self.markets.perps:
                return [], 0
            times, rate, premium = self.markets.funding_history(
                coin, start, end, now, limit=self.spec.time_range_page)
            rows = [{"coin": coin, "fundingRate": fmt_num(r, 8),
                     "premium": fmt_num(p, 8), "time": t}
                    for t, r, p in zip(times.tolist(), rate.tolist(), premium.tolist(),
                                       strict=True)]
            return rows, len(rows)
        if kind in USER_TYPES:
            return self._user(kind, payload, now)
        raise BadRequest(422, DESERIALIZE_ERROR)

    def _candles(self, payload: dict[str, Any], now: int) -> tuple[Any, int]:
        req = payload.get("req")
        if not isinstance(req, dict):
            raise BadRequest(422, DESERIALIZE_ERROR)
        coin = _str(req, "coin")
        interval = _str(req, "interval")
        if interval not in INTERVALS:
            raise BadRequest(422, DESERIALIZE_ERROR)
        start, end = _time_range(req, now)
        symbol = self.markets.symbol_of(coin)
        if symbol is None:
            return [], 0
        arrays = self.markets.candles(symbol, interval, start, end, now)
        rows = wire.candles_wire(arrays, coin, interval, self.markets.decimals(symbol))
        return rows, len(rows)

    def _l2_book(self, payload: dict[str, Any], now: int) -> Any:
        """The book at full precision: ``nSigFigs`` and ``mantissa`` (aggregation) must be
        integers or null when given, and are otherwise ignored."""
        coin = _str(payload, "coin")
        for key in ("nSigFigs", "mantissa"):
            if payload.get(key) is not None:
                _int(payload, key)
        symbol = self.markets.symbol_of(coin)
        book = self.markets.book(coin, now)
        if symbol is None or book is None:
            return None
        return wire.l2_book_wire(book, self.markets.decimals(symbol),
                                 self.markets.sz_decimals(coin))

    def _user(self, kind: str, payload: dict[str, Any], now: int) -> tuple[Any, int]:
        user = _str(payload, "user")
        if not ADDRESS_RE.match(user):
            raise BadRequest(422, DESERIALIZE_ERROR)
        model = self.model(user)
        if kind == "clearinghouseState":
            _dex(payload)
            return wire.clearinghouse_state(model, self.markets, now), 0
        if kind in ("openOrders", "frontendOpenOrders"):
            _dex(payload)
            orders = model.open_orders(now)[::-1] if model else []
            if kind == "openOrders":
                return [wire.open_order_wire(o) for o in orders], 0
            return [wire.frontend_order_wire(o, now) for o in orders], 0
        if kind == "historicalOrders":
            recent = model.orders(now)[::-1][: self.spec.historical_orders_limit] if model else []
            rows = [wire.historical_order_wire(o, now) for o in recent]
            return rows, len(rows)
        start, end = _time_range(payload, now)
        if kind == "userFillsByTime":
            aggregate = payload.get("aggregateByTime", False)
            if aggregate is not None and not isinstance(aggregate, bool):
                raise BadRequest(422, DESERIALIZE_ERROR)
            fills = self.reachable_fills(user) if model else []
            fills = [f for f in fills if start <= f.time <= end]
            rows = (wire.aggregate_by_time(fills) if aggregate
                    else [wire.fill_wire(f) for f in fills])[: self.spec.fills_page]
            return rows, len(rows)
        page = self.spec.time_range_page
        if kind == "userFunding":
            funding = model.funding(start, end, now)[:page] if model else []
            return [wire.funding_wire(p) for p in funding], len(funding)
        ledger = model.ledger(start, end, now)[:page] if model else []
        return [wire.ledger_wire(e) for e in ledger], len(ledger)


def _text(message: str, status: int) -> Response:
    return Response(message, status_code=status, media_type="text/plain; charset=utf-8")


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise BadRequest(422, DESERIALIZE_ERROR)
    return value


def _int(obj: dict[str, Any], key: str, default: int | None = None) -> int:
    value = obj.get(key)
    if value is None and default is not None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(422, DESERIALIZE_ERROR)
    return value


def _time_range(obj: dict[str, Any], now: int) -> tuple[int, int]:
    """startTime (required) and endTime (optional or null: now), both inclusive."""
    return _int(obj, "startTime"), _int(obj, "endTime", default=now)


def _dex(payload: dict[str, Any]) -> None:
    """Only the first perp dex exists here (``dex`` absent or empty)."""
    dex = payload.get("dex")
    if dex not in (None, ""):
        raise BadRequest(422, DESERIALIZE_ERROR)
