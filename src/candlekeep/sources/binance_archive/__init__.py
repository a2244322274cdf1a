"""Binance's public-data archive (data.binance.vision): file paths, parsing, and planning.

Client side only: which files cover a range, and how one downloaded ZIP becomes a verified
candle table. Downloading and the fallback to REST belong to the backfill wiring.
"""
