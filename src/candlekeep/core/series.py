"""The identity of a candle series."""

from __future__ import annotations

from typing import NamedTuple


class SeriesKey(NamedTuple):
    """``(source, symbol, timeframe)``: ``source`` is the configured source name, not the
    exchange id, so a testnet and a mainnet source of one exchange never mix."""

    source: str
    symbol: str
    timeframe: str

    def __str__(self) -> str:
        return f"{self.source}:{self.symbol}:{self.timeframe}"
