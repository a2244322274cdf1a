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
    orderbook,
    providers_health,
    regime,
    report,
    scan,
    table_sync,
)
