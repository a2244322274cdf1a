"""Exchange adapters: HTTP details underneath, validated Arrow candle batches out."""

from candlekeep.sources.base import MarketInfo, Source

__all__ = ["MarketInfo", "Source"]
