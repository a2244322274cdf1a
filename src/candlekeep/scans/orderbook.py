"""One order-book snapshot's metrics, from the book's price and quantity columns.

Pure and vectorised (numpy over the levels): the best bid and ask, mid, the spread in basis
points of mid, and the quote value (price times quantity, summed) of each side within
``DEPTH_BAND`` of mid, a level exactly at the band's edge included. ``depth_quote`` is the
thinner side: what a market order either way can rely on. Depth counts only the levels the
reply held, so a short book (a small ``limit``) understates it.

A book that is empty on either side, crossed or locked (best bid ≥ best ask), or holds a
price or quantity that is not a positive finite number is rejected with a BadReplyError:
nothing of it is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from candlekeep.core.errors import BadReplyError
from candlekeep.scans.datasets import DEPTH_BAND, ORDERBOOK_SNAPSHOTS
from candlekeep.sources.orderbook import F64

EDGE_TOLERANCE = 1e-9
"""Relative slack at the band's edge, so a level exactly 2 % from mid counts although
``mid * 0.98`` is not exact in binary."""


def snapshot_row(source: str, symbol: str, ts_ms: int, bids: F64, asks: F64, *,
                 ingested_ms: int, band: float = DEPTH_BAND) -> dict[str, Any]:
    """The ``ORDERBOOK_SNAPSHOTS`` row of one book (levels in any order);
    BadReplyError when the book is unusable."""
    _check(source, symbol, "bids", bids)
    _check(source, symbol, "asks", asks)
    bid = float(bids[:, 0].max())
    ask = float(asks[:, 0].min())
    if bid >= ask:
        raise BadReplyError(source, symbol, f"crossed book: best bid {bid:g} >= best ask "
                                            f"{ask:g}")
    mid = (bid + ask) / 2.0
    reach = band * mid * (1.0 + EDGE_TOLERANCE)
    bid_in = mid - bids[:, 0] <= reach
    ask_in = asks[:, 0] - mid <= reach
    bid_depth = float(np.dot(bids[bid_in, 0], bids[bid_in, 1]))
    ask_depth = float(np.dot(asks[ask_in, 0], asks[ask_in, 1]))
    return {"source": source, "symbol": symbol, "ts": ts_ms, "bid": bid, "ask": ask,
            "mid": mid, "spread_bps": (ask - bid) / mid * 1e4,
            "bid_depth_quote": bid_depth, "ask_depth_quote": ask_depth,
            "depth_quote": min(bid_depth, ask_depth),
            "bid_levels": int(bids.shape[0]), "ask_levels": int(asks.shape[0]),
            "ingested_at": ingested_ms}


def snapshots_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows of ``snapshot_row`` as one ``ORDERBOOK_SNAPSHOTS`` table."""
    return pa.Table.from_pylist(list(rows), schema=ORDERBOOK_SNAPSHOTS.schema)


def _check(source: str, symbol: str, side: str, rows: F64) -> None:
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise BadReplyError(source, symbol, f"empty book: no {side}")
    if not np.isfinite(rows).all():
        raise BadReplyError(source, symbol, f"{side}: a price or quantity that is not finite")
    if not (rows > 0).all():
        raise BadReplyError(source, symbol, f"{side}: a price or quantity not above 0")


__all__ = ["EDGE_TOLERANCE", "snapshot_row", "snapshots_table"]
