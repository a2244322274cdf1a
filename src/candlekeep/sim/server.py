"""The simulated exchange over HTTP, speaking Binance's spot, USDⓈ-M and COIN-M REST format.

Real CCXT code runs against it unchanged (only its base URL is swapped), so the CCXT source
is tested through the same parsing, signing and error mapping it uses in production.
Handlers are plain Starlette endpoints that format JSON by hand: the server is benchmarked
at tens of requests per second on two cores and must not be the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from candlekeep.core.clock import Clock
from candlekeep.core.timeframes import DAY_MS, TIMEFRAMES
from candlekeep.sim.archive import ArchiveSpec, SimArchive, kline_fields
from candlekeep.sim.exchange import (
    Admission,
    Api,
    Faults,
    HoleSpec,
    SimExchange,
    SimMarket,
    TransientSpec,
    fapi_klines_weight,
    spot_klines_weight,
)
from candlekeep.sim.generator import CandleArrays
from candlekeep.sim.orderbook import depth_reply, depth_weight

if TYPE_CHECKING:
    from candlekeep.sim.coingecko.app import CoinGeckoSim
    from candlekeep.sim.hyperliquid.app import HyperliquidSim

log = logging.getLogger("candlekeep.sim")

SPOT_MAX_LIMIT = 1000
FAPI_MAX_LIMIT = 1500
DAPI_MAX_LIMIT = 1500
DAPI_MAX_SPAN_MS = 200 * DAY_MS
"""COIN-M klines: startTime..endTime may span 200 days at most; a missing end (or start)
is the other one plus (minus) 200 days, and the newest ``limit`` candles of the span come
back."""
EXCHANGE_INFO_WEIGHT = {"spot": 20, "fapi": 1, "dapi": 1}
NO_DELIVERY_MS = 4133404800000  # 2100-12-25: a perpetual's deliveryDate
GEO_BLOCK_MESSAGE = ("Service unavailable from a restricted location according to 'b. "
                     "Eligibility' in https://www.binance.com/en/terms. Please contact "
                     "customer service if you believe you received this message in error.")


def _json(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _error(code: int, msg: str, status: int, headers: dict[str, str]) -> Response:
    return _json(json.dumps({"code": code, "msg": msg}), status, headers)


def weight_header(window_s: float) -> str:
    """``X-MBX-USED-WEIGHT-1M`` for Binance's minute; the suffix follows the window's
    interval in exchangeInfo (``-3S`` for a 3-second window), as Binance names it."""
    interval, num = _interval_label(window_s)
    return f"X-MBX-USED-WEIGHT-{num}{interval[0]}"


def _interval_label(window_s: float) -> tuple[str, int]:
    seconds = max(1, round(window_s))
    if seconds % 86400 == 0:
        return "DAY", seconds // 86400
    if seconds % 60 == 0:
        return "MINUTE", seconds // 60
    return "SECOND", seconds


def format_klines(arrays: CandleArrays, tf_ms: int, contract_size: float | None = None) -> str:
    """The 12-field kline arrays, numbers as strings the way Binance sends them
    (``contract_size``: COIN-M's inverse layout, see ``kline_fields``).

    Built column-wise by Arrow's string kernels (shortest round-trip float text), about
    three times faster than formatting 12,000 values in Python.
    """
    if len(arrays) == 0:
        return "[]"
    f = kline_fields(arrays, tf_ms, contract_size=contract_size)
    rows = pc.binary_join_element_wise(
        f[0], ',"', f[1], '","', f[2], '","', f[3], '","', f[4], '","', f[5], '",', f[6],
        ',"', f[7], '",', f[8], ',"', f[9], '","', f[10], '","', f[11], '"', "",
    )
    return "[[" + "],[".join(rows.to_pylist()) + "]]"


class SimServerApp:
    """Routes and per-request bookkeeping; one instance per served exchange."""

    def __init__(self, exchange: SimExchange, archive: ArchiveSpec | None = None,
                 hyperliquid: HyperliquidSim | None = None,
                 coingecko: CoinGeckoSim | None = None) -> None:
        self.exchange = exchange
        self.archive = SimArchive(exchange, archive)
        routes = [
            Route("/api/v3/ping", self._endpoint("spot", "ping", self.ping)),
            Route("/api/v3/time", self._endpoint("spot", "time", self.time)),
            Route("/api/v3/exchangeInfo", self._endpoint("spot", "exchangeInfo", self.info)),
            Route("/api/v3/klines", self._endpoint("spot", "klines", self.klines)),
            Route("/api/v3/depth", self._endpoint("spot", "depth", self.depth)),
            Route("/fapi/v1/ping", self._endpoint("fapi", "ping", self.ping)),
            Route("/fapi/v1/time", self._endpoint("fapi", "time", self.time)),
            Route("/fapi/v1/exchangeInfo", self._endpoint("fapi", "exchangeInfo", self.info)),
            Route("/fapi/v1/klines", self._endpoint("fapi", "klines", self.klines)),
            Route("/fapi/v1/depth", self._endpoint("fapi", "depth", self.depth)),
            Route("/dapi/v1/ping", self._endpoint("dapi", "ping", self.ping)),
            Route("/dapi/v1/time", self._endpoint("dapi", "time", self.time)),
            Route("/dapi/v1/exchangeInfo", self._endpoint("dapi", "exchangeInfo", self.info)),
            Route("/dapi/v1/klines", self._endpoint("dapi", "klines", self.klines)),
            *self.archive.routes(),
        ]
        if hyperliquid is not None:
            routes.append(hyperliquid.route())
        if coingecko is not None:
            routes.extend(coingecko.routes())
        self.app = Starlette(routes=routes)

    def _endpoint(
        self,
        api: Api,
        name: str,
        handler: Callable[[Api, Request, Admission, dict[str, str]], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            weight = self._weight(api, name, request)
            adm = self.exchange.admit(api, name, weight,
                                      request.client.host if request.client else "")
            headers = {weight_header(self.exchange.faults.window_s): str(adm.used_weight)}
            if adm.status in (429, 418):
                headers["Retry-After"] = str(adm.retry_after_s or 1)
                msg = ("Way too much request weight used; IP banned until later."
                       if adm.status == 418
                       else "Too much request weight used; please use the websocket for "
                            "live updates to avoid polling the API.")
                return _error(-1003, msg, adm.status, headers)
            if adm.status == 451:
                # Binance's geo-block: HTTP 451 with code 0 (CCXT's handler lets code 0 by).
                return _error(0, GEO_BLOCK_MESSAGE, 451, headers)
            if adm.status >= 500:
                return _error(-1001, "Internal error; unable to process your request. "
                              "Please try again.", adm.status, headers)
            if adm.delay_s > 0:
                await asyncio.sleep(adm.delay_s)
            response = await handler(api, request, adm, headers)
            if adm.truncate and response.status_code == 200:
                body = bytes(response.body)
                return Response(body[: max(1, len(body) // 2)], status_code=200,
                                headers=headers, media_type="application/json")
            return response

        return endpoint

    def _weight(self, api: Api, name: str, request: Request) -> int:
        if name == "exchangeInfo":
            return EXCHANGE_INFO_WEIGHT[api]
        if name == "depth":
            return depth_weight(api, request.query_params.get("limit"))
        if name != "klines":
            return 1
        if api == "spot":
            return spot_klines_weight(0)
        try:
            limit = int(request.query_params.get("limit", "500"))
        except ValueError:
            limit = 500
        return fapi_klines_weight(limit)

    async def ping(self, api: Api, request: Request, adm: Admission,
                   headers: dict[str, str]) -> Response:
        return _json("{}", headers=headers)

    async def time(self, api: Api, request: Request, adm: Admission,
                   headers: dict[str, str]) -> Response:
        return _json(f'{{"serverTime":{self.exchange.clock.now_ms()}}}', headers=headers)

    async def info(self, api: Api, request: Request, adm: Admission,
                   headers: dict[str, str]) -> Response:
        return _json(json.dumps(exchange_info(self.exchange, api)), headers=headers)

    async def klines(self, api: Api, request: Request, adm: Admission,
                     headers: dict[str, str]) -> Response:
        q = request.query_params
        market_id = q.get("symbol")
        interval = q.get("interval")
        if not market_id:
            return _error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                          "or malformed.", 400, headers)
        if not interval:
            return _error(-1102, "Mandatory parameter 'interval' was not sent, was "
                          "empty/null, or malformed.", 400, headers)
        try:
            limit = int(q.get("limit", "500"))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return _error(-1100, "Illegal characters found in a parameter.", 400, headers)
        max_limit = {"spot": SPOT_MAX_LIMIT, "fapi": FAPI_MAX_LIMIT, "dapi": DAPI_MAX_LIMIT}[api]
        if limit < 1 or limit > max_limit:
            return _error(-1130, "Invalid data sent for a parameter.", 400, headers)
        market = self.exchange.market_by_id(api, market_id)
        if market is None or not market.in_exchange_info:
            return _error(-1121, "Invalid symbol.", 400, headers)
        if interval not in TIMEFRAMES:
            return _error(-1120, "Invalid interval.", 400, headers)
        if start is not None and end is not None and start > end:
            return _error(-1023, "Start time is greater than end time.", 400, headers)
        newest = False
        if api == "dapi":
            if start is not None and end is not None and end - start > DAPI_MAX_SPAN_MS:
                return _error(-1127, f"More than {DAPI_MAX_SPAN_MS // 3_600_000} hours "
                              "between startTime and endTime.", 400, headers)
            if start is not None and end is None:
                end = start + DAPI_MAX_SPAN_MS
            elif start is None:
                if end is None:
                    end = self.exchange.clock.now_ms()
                start = end - DAPI_MAX_SPAN_MS
            newest = True
        arrays = self.exchange.klines(market.symbol, interval, start, end, limit,
                                      newest=newest, corrupt=adm.corrupt)
        return _json(format_klines(arrays, TIMEFRAMES[interval], market.contract_size),
                     headers=headers)

    async def depth(self, api: Api, request: Request, adm: Admission,
                    headers: dict[str, str]) -> Response:
        status, body = depth_reply(self.exchange, api, request.query_params)
        return _json(body, status, headers)


def exchange_info(exchange: SimExchange, api: Api) -> dict[str, Any]:
    """exchangeInfo with the fields CCXT's binance parse_market reads."""
    now = exchange.clock.now_ms()
    interval, num = _interval_label(exchange.faults.window_s)
    symbols: list[dict[str, Any]] = []
    for m in exchange.info_markets(api):
        tick = f"{10.0 ** -m.price_decimals:.{m.price_decimals}f}"
        filters: list[dict[str, Any]] = [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000",
             "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
             "stepSize": "0.00001000"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000",
             "maxQty": "100.00000000", "stepSize": "0.00000000"},
        ]
        listed = m.listing_ms <= now
        delisted = m.delisting_ms is not None and m.delisting_ms <= now
        if api == "spot":
            filters.append({"filterType": "NOTIONAL", "minNotional": "5.00000000",
                            "applyMinToMarket": True, "maxNotional": "9000000.00000000",
                            "applyMaxToMarket": False, "avgPriceMins": 5})
            symbols.append({
                "symbol": m.market_id,
                "status": "BREAK" if delisted else "TRADING" if listed else "PRE_TRADING",
                "baseAsset": m.base, "baseAssetPrecision": 8, "quoteAsset": m.quote,
                "quotePrecision": 8, "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT",
                               "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
                "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
                "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False, "filters": filters, "permissions": [],
                "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER",
                                                    "EXPIRE_BOTH"],
            })
        elif api == "dapi":
            symbols.append(_coinm_symbol(m, filters, listed, delisted))
        else:
            filters.append({"filterType": "MIN_NOTIONAL", "notional": "5"})
            symbols.append({
                "symbol": m.market_id, "pair": m.market_id, "contractType": "PERPETUAL",
                # A delisted perpetual settles: its delivery date becomes the delisting.
                "deliveryDate": m.delisting_ms if delisted else NO_DELIVERY_MS,
                "onboardDate": m.listing_ms,
                "status": ("SETTLING" if delisted else "TRADING" if listed
                           else "PENDING_TRADING"),
                "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
                "baseAsset": m.base, "quoteAsset": m.quote, "marginAsset": m.quote,
                "pricePrecision": m.price_decimals, "quantityPrecision": 3,
                "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
                "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
                "liquidationFee": "0.012500", "marketTakeBound": "0.05",
                "filters": filters, "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            })
    limit = exchange.weight_limit(api)
    rate_limits = [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": interval, "intervalNum": num,
         "limit": limit},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
    ]
    if api == "spot":
        rate_limits.append({"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE",
                            "intervalNum": 5, "limit": 61000})
    return {"timezone": "UTC", "serverTime": now, "rateLimits": rate_limits,
            "exchangeFilters": [], "symbols": symbols}


def _coinm_symbol(m: SimMarket, filters: list[dict[str, Any]], listed: bool,
                  delisted: bool) -> dict[str, Any]:
    """A COIN-M perpetual as ``/dapi/v1/exchangeInfo`` lists it.

    COIN-M says ``contractStatus`` where USDⓈ-M says ``status``; ``marginAsset`` is the coin
    (CCXT's settle, hence ``inverse``) and ``contractSize`` the USD value of one contract.
    Quantities are whole contracts.
    """
    lots = [{**f, "minQty": "1", "maxQty": "1000000", "stepSize": "1"}
            if f["filterType"] in ("LOT_SIZE", "MARKET_LOT_SIZE") else f for f in filters]
    lots += [{"filterType": "MAX_NUM_ORDERS", "limit": 200},
             {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 20},
             {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500",
              "multiplierDown": "0.9500", "multiplierDecimal": "4"}]
    return {
        "symbol": m.market_id, "pair": m.base + m.quote, "contractType": "PERPETUAL",
        "deliveryDate": m.delisting_ms if delisted else NO_DELIVERY_MS,
        "onboardDate": m.listing_ms,
        "contractStatus": ("SETTLING" if delisted else "TRADING" if listed
                           else "PENDING_TRADING"),
        "contractSize": int(m.contract_size or 0), "marginAsset": m.base,
        "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
        "baseAsset": m.base, "quoteAsset": m.quote, "pricePrecision": m.price_decimals,
        "quantityPrecision": 0, "baseAssetPrecision": 8, "quotePrecision": 8,
        "equalQtyPrecision": 4, "maxMoveOrderLimit": 10000, "triggerProtect": "0.0500",
        "underlyingType": "COIN", "underlyingSubType": [], "filters": lots,
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                       "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"], "liquidationFee": "0.010000",
        "marketTakeBound": "0.05",
    }


def create_app(exchange: SimExchange, archive: ArchiveSpec | None = None,
               hyperliquid: HyperliquidSim | None = None,
               coingecko: CoinGeckoSim | None = None) -> Starlette:
    return SimServerApp(exchange, archive, hyperliquid, coingecko).app


def _uvicorn_server(exchange: SimExchange, host: str, port: int,
                    archive: ArchiveSpec | None = None,
                    hyperliquid: HyperliquidSim | None = None,
                    coingecko: CoinGeckoSim | None = None) -> Any:
    import uvicorn

    config = uvicorn.Config(create_app(exchange, archive, hyperliquid, coingecko),
                            host=host, port=port,
                            log_level="warning", access_log=False, lifespan="off", loop="asyncio")
    return uvicorn.Server(config)


@contextmanager
def run_in_thread(exchange: SimExchange, host: str = "127.0.0.1",
                  port: int = 0, *, archive: ArchiveSpec | None = None,
                  hyperliquid: HyperliquidSim | None = None,
                  coingecko: CoinGeckoSim | None = None) -> Iterator[str]:
    """Serve ``exchange`` (REST and archive, Hyperliquid's ``POST /info`` when
    ``hyperliquid`` is given, CoinGecko's demo and pro hosts under ``/coingecko/api/v3``
    and ``/coingecko-pro/api/v3`` when ``coingecko`` is given) from a background thread;
    yields ``http://host:port``.

    The socket is bound here, before the thread starts, so the port is known at once and a
    port of 0 picks a free one. Returns only after uvicorn reports it is serving.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(256)
    bound_port = sock.getsockname()[1]
    server = _uvicorn_server(exchange, host, bound_port, archive, hyperliquid, coingecko)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # surfaced to the waiting caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"sim-server-{bound_port}", daemon=True)
    thread.start()
    ready = threading.Event()
    while not ready.wait(0.005):
        if server.started:
            ready.set()
        elif failure or not thread.is_alive():
            sock.close()
            raise RuntimeError(f"sim server failed to start: {failure[:1]!r}")
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def build_exchange(
    *,
    seed: int = 7,
    clock: Clock | None = None,
    weight_limit: int = 6000,
    fapi_weight_limit: int = 2400,
    dapi_weight_limit: int = 2400,
    enforced_weight_limit: int | None = None,
    enforced_fapi_weight_limit: int | None = None,
    enforced_dapi_weight_limit: int | None = None,
    window_s: float = 60.0,
    error_rate: float = 0.0,
    error_burst: int = 1,
    truncate_rate: float = 0.0,
    slow_rate: float = 0.0,
    slow_s: float = 0.5,
    corrupt_rate: float = 0.0,
    holes_per_day: float = 1.0,
    late_per_day: float = 0.3,
) -> SimExchange:
    """A SimExchange from flat options, the shape a CLI command has."""
    faults = Faults(weight_limit=weight_limit, fapi_weight_limit=fapi_weight_limit,
                    dapi_weight_limit=dapi_weight_limit,
                    enforced_weight_limit=enforced_weight_limit,
                    enforced_fapi_weight_limit=enforced_fapi_weight_limit,
                    enforced_dapi_weight_limit=enforced_dapi_weight_limit, window_s=window_s,
                    error_rate=error_rate, error_burst=error_burst,
                    truncate_rate=truncate_rate, slow_rate=slow_rate, slow_s=slow_s,
                    corrupt_rate=corrupt_rate, seed=seed)
    holes = HoleSpec(*_per_day(holes_per_day)) if holes_per_day > 0 else None
    late = TransientSpec(*_per_day(late_per_day)) if late_per_day > 0 else None
    return SimExchange(seed, clock=clock, holes=holes, transient=late, faults=faults)


def _per_day(rate: float) -> tuple[int, float]:
    """(period, probability) giving ``rate`` events per day, at most one per period."""
    slots = max(1, math.ceil(rate))
    return DAY_MS // slots, rate / slots


def serve(exchange: SimExchange, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve ``exchange`` in the foreground until interrupted (``candlekeep sim serve``)."""
    log.info("sim exchange serving host=%s port=%d seed=%d", host, port, exchange.seed)
    _uvicorn_server(exchange, host, port).run()


def serve_options(host: str = "127.0.0.1", port: int = 8765, **options: Any) -> None:
    """``serve`` with ``build_exchange`` options (seed, weight_limit, window_s, rates...)."""
    serve(build_exchange(**options), host, port)
