"""Faults: a 5xx or a truncated reply that outlasts the retries fails the run naming the
account and dataset, leaves that cursor at the last durable write, lets every other pull
run, and a rerun completes without duplicates; a cursor behind the fills horizon warns."""

from __future__ import annotations

from candlekeep.core.timeframes import DAY_MS
from candlekeep.sim.hyperliquid.spec import AccountSpec, HyperliquidSpec
from tests.accounts.conftest import (
    ALICE,
    BOB,
    FILL_COLUMNS,
    FUNDING_COLUMNS,
    IDLE,
    NOW,
    START,
    UNLIMITED,
    HlFactory,
    ds,
    fill_truth,
    funding_truth,
    rows,
)

ATTEMPTS = 3  # the config's max_attempts


async def test_a_5xx_mid_pagination_fails_that_pull_only_and_a_rerun_completes(
        make_hl: HlFactory) -> None:
    hl = make_hl()
    # Alice's first funding page is answered, then every attempt at her second gets a 503
    # (concurrency 1: accounts in config order, so the faults are hers).
    hl.sim.force("slow", info_type="userFunding", delay_s=0.0)
    hl.sim.force("503", ATTEMPTS, info_type="userFunding")
    res, error = await hl.run(since=START, concurrency=1)
    assert error is not None and not res.ok
    assert len(res.errors) == 1
    assert res.errors[0].startswith("account alice funding: ")
    assert "HTTP 503" in res.errors[0] and f"after {ATTEMPTS} attempts" in res.errors[0]
    assert f"account alice funding: {res.errors[0].split(': ', 1)[1]}" in error

    truth = hl.sim.funding(ALICE, START)
    first_page = truth[:500]
    stored = rows(hl.stored(ds.FUNDING_PAYMENTS, ALICE), FUNDING_COLUMNS)
    assert stored == funding_truth(first_page), "the durable page, and only it"
    assert hl.cursor(ALICE, "funding") == first_page[-1].time, \
        "the cursor is where the durable write ended, not past it"
    # Everything else ran: alice's other datasets, bob's and idle's.
    assert rows(hl.stored(ds.FILLS, ALICE), FILL_COLUMNS) == fill_truth(hl.sim.fills(ALICE))
    assert rows(hl.stored(ds.FUNDING_PAYMENTS, BOB), FUNDING_COLUMNS) == funding_truth(
        hl.sim.funding(BOB, START))
    assert hl.stored(ds.ACCOUNT_SNAPSHOTS, IDLE).num_rows == 1

    await hl.ok(datasets=["funding"])
    stored = rows(hl.stored(ds.FUNDING_PAYMENTS, ALICE), FUNDING_COLUMNS)
    assert stored == funding_truth(hl.sim.funding(ALICE, START))
    assert len(stored) == len(set(stored)) == len(truth), "no duplicates"


async def test_a_truncated_first_page_leaves_the_cursor_untouched(make_hl: HlFactory) -> None:
    hl = make_hl()
    await hl.ok(accounts=["alice"], datasets=["fills"], since=START)
    cursor = hl.cursor(ALICE, "fills")
    held = hl.stored(ds.FILLS, ALICE).num_rows
    hl.set_now(NOW + DAY_MS)
    hl.sim.force("truncate", ATTEMPTS, info_type="userFillsByTime")
    res, error = await hl.run(accounts=["alice"], datasets=["fills"])
    assert error is not None and res.errors[0].startswith("account alice fills: ")
    assert "truncated" in res.errors[0] and f"after {ATTEMPTS} attempts" in res.errors[0]
    assert hl.cursor(ALICE, "fills") == cursor
    assert hl.stored(ds.FILLS, ALICE).num_rows == held

    res = await hl.ok(accounts=["alice"], datasets=["fills"])
    assert rows(hl.stored(ds.FILLS, ALICE), FILL_COLUMNS) == fill_truth(hl.sim.fills(ALICE))
    assert res.details["accounts"]["alice"]["fills"]["rows"] == len(
        hl.sim.fills(ALICE)) - held


async def test_a_cursor_behind_the_fills_horizon_warns(make_hl: HlFactory) -> None:
    busy = AccountSpec(ALICE, fills_per_day=2000, ledger_per_day=0, start=NOW - 9 * DAY_MS)
    hl = make_hl(HyperliquidSpec(accounts=(busy,), weight_limit=UNLIMITED))
    hl.set_now(NOW - 6 * DAY_MS)
    first = await hl.ok(accounts=["alice"], datasets=["fills"])
    assert not first.warnings
    held = hl.stored(ds.FILLS, ALICE).num_rows
    hl.set_now(NOW)
    cursor = hl.cursor(ALICE, "fills")
    assert cursor is not None
    behind = [f for f in hl.sim.fills(ALICE) if f.time >= cursor]
    assert len(behind) > 10_000, "more new fills than the exchange serves"

    res = await hl.ok(accounts=["alice"], datasets=["fills"])
    assert len(res.warnings) == 1
    assert res.warnings[0].startswith("account alice fills: 10000 fills since ")
    assert "may be lost" in res.warnings[0]
    stored = hl.stored(ds.FILLS, ALICE)
    assert stored.num_rows == held + 10_000
    assert set(fill_truth(hl.sim.reachable_fills(ALICE))) <= set(rows(stored, FILL_COLUMNS))
