"""What the simulated CoinGecko lists, who may call it and CoinGecko's published rules.

Plain frozen data and pure functions: a test builds one spec, hands it to the sim and
asks the same functions which granularity a request implies. Every rule names where it
comes from; where CoinGecko publishes nothing the choice is marked as the sim's own.

Sources (read 2026):
  [ohlc]    https://docs.coingecko.com/reference/coins-id-ohlc (and /demo/, /v3.0.1/ copies)
  [range]   https://docs.coingecko.com/reference/coins-id-market-chart-range
  [5m-log]  https://docs.coingecko.com/changelog/improved-5minutely-data-for-historical-chart-data-endpoints
  [errors]  https://docs.coingecko.com/docs/errors-and-rate-limits
  [pricing] https://www.coingecko.com/en/api/pricing (plan table: calls/min, history depth)
  [auth]    https://docs.coingecko.com/demo/reference/authentication,
            https://docs.coingecko.com/docs/setting-up-your-api-key
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS

Host = Literal["demo", "pro"]
Tier = Literal["demo", "basic", "analyst", "lite", "enterprise"]

DEMO_ROOT = "https://api.coingecko.com/api/v3"
PRO_ROOT = "https://pro-api.coingecko.com/api/v3"
DEMO_PREFIX = "/coingecko/api/v3"
"""Where the sim serves the demo host. Not ``/api/v3``: the Binance sim owns that path."""
PRO_PREFIX = "/coingecko-pro/api/v3"
"""Where the sim serves the pro host."""
DEMO_HEADER = "x-cg-demo-api-key"
PRO_HEADER = "x-cg-pro-api-key"
DEMO_QUERY = "x_cg_demo_api_key"
PRO_QUERY = "x_cg_pro_api_key"
"""[auth]: a key goes in the header (recommended) or the query string."""

PUBLISHED_PER_MINUTE: dict[Tier, int | None] = {
    "demo": 30, "basic": 250, "analyst": 500, "lite": 500, "enterprise": None}
"""[pricing] "Rate limit/min": Demo 30, Basic 250, Analyst 500, Lite 500, Enterprise
custom. ([errors] now says "Demo plan: 100 calls/min"; the sim follows the pricing table
and a spec can set any figure.) Enterprise has no published figure: the sim uses 1000,
the figure of the example reply of ``GET /key``."""
ENTERPRISE_PER_MINUTE = 1000
KEYLESS_PER_MINUTE = 5
"""[errors]: keyless calls are "IP-based rate limiting", no figure published. The sim's
own choice: 5/min (third-party reports say "5 to 15")."""
DEMO_HISTORY_DAYS = 365
"""[ohlc]/[pricing]: the Demo plan reaches back 365 days (401, error 10012, beyond)."""

FIVE_MIN_MS = 5 * MINUTE_MS
THIRTY_MIN_MS = 30 * MINUTE_MS
FOUR_HOURS_MS = 4 * HOUR_MS
FOUR_DAYS_MS = 4 * DAY_MS
OHLC_DAYS = (1, 7, 14, 30, 90, 180, 365)
"""[ohlc] ``days``: 1/7/14/30/90/180/365/max only. Other values are refused with HTTP 400
(seen for days=50 in man-c/pycoingecko#43 and days=4 in GLEECBTC/gleec-wallet#3380; the
body is not recorded: the sim answers the plain ``{"error": ...}`` shape)."""
OHLC_DAILY_DAYS = (1, 7, 14, 30, 90, 180)
"""[ohlc]: paid plans' ``interval=daily`` is available for these ``days`` only."""
OHLC_HOURLY_DAYS = (1, 7, 14, 30, 90)
"""[ohlc]: paid plans' ``interval=hourly`` is available for these ``days`` only."""

Granularity = Literal["5m", "1h", "1d"]


def ohlc_candle_ms(days: int) -> int:
    """[ohlc] auto granularity (candle body): 1-2 days 30 minutes, 3-30 days 4 hours,
    31 days and beyond 4 days (of the ``days`` accepted, OHLC_DAYS: 1 gives 30 minutes,
    7/14/30 four hours, 90 and more four days)."""
    if days <= 2:
        return THIRTY_MIN_MS
    if days <= 30:
        return FOUR_HOURS_MS
    return FOUR_DAYS_MS


def range_granularity(from_ms: int, to_ms: int, now_ms: int) -> Granularity:
    """[range]/[5m-log] auto granularity of ``market_chart/range``:

    * 1 day from current time = 5-minutely
    * 1 day from any time (except current time) = hourly
    * 2 - 90 days from any time = hourly
    * above 90 days from any time = daily (00:00 UTC)

    Read by the sim as: 5-minutely when ``from`` is within the last 24 h of now; otherwise
    hourly up to a span of exactly 90 days, daily above (the docs give no finer boundary).
    """
    span = to_ms - from_ms
    if span <= DAY_MS and from_ms >= now_ms - DAY_MS:
        return "5m"
    if span <= 90 * DAY_MS:
        return "1h"
    return "1d"


GRANULARITY_MS: dict[Granularity, int] = {"5m": FIVE_MIN_MS, "1h": HOUR_MS, "1d": DAY_MS}


@dataclass(frozen=True, slots=True)
class CoinSpec:
    """One coin of ``/coins/list``. ``series`` keys the candle generator (its base asset
    picks the price level: BTC ~40,000, ETH ~2,500, others hashed); ``supply`` is the
    circulating supply behind the market cap; ``listed`` the first day with data."""

    id: str
    symbol: str
    name: str
    series: str
    supply: float
    listed: str = "2018-02-09"


DEFAULT_COINS: tuple[CoinSpec, ...] = (
    CoinSpec("bitcoin", "btc", "Bitcoin", "BTC/USD", 19_700_000.0),
    CoinSpec("ethereum", "eth", "Ethereum", "ETH/USD", 120_000_000.0),
    CoinSpec("ethereum-wormhole", "eth", "Ethereum (Wormhole)", "WETHW/USD", 60_000.0,
             listed="2021-09-01"),
    CoinSpec("solana", "sol", "Solana", "SOL/USD", 440_000_000.0, listed="2020-04-11"),
)
"""Symbols are not unique on CoinGecko (many bridged and copy-cat tokens share a ticker):
``eth`` is deliberately shared by two ids so symbol mapping meets an ambiguous symbol."""


@dataclass(frozen=True, slots=True)
class KeySpec:
    """An API key, its plan and its per-minute budget.

    ``per_minute`` is what the plan advertises (the ``x-ratelimit-limit`` header);
    ``enforced_per_minute`` what the sim actually allows (None: the advertised figure).
    A smaller enforced figure models a budget shared with another program, or a stricter
    endpoint: the headers still promise the advertised one.
    """

    key: str
    tier: Tier = "demo"
    per_minute: int | None = None
    enforced_per_minute: int | None = None

    @property
    def host(self) -> Host:
        return "demo" if self.tier == "demo" else "pro"

    @property
    def advertised(self) -> int:
        if self.per_minute is not None:
            return self.per_minute
        return PUBLISHED_PER_MINUTE[self.tier] or ENTERPRISE_PER_MINUTE

    @property
    def enforced(self) -> int:
        return self.enforced_per_minute if self.enforced_per_minute is not None else self.advertised

    @property
    def history_days(self) -> int | None:
        return DEMO_HISTORY_DAYS if self.tier == "demo" else None


@dataclass(frozen=True, slots=True)
class CoinGeckoSpec:
    """The coins, the keys, the keyless budget and the fault knobs of one sim."""

    coins: tuple[CoinSpec, ...] = DEFAULT_COINS
    keys: tuple[KeySpec, ...] = field(default_factory=lambda: (
        KeySpec("CG-demo-key", "demo"), KeySpec("CG-pro-key", "analyst")))
    keyless_per_minute: int | None = KEYLESS_PER_MINUTE
    """Keyless calls on the demo host and their budget; None refuses them (401, 10002)."""
    window_s: float = 60.0
    """Fixed windows aligned to the minute ([errors] reset header shows a whole minute)."""
    point_jitter_ms: int = 30_000
    """5-minutely and hourly points sit up to this much after their slot (see model)."""
    slow_s: float = 2.0
    vs_currencies: tuple[str, ...] = ("usd",)

    def coin(self, coin_id: str) -> CoinSpec | None:
        for c in self.coins:
            if c.id == coin_id:
                return c
        return None

    def key(self, key: str) -> KeySpec | None:
        for k in self.keys:
            if k.key == key:
                return k
        return None
