"""The records of an account's history, as the sim's truth functions return them.

Numbers are floats already rounded the way the wire shows them; ``wire`` turns each record
into Hyperliquid's JSON with ``fmt_num``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

Side = Literal["B", "A"]
OrderStatus = Literal["open", "filled", "canceled"]
ZERO_HASH = "0x" + "0" * 64
"""Funding payments carry a zero hash on Hyperliquid today."""


def tx_hash(*parts: object) -> str:
    """A 32-byte transaction hash, ``0x`` and 64 hex digits."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return "0x" + hashlib.blake2b(text, digest_size=32).hexdigest()


@dataclass(frozen=True, slots=True)
class Fill:
    """One fill as ``userFillsByTime`` reports it (numbers as floats, rounded as sent)."""

    coin: str
    px: float
    sz: float
    side: Side
    time: int
    start_position: float
    dir: str
    closed_pnl: float
    hash: str
    oid: int
    crossed: bool
    fee: float
    tid: int
    builder_fee: float | None  # absent from the wire when None
    sz_decimals: int
    px_decimals: int

    @property
    def signed_sz(self) -> float:
        return self.sz if self.side == "B" else -self.sz


@dataclass(frozen=True, slots=True)
class Order:
    """An order and its lifecycle: open from ``timestamp`` until ``resolved_ms``, then
    ``outcome`` (filled: its fills all happen at ``resolved_ms``)."""

    coin: str
    side: Side
    limit_px: float
    sz: float
    oid: int
    timestamp: int
    tif: str
    outcome: Literal["filled", "canceled"]
    resolved_ms: int
    sz_decimals: int
    px_decimals: int

    def status(self, now_ms: int) -> OrderStatus:
        return "open" if now_ms < self.resolved_ms else self.outcome

    def status_timestamp(self, now_ms: int) -> int:
        return self.timestamp if now_ms < self.resolved_ms else self.resolved_ms


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """An hourly funding payment on one position (usdc < 0: the account paid)."""

    time: int
    coin: str
    usdc: float
    szi: float
    funding_rate: float
    sz_decimals: int


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """A non-funding ledger update; ``delta`` is the wire object, ``perp_usdc`` its effect
    on the perp account's USDC."""

    time: int
    hash: str
    delta: dict[str, Any]
    perp_usdc: float


@dataclass(frozen=True, slots=True)
class Position:
    """An open position at some time."""

    coin: str
    szi: float
    entry_px: float
    cum_funding_all_time: float
    cum_funding_since_open: float
    cum_funding_since_change: float
    sz_decimals: int
    px_decimals: int


def fmt_num(x: float, decimals: int) -> str:
    """A number as Hyperliquid writes it: plain decimal, trailing zeros dropped, at least
    one digit after the point (``"26951.0"``, ``"0.001604"``)."""
    text = f"{x:.{decimals}f}"
    text = text.rstrip("0") if "." in text else text + "."  # "290", never "29"
    if text.endswith("."):
        text += "0"
    if text in ("-0.0", "-0"):
        return "0.0"
    return text
