"""Which archive files exist: the Binance public-data availability tracker.

One row per (market, date, symbol) says whether that symbol's daily file is published, with
its size and Last-Modified; probes, validators and queries live in this package.
"""
