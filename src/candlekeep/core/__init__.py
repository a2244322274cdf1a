"""Foundation shared by every layer: time, timeframes, series keys, Arrow schemas, errors.

Import from the submodules: this package file stays empty so that importing one light
module (a constant, a type) never drags in pyarrow, SQLAlchemy or DuckDB.
"""
