"""Operational state: runs, gaps, checkpoints. SQLite by default, PostgreSQL for several nodes.

Import from the submodules: this package file stays empty so that importing one light
module (a constant, a type) never drags in pyarrow, SQLAlchemy or DuckDB.
"""
