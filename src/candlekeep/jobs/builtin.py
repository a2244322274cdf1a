"""Importing this module registers every built-in job type."""

from candlekeep.jobs import backfill, command, flush, gaps, ingest, table_sync  # noqa: F401
