"""candlekeep: keeps crypto market data complete, fresh and correct on a schedule."""

__version__ = "0.1.0"
