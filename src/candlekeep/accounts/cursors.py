"""Where each account's incremental pulls resume: positions in the state DB's checkpoints.

The checkpoints table already is the state DB's record of "where the next fetch starts",
written in its own transaction after the data it covers, shared by every node of a cluster,
and listed and cleared by job; a table of our own would repeat all of that. Its columns are
named for candle series, so a cursor is spelled in them as:

- job: ``hyperliquid_accounts`` for every job of this type (renaming a job keeps its
  cursors; two jobs over one account share them, which is right: they write the same rows);
- source: the configured source name (a testnet and a mainnet wallet of one address differ);
- symbol: ``{address}@{store}`` (or ``{coin}@{store}`` for market data): a cursor says what
  one store holds, so pointing the job at another store starts that store afresh;
- timeframe: the dataset (``fills``, ``funding``, ``ledger``, ``orders``, ``frates``).

A position is epoch milliseconds: the time to ask from next, inclusive.
"""

from __future__ import annotations

from candlekeep.accounts.kinds import MarketPull, Pull
from candlekeep.core.series import SeriesKey

CHECKPOINT_JOB = "hyperliquid_accounts"

CURSOR_TAGS: dict[str, str] = {
    Pull.ORDERS: "orders", Pull.FILLS: "fills", Pull.FUNDING: "funding",
    Pull.LEDGER: "ledger", MarketPull.FUNDING_RATES: "frates",
}
"""The pulls kept by a cursor, and the checkpoints' ``timeframe`` each is stored under."""


def cursor_key(source: str, subject: str, store: str, tag: str) -> SeriesKey:
    """The checkpoint of ``tag`` (at most 10 characters) for an address or a coin."""
    if len(tag) > 10:
        raise ValueError(f"cursor tag {tag!r} is longer than the checkpoints' 10 characters")
    return SeriesKey(source, f"{subject}@{store}", tag)
