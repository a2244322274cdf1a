"""Where the archive keeps each kline file and its checksum.

Layout (binance/binance-public-data README):
``data/<market>/<monthly|daily>/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-<period>.zip``
with ``<period>`` ``YYYY-MM`` or ``YYYY-MM-DD`` and the checksum at ``<zip>.CHECKSUM``.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from urllib.parse import quote

DEFAULT_BASE_URL = "https://data.binance.vision"


class Market(StrEnum):
    """The archive's top-level market folders."""

    SPOT = "spot"
    USDM = "futures/um"
    COINM = "futures/cm"


_MARKETS: dict[tuple[str, str], Market] = {
    ("binance", "spot"): Market.SPOT,
    ("binance", "swap"): Market.USDM,
    ("binance", "future"): Market.USDM,
    ("binanceusdm", "swap"): Market.USDM,
    ("binanceusdm", "future"): Market.USDM,
    ("binancecoinm", "swap"): Market.COINM,
    ("binancecoinm", "future"): Market.COINM,
}


def archive_market(exchange: str, market_type: str) -> Market | None:
    """The archive folder holding a CCXT exchange's market type, None if it has none
    (``binance`` with ``swap`` means USDⓈ-M, as in CCXT's ``defaultType``)."""
    return _MARKETS.get((exchange, market_type))


def archive_exchanges() -> list[str]:
    """``exchange market_type`` pairs the archive serves, for error messages."""
    return [f"{e} {t}" for e, t in _MARKETS]


class Period(StrEnum):
    MONTHLY = "monthly"
    DAILY = "daily"


def day_ms(day: date) -> int:
    """Epoch ms of ``day`` 00:00 UTC."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


def ms_day(ts_ms: int) -> date:
    """The UTC date containing ``ts_ms``."""
    return datetime.fromtimestamp(ts_ms // 1000, tz=UTC).date()


def month_end(first: date) -> date:
    """First day of the month after the month starting at ``first``."""
    return first + timedelta(days=calendar.monthrange(first.year, first.month)[1])


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One kline ZIP: a market, an exchange symbol id (``BTCUSDT``, not the CCXT symbol),
    an interval, and the month (``day`` is its first day) or the day it covers."""

    market: Market
    symbol_id: str
    interval: str
    period: Period
    day: date

    def __post_init__(self) -> None:
        if self.period is Period.MONTHLY and self.day.day != 1:
            raise ValueError(f"a monthly file starts on the 1st, not {self.day}")

    @property
    def stem(self) -> str:
        stamp = (f"{self.day:%Y-%m}" if self.period is Period.MONTHLY
                 else f"{self.day:%Y-%m-%d}")
        return f"{self.symbol_id}-{self.interval}-{stamp}"

    @property
    def zip_name(self) -> str:
        return f"{self.stem}.zip"

    @property
    def csv_name(self) -> str:
        return f"{self.stem}.csv"

    @property
    def path(self) -> str:
        """URL path below the base, each segment percent-encoded (symbols may be non-ASCII)."""
        sym = quote(self.symbol_id, safe="")
        return (f"data/{self.market.value}/{self.period.value}/klines/{sym}/"
                f"{quote(self.interval, safe='')}/{quote(self.zip_name, safe='')}")

    def url(self, base_url: str = DEFAULT_BASE_URL) -> str:
        return f"{base_url.rstrip('/')}/{self.path}"

    def checksum_url(self, base_url: str = DEFAULT_BASE_URL) -> str:
        return f"{self.url(base_url)}.CHECKSUM"

    @property
    def start_ms(self) -> int:
        return day_ms(self.day)

    @property
    def end_ms(self) -> int:
        """End (exclusive) of the time the file covers: rows must open in [start, end)."""
        nxt = month_end(self.day) if self.period is Period.MONTHLY else self.day + timedelta(1)
        return day_ms(nxt)
