"""A simulated exchange: deterministic candles with scripted holes, late data, rate limits
and faults, in-process (SimExchange) and over HTTP in Binance's REST format (server).

Import from the submodules: this package file stays empty so that importing one light
module (a constant, a type) never drags in pyarrow, SQLAlchemy or DuckDB.
"""
