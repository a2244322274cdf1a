"""Candle and account-dataset stores behind one interface."""

from candlekeep.stores.base import SeriesSpan, Store

__all__ = ["SeriesSpan", "Store"]
