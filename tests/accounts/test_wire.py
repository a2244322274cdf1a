"""Hyperliquid replies as rows: the synthetic tid of a fill without one, and malformed
replies rejected naming the request type, the item and the field."""

from __future__ import annotations

import pytest

from candlekeep.accounts.wire import WireError, fill_rows, funding_rows, synthetic_tid
from candlekeep.sim.hyperliquid.records import Fill
from candlekeep.sim.hyperliquid.wire import fill_wire

FILL = Fill(coin="BTC", px=97000.0, sz=0.012, side="B", time=1_733_000_000_123,
            start_position=0.0, dir="Open Long", closed_pnl=0.0,
            hash="0x" + "ab" * 32, oid=123_456, crossed=True, fee=0.52, tid=987_654_321,
            builder_fee=None, sz_decimals=5, px_decimals=1)


def test_a_fill_without_tid_gets_a_stable_negative_synthetic_one() -> None:
    wire = fill_wire(FILL)
    del wire["tid"]
    [row] = fill_rows([wire])
    assert row["tid_synthetic"] is True
    assert row["tid"] < 0, "never equal to a real (positive) tid"
    assert fill_rows([dict(wire)])[0]["tid"] == row["tid"], "the same on every pull"
    other = dict(wire, sz="0.013")
    assert synthetic_tid(other) != row["tid"], "another fill, another key"
    again = dict(wire, time=FILL.time + 1)
    assert synthetic_tid(again) != row["tid"]

    [real] = fill_rows([fill_wire(FILL)])
    assert real["tid"] == FILL.tid and real["tid_synthetic"] is False
    assert (real["px"], real["sz"], real["side"], real["crossed"]) == (97000.0, 0.012, "B", True)


def test_malformed_replies_name_the_item_and_field() -> None:
    with pytest.raises(WireError, match=r"userFillsByTime: expected a list, got dict"):
        fill_rows({"error": "x"})
    bad = dict(fill_wire(FILL), px="n/a")
    with pytest.raises(WireError, match=r"userFillsByTime\[1\]: field 'px' is \"n/a\", "
                                        r"expected a number"):
        fill_rows([fill_wire(FILL), bad])
    with pytest.raises(WireError, match=r"userFunding\[0\].delta: field 'coin' is null"):
        funding_rows([{"time": 1, "hash": "0x0", "delta": {"type": "funding", "usdc": "1"}}])
