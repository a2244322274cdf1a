"""CoinGecko's JSON: replies, error bodies and rate-limit headers, as recorded.

Error bodies come in four shapes on the real API, and the sim keeps each where it was
seen in recorded replies (public issue threads and client test fixtures; the constants'
docstrings name them):

* ``{"status": {"error_code": N, "error_message": ...}}``: 401 key missing/invalid
  (10002), 429 rate limit;
* ``{"error_code": N, "status": {"error_message": ...}}``: 400 wrong host for the key
  (10010 pro key on the demo host, 10011 demo key on the pro host);
* ``{"error": {"status": {...}}}``: 401 beyond the Demo plan's 365 days (10012);
* ``{"error": "..."}``: plain request errors (404 coin not found, 400 missing parameter).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from candlekeep.sim.coingecko.model import ChartPoints, OhlcCandles
from candlekeep.sim.coingecko.spec import CoinSpec

PING = '{"gecko_says":"(V3) To the Moon!"}'
"""``/ping``'s reply (recorded in rotki/rotki#10292)."""

RATE_LIMIT_MESSAGE = ("You've exceeded the Rate Limit. Please visit "
                      "https://www.coingecko.com/en/api/pricing to subscribe to our API plans "
                      "for higher rate limits.")
"""429's message (recorded in Gituser143/cryptgo#30 and nimblehq/jetpack-compose-crypto#45)."""
KEY_MISSING_MESSAGE = (
    "API Key Missing. Please make sure you're using the right authentication method. "
    "For Pro API, please visit: https://docs.coingecko.com/reference/authentication. "
    "For Public/Demo API, please visit: "
    "https://docs.coingecko.com/v3.0.1/reference/authentication.")
"""401/10002 without a key. Recorded up to "For Public/Demo API, please v"; the rest is
the sim's completion."""
KEY_INVALID_MESSAGE = "Invalid API Key"
"""401/10002 for a key CoinGecko does not know (docs: "10002 ... incorrect API key")."""
PRO_KEY_ON_DEMO_HOST = ("If you are using Pro API key, please change your root URL from "
                        "api.coingecko.com to pro-api.coingecko.com")
DEMO_KEY_ON_PRO_HOST = ("If you are using Demo API key, please change your root URL from "
                        "pro-api.coingecko.com to api.coingecko.com")
"""10010/10011 with HTTP 400 (koala73/worldmonitor#4313, aeonfun/aeon#683, [errors])."""
BEYOND_HISTORY_MESSAGE = (  # recorded in several clients' fixtures, with HTTP 401
    "Your request exceeds the allowed time range. Public API users are limited to querying "
    "historical data within the past 365 days. Upgrade to a paid plan to enjoy full "
    "historical data access: https://www.coingecko.com/en/api/pricing. ")
PLAN_RESTRICTED_MESSAGE = ("This request is limited to {plans} API subscribers. Please visit "
                           "https://www.coingecko.com/en/api/pricing to subscribe to our API "
                           "plans.")
"""10005 "Endpoint not available on your plan" ([errors]); the wording is the sim's."""
GATEWAY_PAGE = ("<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
                "<center><h1>{status} {reason}</h1></center>\r\n</body>\r\n</html>\r\n")
REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Time-out"}


def stamp(now_ms: int) -> str:
    """CoinGecko's error timestamp: ``2026-05-17T01:39:44.892+00:00``."""
    dt = datetime.fromtimestamp(now_ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now_ms % 1000:03d}+00:00"


def reset_header(window_end_ms: int) -> str:
    """``x-ratelimit-reset``: ``2025-07-25 14:54:00 +0000`` (coingecko-typescript#42)."""
    return datetime.fromtimestamp(window_end_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")


def status_error(code: int, message: str, now_ms: int | None = None) -> str:
    status: dict[str, Any] = {}
    if now_ms is not None:
        status["timestamp"] = stamp(now_ms)
    status.update(error_code=code, error_message=message)
    return json.dumps({"status": status}, separators=(",", ":"))


def host_error(code: int, message: str) -> str:
    return json.dumps({"error_code": code, "status": {"error_message": message}},
                      separators=(",", ":"))


def nested_error(code: int, message: str, now_ms: int) -> str:
    return json.dumps({"error": {"status": {"timestamp": stamp(now_ms), "error_code": code,
                                            "error_message": message}}},
                      separators=(",", ":"))


def plain_error(message: str) -> str:
    return json.dumps({"error": message}, separators=(",", ":"))


def coins_list(coins: tuple[CoinSpec, ...], include_platform: bool) -> str:
    rows: list[dict[str, Any]] = []
    for c in coins:
        row: dict[str, Any] = {"id": c.id, "symbol": c.symbol, "name": c.name}
        if include_platform:
            row["platforms"] = {}
        rows.append(row)
    return json.dumps(rows, separators=(",", ":"))


def chart(points: ChartPoints) -> str:
    ts = points.ts.tolist()
    return json.dumps({
        "prices": [list(p) for p in zip(ts, points.prices.tolist(), strict=True)],
        "market_caps": [list(p) for p in zip(ts, points.market_caps.tolist(), strict=True)],
        "total_volumes": [list(p) for p in zip(ts, points.total_volumes.tolist(), strict=True)],
    }, separators=(",", ":"))


def without_newest(body: str, points: int) -> str:
    """A chart or OHLC reply less its newest ``points`` entries (of every series)."""
    reply = json.loads(body)
    if isinstance(reply, list):
        return json.dumps(reply[:max(0, len(reply) - points)], separators=(",", ":"))
    return json.dumps({k: v[:max(0, len(v) - points)] if isinstance(v, list) else v
                       for k, v in reply.items()}, separators=(",", ":"))


def ohlc(candles: OhlcCandles) -> str:
    rows = zip(candles.close_ts.tolist(), candles.open.tolist(), candles.high.tolist(),
               candles.low.tolist(), candles.close.tolist(), strict=True)
    return json.dumps([list(r) for r in rows], separators=(",", ":"))
