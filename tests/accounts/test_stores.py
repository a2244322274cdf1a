"""The core flow into PostgreSQL, and into a buffer store flushed to DuckDB."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from candlekeep.jobs.runner import build_params
from candlekeep.scheduler.manual import adhoc_spec
from candlekeep.scheduler.runpath import execute_attempt
from tests.accounts.conftest import (
    ALICE,
    BOB,
    FILL_COLUMNS,
    FUNDING_COLUMNS,
    LEDGER_COLUMNS,
    START,
    HlFactory,
    ds,
    fill_truth,
    funding_truth,
    ledger_truth,
    rows,
)


async def test_postgresql_first_run_equals_the_truth_second_writes_nothing(
        make_hl: HlFactory, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_session_url")
    hl = make_hl(stores={"pg": {"type": "postgresql", "dsn": url, "schema": "hl_accounts"}})
    await hl.ok(since=START, datasets=["orders", "fills", "funding", "ledger"])
    for address in (ALICE, BOB):
        assert rows(hl.stored(ds.FILLS, address, "pg"), FILL_COLUMNS) == fill_truth(
            hl.sim.fills(address))
        assert rows(hl.stored(ds.FUNDING_PAYMENTS, address, "pg"), FUNDING_COLUMNS) == \
            funding_truth(hl.sim.funding(address, START))
        assert rows(hl.stored(ds.LEDGER_UPDATES, address, "pg"), LEDGER_COLUMNS) == \
            ledger_truth(hl.sim.ledger(address, START))
    again = await hl.ok(datasets=["orders", "fills", "funding", "ledger"])
    assert again.rows_written == 0 and again.requests == 12


async def test_into_a_buffer_store_then_flushed(make_hl: HlFactory, tmp_path: Path) -> None:
    hl = make_hl(stores={
        "main": {"type": "duckdb", "path": str(tmp_path / "main.duckdb")},
        "buf": {"type": "buffer", "path": str(tmp_path / "buffer"), "targets": ["main"]}})
    res = await hl.ok(store="buf", accounts=["alice"], since=START)
    assert res.details["store"] == "buf"
    assert hl.stored(ds.FILLS).num_rows == 0, "nothing reaches the target before a flush"
    assert hl.cursor(ALICE, "fills", store="buf") is not None
    assert hl.cursor(ALICE, "fills", store="main") is None, "a cursor is per store"
    spec = adhoc_spec("flush", build_params("flush", {}), name="flush")
    attempt = await execute_attempt(hl.rt, spec, asyncio.Event())
    assert attempt.error is None
    assert rows(hl.stored(ds.FILLS, ALICE), FILL_COLUMNS) == fill_truth(hl.sim.fills(ALICE))
    assert hl.stored(ds.ACCOUNT_SNAPSHOTS, ALICE).num_rows == 1
