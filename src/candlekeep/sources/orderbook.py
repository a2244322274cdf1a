"""An order book as a source returns it: bids and asks as (n, 2) ``[price, quantity]``
float arrays with quantities in the base currency. Parsing replies into that shape is the
sources' business; the metrics over it (spread, depth) are ``scans.orderbook``'s."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def levels(rows: Any) -> F64:
    """A reply's ``[[price, qty, ...], ...]`` (numbers or decimal strings) as an (n, 2)
    float array; ValueError when the rows are not that shape."""
    if rows is None:
        raise ValueError("no levels")
    arr = np.asarray(rows, dtype=np.float64)
    if arr.size == 0:
        return np.empty((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"levels of shape {arr.shape}, expected [[price, qty], ...]")
    return arr[:, :2]


def in_base_units(rows: F64, contract_size: float | None, inverse: bool) -> F64:
    """Levels whose quantities count contracts, with quantities in the base currency, so
    ``price x quantity`` is the quote value everywhere: a linear contract holds
    ``contract_size`` base (OKX BTC-USDT-SWAP: 0.01 BTC), an inverse one is worth
    ``contract_size`` quote (Binance COIN-M BTC: 100 USD), i.e. ``contract_size / price``
    base. ``contract_size`` None (spot) leaves the levels as they are."""
    if contract_size is None:
        return rows
    scale = contract_size / rows[:, 0] if inverse else contract_size
    return np.column_stack([rows[:, 0], rows[:, 1] * scale])


__all__ = ["F64", "in_base_units", "levels"]
