"""Operational state: runs, gaps, checkpoints. SQLite by default, PostgreSQL for several nodes."""

from candlekeep.state.db import GapRow, RunRow, StateDB

__all__ = ["GapRow", "RunRow", "StateDB"]
