"""Candle and account-dataset stores behind one interface.

Import from the submodules: this package file stays empty so that importing one light
module (a constant, a type) never drags in pyarrow, SQLAlchemy or DuckDB.
"""
