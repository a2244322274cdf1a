"""Importing this module registers every built-in job type."""

from candlekeep.jobs import (  # noqa: F401
    availability,
    backfill,
    coingecko,
    command,
    flush,
    freshness,
    gaps,
    hyperliquid_accounts,
    ingest,
    providers_health,
    report,
    table_sync,
)
