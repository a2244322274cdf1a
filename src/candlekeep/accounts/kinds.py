"""The pulls a ``hyperliquid_accounts`` run makes, by name (kept free of pyarrow: the job's
params name them, and registering job types must stay light)."""

from __future__ import annotations

from enum import StrEnum


class Pull(StrEnum):
    """What a run pulls per account (the job's ``datasets`` names these), in run order."""

    SNAPSHOTS = "snapshots"
    """clearinghouseState: account_snapshots and positions_snapshots."""
    OPEN_ORDERS = "open_orders"
    """frontendOpenOrders: open_orders_snapshots."""
    ORDERS = "orders"
    """historicalOrders: orders with their latest status."""
    FILLS = "fills"
    """userFillsByTime, from a cursor: fills."""
    FUNDING = "funding"
    """userFunding, from a cursor: funding_payments."""
    LEDGER = "ledger"
    """userNonFundingLedgerUpdates, from a cursor: ledger_updates."""


class MarketPull(StrEnum):
    """Market data, per source, with ``markets: true``."""

    ASSET_CONTEXTS = "asset_contexts"
    FUNDING_RATES = "funding_rates"


INCREMENTAL = (Pull.FILLS, Pull.FUNDING, Pull.LEDGER)
"""The pulls paged forward from a cursor."""
