"""The hyperliquid_accounts job against the sim over HTTP, into DuckDB: what is stored equals
the sim's truth; cursors make a second run ask once per dataset and write nothing; a moved
clock fetches only what is new; two accounts never collapse; an idle account is empty."""

from __future__ import annotations

from collections import Counter

import pyarrow.compute as pc

from candlekeep.core.timeframes import DAY_MS, HOUR_MS
from candlekeep.core.timeutil import fmt_ms, to_ms
from candlekeep.sim.hyperliquid.spec import AccountSpec, HyperliquidSpec
from tests.accounts.conftest import (
    ALICE,
    BOB,
    FILL_COLUMNS,
    FUNDING_COLUMNS,
    IDLE,
    LEDGER_COLUMNS,
    NOW,
    ORDER_COLUMNS,
    START,
    UNLIMITED,
    Hl,
    HlFactory,
    ds,
    fill_truth,
    funding_truth,
    ledger_truth,
    order_truth,
    rows,
)

HISTORY_TYPES = ("userFillsByTime", "userFunding", "userNonFundingLedgerUpdates")


def assert_truth(hl: Hl, address: str, since: int = START) -> None:
    sim, now = hl.sim, hl.clock.now_ms()
    assert rows(hl.stored(ds.FILLS, address), FILL_COLUMNS) == fill_truth(sim.fills(address))
    assert rows(hl.stored(ds.FUNDING_PAYMENTS, address), FUNDING_COLUMNS) == funding_truth(
        sim.funding(address, since))
    assert rows(hl.stored(ds.LEDGER_UPDATES, address), LEDGER_COLUMNS) == ledger_truth(
        sim.ledger(address, since))
    assert rows(hl.stored(ds.ORDERS, address), ORDER_COLUMNS) == order_truth(
        sim.orders(address), now)


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


async def test_first_run_stores_the_truth_second_run_asks_once_and_writes_nothing(
        hl: Hl) -> None:
    res = await hl.ok(since=START)
    for address in (ALICE, BOB):
        assert_truth(hl, address)
    alice = res.details["accounts"]["alice"]
    assert alice["funding"]["requests"] >= 3, "funding took several 500-row pages"
    assert alice["fills"]["cursor"] == fmt_ms(hl.sim.fills(ALICE)[-1].time + 1)
    assert not res.warnings

    # Snapshots: the account and its positions at the exchange's time, open orders with them.
    snap = hl.stored(ds.ACCOUNT_SNAPSHOTS, ALICE)
    assert snap.num_rows == 1
    state = hl.sim.account_state(ALICE)
    assert snap["account_value"][0].as_py() == float(state["marginSummary"]["accountValue"])
    assert snap["snapshot_ts"].cast("int64")[0].as_py() == state["time"]
    positions = hl.stored(ds.POSITIONS_SNAPSHOTS, ALICE)
    assert sorted(zip(positions["coin"].to_pylist(), positions["szi"].to_pylist(),
                      strict=True)) == sorted((p.coin, p.szi) for p in hl.sim.positions(ALICE))
    assert set(positions["snapshot_ts"].cast("int64").to_pylist()) == {state["time"]}
    open_orders = hl.stored(ds.OPEN_ORDERS_SNAPSHOTS, ALICE)
    assert sorted(open_orders["oid"].to_pylist()) == sorted(
        o.oid for o in hl.sim.open_orders(ALICE))

    before = hl.requests()
    again = await hl.ok(datasets=["orders", "fills", "funding", "ledger"])
    assert again.rows_written == 0
    assert delta(before, hl.requests()) == {
        "historicalOrders": 3, "userFillsByTime": 3, "userFunding": 3,
        "userNonFundingLedgerUpdates": 3}
    assert again.requests == 12
    for name in ("alice", "bob", "idle"):
        pulled = again.details["accounts"][name]
        assert pulled["orders"]["rows"] == 0 and pulled["orders"]["requests"] == 1
        for pull in ("fills", "funding", "ledger"):
            assert pulled[pull] | {"cursor": None} == {
                "rows": 0, "requests": 1, "fetched": 0, "cursor": None}, (name, pull)


async def test_a_moved_clock_fetches_only_the_new_events(hl: Hl) -> None:
    await hl.ok(since=START, datasets=["fills", "funding", "ledger", "orders"])
    old_now = hl.clock.now_ms()
    fills_cursor = hl.cursor(ALICE, "fills")
    hl.set_now(old_now + 9 * HOUR_MS)
    before = hl.requests()
    res = await hl.ok(datasets=["fills", "funding", "ledger", "orders"])
    new_fills = [f for f in hl.sim.fills(ALICE) if f.time > old_now]
    new_funding = hl.sim.funding(ALICE, old_now + 1)
    assert new_fills and new_funding
    alice = res.details["accounts"]["alice"]
    assert alice["fills"]["fetched"] == alice["fills"]["rows"] == len(new_fills)
    assert alice["funding"]["fetched"] == len(new_funding)
    assert hl.cursor(ALICE, "fills") > (fills_cursor or 0)
    assert delta(before, hl.requests()) == {
        "historicalOrders": 3, "userFillsByTime": 3, "userFunding": 3,
        "userNonFundingLedgerUpdates": 3}
    for address in (ALICE, BOB):
        assert_truth(hl, address)
    # Orders that were open and have since filled or been cancelled carry the new status.
    changed = [o for o in hl.sim.orders(ALICE)
               if o.timestamp <= old_now < o.resolved_ms <= hl.clock.now_ms()]
    assert changed, "some order changed status in those 9 hours"
    assert 0 < alice["orders"]["rows"] < alice["orders"]["fetched"]


async def test_two_accounts_on_the_same_coins_never_collapse(hl: Hl) -> None:
    await hl.ok(since=START)
    funding = hl.stored(ds.FUNDING_PAYMENTS)
    alice, bob = hl.sim.funding(ALICE, START), hl.sim.funding(BOB, START)
    shared = {(p.time // HOUR_MS, p.coin) for p in alice} & {
        (p.time // HOUR_MS, p.coin) for p in bob}
    assert shared, "the two accounts are paid funding on the same coins in the same hours"
    assert funding.num_rows == len(alice) + len(bob)
    assert Counter(funding["address"].to_pylist()) == {ALICE: len(alice), BOB: len(bob)}
    fills = hl.stored(ds.FILLS)
    assert fills.num_rows == len(hl.sim.fills(ALICE)) + len(hl.sim.fills(BOB))
    ledger = hl.stored(ds.LEDGER_UPDATES)
    assert ledger.num_rows == len(hl.sim.ledger(ALICE, START)) + len(hl.sim.ledger(BOB, START))
    assert set(hl.stored(ds.ACCOUNT_SNAPSHOTS)["account"].to_pylist()) == {
        "alice", "bob", "idle"}


async def test_an_idle_account_has_empty_results_not_errors(hl: Hl) -> None:
    res = await hl.ok(accounts=["idle"], since=START)
    assert not res.warnings
    for dataset in (ds.FILLS, ds.FUNDING_PAYMENTS, ds.LEDGER_UPDATES, ds.ORDERS,
                    ds.POSITIONS_SNAPSHOTS, ds.OPEN_ORDERS_SNAPSHOTS):
        assert hl.stored(dataset).num_rows == 0, dataset.name
    snap = hl.stored(ds.ACCOUNT_SNAPSHOTS, IDLE)
    assert snap.num_rows == 1 and snap["account_value"][0].as_py() == 0.0
    assert res.rows_written == 1  # the snapshot saying it holds nothing
    assert hl.cursor(IDLE, "fills") is None


async def test_first_run_defaults_fills_from_the_horizon_the_rest_30_days(
        make_hl: HlFactory) -> None:
    old = to_ms("2024-10-25")
    hl = make_hl(HyperliquidSpec(accounts=(AccountSpec(ALICE, fills_per_day=10, start=old),),
                                 weight_limit=UNLIMITED))
    res = await hl.ok(accounts=["alice"], datasets=["fills", "funding", "ledger"])
    month_ago = NOW - 30 * DAY_MS
    assert month_ago > old, "the account is older than 30 days"
    assert rows(hl.stored(ds.FILLS, ALICE), FILL_COLUMNS) == fill_truth(hl.sim.fills(ALICE))
    assert rows(hl.stored(ds.FUNDING_PAYMENTS, ALICE), FUNDING_COLUMNS) == funding_truth(
        hl.sim.funding(ALICE, month_ago))
    assert rows(hl.stored(ds.LEDGER_UPDATES, ALICE), LEDGER_COLUMNS) == ledger_truth(
        hl.sim.ledger(ALICE, month_ago))
    assert not res.warnings


async def test_dry_run_says_what_from_where_and_writes_nothing(hl: Hl) -> None:
    await hl.ok(accounts=["alice"], datasets=["fills"], since=START)
    res, error = await hl.run(dry_run=True, accounts=["alice", "bob"], markets=True,
                              coins=["BTC"])
    assert error is None
    plan = res.details["plan"]
    cursor = fmt_ms(hl.cursor(ALICE, "fills") or 0)
    assert plan[0].startswith(f"account alice ({ALICE}) via source hl ({hl.url}/info)") \
        or plan[0].startswith(f"account alice ({ALICE}) via source hl ({hl.url})")
    assert f"fills from {cursor} (cursor)" in plan[0]
    assert "funding from " in plan[0] and "(30 days back)" in plan[0]
    assert "into store main" in plan[0]
    assert "fills from the exchange's horizon" in plan[1]
    assert "markets of source hl" in plan[2] and "funding_rates of BTC" in plan[2]
    assert hl.stored(ds.FUNDING_PAYMENTS).num_rows == 0


async def test_market_contexts_and_funding_rates_from_their_cursors(hl: Hl) -> None:
    res = await hl.ok(accounts=["idle"], datasets=["snapshots"], markets=True,
                      coins=["BTC", "ETH"])
    ctx = hl.stored(ds.ASSET_CTX_SNAPSHOTS)
    assert sorted(ctx["coin"].to_pylist()) == ["BTC", "ETH", "SOL", "XRP"]
    rates = hl.stored(ds.FUNDING_RATES)
    month_ago = NOW - 30 * DAY_MS
    for coin in ("BTC", "ETH"):
        mine = rates.filter(pc.equal(rates["coin"], coin))
        truth = hl.sim.funding_history(coin, month_ago)
        assert mine["time"].cast("int64").to_pylist() == [t["time"] for t in truth]
        assert mine["funding_rate"].to_pylist() == [float(t["fundingRate"]) for t in truth]
    assert res.details["markets"]["hl"]["funding_rates BTC"]["rows"] == 30 * 24
    # 720 rates, 500 a page; BTC's also loaded the source's markets (meta, spotMeta).
    assert res.details["markets"]["hl"]["funding_rates ETH"]["requests"] == 2

    before = hl.requests()
    again = await hl.ok(accounts=["idle"], datasets=["snapshots"], markets=True,
                        coins=["BTC", "ETH"])
    assert delta(before, hl.requests()) == {"clearinghouseState": 1, "metaAndAssetCtxs": 1,
                                            "fundingHistory": 2}
    markets = again.details["markets"]["hl"]
    assert markets["funding_rates BTC"]["rows"] == markets["funding_rates ETH"]["rows"] == 0
