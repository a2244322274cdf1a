"""Exchange adapters: HTTP details underneath, validated Arrow candle batches out.

Import from the submodules: this package file stays empty so that importing one light
module (a constant, a type) never drags in pyarrow, SQLAlchemy or DuckDB.
"""
