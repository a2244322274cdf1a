"""Sections over a store's dataset (``store_rows``): a dataset written to the DuckDB store,
read for the report's window through the Store interface, rendered in the mail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from candlekeep.config import load_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.datasets import Dataset
from candlekeep.core.timeutil import fmt_ms
from candlekeep.jobs.runtime import Runtime
from candlekeep.reports import sections
from candlekeep.reports.mailer import send_report
from candlekeep.reports.sections import Column, Format, Section, register_section
from candlekeep.reports.store_rows import store_rows
from tests.reports.conftest import DAY, Inbox, config_dict

HOUR = 3_600_000
NOW = int(time.time() * 1000) // DAY * DAY + DAY // 2
POSITIONS = Dataset("test_positions", pa.schema([
    pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("account", pa.string(), nullable=False),
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("qty", pa.float64()),
    pa.field("notional", pa.decimal128(18, 2)),
    pa.field("hedged", pa.bool_()),
]), key=("account", "symbol", "ts"), time="ts")
ROWS = [  # (hours before NOW, account, symbol, qty, notional, hedged)
    (2, "desk", "BTC/USDT", 1.5, Decimal("150000.25"), True),
    (1, "desk", "ETH/USDT", -3.0, Decimal("-9000.50"), False),
    (30, "desk", "SOL/USDT", 10.0, Decimal("1500.00"), True),  # before the 24 h window
    (-1, "desk", "XRP/USDT", 5.0, Decimal("10.00"), None),  # after now
    (1.5, "other", "BTC/USDT", 0.5, None, None),  # another account
]


@pytest.fixture
def store_sections() -> Iterator[None]:
    register_section(Section(
        name="positions", title="Desk positions",
        columns=(Column("time", Format.TIME), Column("symbol"), Column("qty"),
                 Column("notional"), Column("hedged")),
        rows=store_rows("main", POSITIONS, columns=["ts", "symbol", "qty", "notional",
                                                    "hedged"],
                        where={"account": "desk"}, newest_first=True)))
    register_section(Section(
        name="first_positions", title="First two positions",
        columns=(Column("symbol"), Column("qty")),
        rows=store_rows("main", "test_positions", columns=["symbol", "qty"], limit=2)))
    register_section(Section(name="trades", title="Trades", columns=(Column("x"),),
                             rows=store_rows("main", "test_tradez")))
    register_section(Section(name="elsewhere", title="Elsewhere", columns=(Column("x"),),
                             rows=store_rows("nowhere", POSITIONS)))
    yield
    for name in ("positions", "first_positions", "trades", "elsewhere"):
        sections._SECTIONS.pop(name)


def _table() -> pa.Table:
    cols = list(zip(*ROWS, strict=True))
    return pa.table({
        "ts": pa.array([NOW - int(h * HOUR) for h in cols[0]], pa.timestamp("ms", tz="UTC")),
        "account": cols[1], "symbol": cols[2], "qty": cols[3],
        "notional": pa.array(cols[4], pa.decimal128(18, 2)), "hedged": cols[5]},
        schema=POSITIONS.schema)


def _table_rows(text: str, title: str) -> list[str]:
    """The rows of the plain-text table under ``title`` (after its header and rule)."""
    lines = text.split(f"\n{title}\n", 1)[1].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("-"))  # the header's rule
    rows = lines[start + 1:]
    return rows[:rows.index("")] if "" in rows else rows


@pytest.mark.usefixtures("store_sections")
async def test_a_section_reads_a_store_dataset_for_the_report_window(
        site: Path, inbox: Inbox) -> None:
    raw = config_dict(inbox.port)
    raw["reports"]["daily"]["sections"] = ["positions", "first_positions", "trades",
                                           "elsewhere"]
    config = site / "candlekeep.yaml"
    config.write_text(yaml.safe_dump(raw))
    rt = Runtime(load_config(config), clock=FakeClock(NOW))
    try:
        written = await asyncio.to_thread(rt.store("main").upsert, POSITIONS, _table())
        assert written == len(ROWS)
        out = await send_report(rt, "daily")
    finally:
        await rt.aclose()
    assert out.sent, out.error
    (got,) = inbox.messages
    plain = got.message.get_body(("plain",))
    assert plain is not None
    text = plain.get_content().replace("\r\n", "\n")

    assert [ln.split() for ln in _table_rows(text, "Desk positions")] == [
        [*fmt_ms(NOW - HOUR)[:16].split(), "ETH/USDT", "-3.0", "-9000.5", "false"],
        [*fmt_ms(NOW - 2 * HOUR)[:16].split(), "BTC/USDT", "1.5", "150000.25", "true"],
    ]  # newest first; neither the rows outside the window nor the other account's
    first = [ln.split() for ln in _table_rows(text, "First two positions")]
    assert first == [["BTC/USDT", "1.5"], ["BTC/USDT", "0.5"]]  # the window's earliest

    trades, elsewhere = out.problems
    assert trades.startswith("section trades: SectionError: store main has no dataset "
                             "'test_tradez' (its tables: ")
    assert "test_positions" in trades
    assert elsewhere.startswith("section elsewhere: ConfigError: ")
    assert "stores.nowhere: unknown store" in elsewhere
