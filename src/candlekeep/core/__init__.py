"""Foundation shared by every layer: time, timeframes, series keys, Arrow schemas, errors."""

from candlekeep.core.clock import Clock, FakeClock, SystemClock
from candlekeep.core.errors import (
    BadReplyError,
    CandlekeepError,
    ConfigError,
    RateLimitedError,
    SourceError,
    TransientSourceError,
)
from candlekeep.core.schema import CANDLE_SCHEMA, empty_candles
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import TIMEFRAMES, Timeframe, parse_timeframe

__all__ = [
    "CANDLE_SCHEMA",
    "TIMEFRAMES",
    "BadReplyError",
    "CandlekeepError",
    "Clock",
    "ConfigError",
    "FakeClock",
    "RateLimitedError",
    "SeriesKey",
    "SourceError",
    "SystemClock",
    "Timeframe",
    "TransientSourceError",
    "empty_candles",
    "parse_timeframe",
]
