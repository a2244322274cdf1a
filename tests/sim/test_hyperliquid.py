"""The sim's Hyperliquid ``POST /info`` over real HTTP, checked against the sim's truth.

The exchange clock is a FakeClock: "now", the rate-limit window and which events exist
only move when a test moves them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from candlekeep.core.clock import FakeClock
from candlekeep.core.timeframes import DAY_MS, HOUR_MS, MINUTE_MS
from candlekeep.core.timeutil import to_ms
from candlekeep.sim.exchange import SimExchange
from candlekeep.sim.hyperliquid.accounts import fmt_num
from candlekeep.sim.hyperliquid.app import HyperliquidSim
from candlekeep.sim.hyperliquid.spec import (
    AccountSpec,
    HyperliquidSpec,
    demo_spec,
    derive_addresses,
)
from candlekeep.sim.hyperliquid.wire import fill_wire, funding_wire, ledger_wire
from candlekeep.sim.server import run_in_thread

NOW = to_ms("2024-12-01T12:00:30Z")
START = to_ms("2024-11-01")


def make(spec: HyperliquidSpec | None = None, seed: int = 7, now: int = NOW) -> HyperliquidSim:
    ex = SimExchange(seed, clock=FakeClock(now), holes=None, transient=None)
    return HyperliquidSim(ex, spec or demo_spec(seed, 2, idle=1, start=START))


@pytest.fixture
def hl() -> HyperliquidSim:
    return make()


@pytest.fixture
def client(hl: HyperliquidSim) -> Iterator[httpx.Client]:
    with run_in_thread(hl.exchange, hyperliquid=hl) as url, httpx.Client(base_url=url) as c:
        yield c


def info(client: httpx.Client, body: dict[str, Any]) -> Any:
    r = client.post("/info", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def busy(hl: HyperliquidSim) -> str:
    return hl.spec.accounts[0].address


def idle(hl: HyperliquidSim) -> str:
    return hl.spec.accounts[-1].address


def page_forward(client: httpx.Client, body: dict[str, Any], start: int,
                 page: int) -> tuple[list[dict[str, Any]], int]:
    """Hyperliquid's paging: the next startTime is the last returned time (inclusive),
    duplicates dropped; stops at a short page. Returns (rows, requests)."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    requests = 0
    while True:
        got = info(client, {**body, "startTime": start})
        requests += 1
        assert len(got) <= page
        for row in got:
            key = json.dumps(row, sort_keys=True)
            if key not in seen:
                seen.add(key)
                rows.append(row)
        if len(got) < page:
            return rows, requests
        start = got[-1]["time"]


# ---------------------------------------------------------------------- markets


def test_meta_spot_meta_and_asset_contexts(hl: HyperliquidSim, client: httpx.Client) -> None:
    meta = info(client, {"type": "meta"})
    assert [u["name"] for u in meta["universe"]] == ["BTC", "ETH", "SOL", "XRP"]
    assert meta["universe"][0] == {"szDecimals": 5, "name": "BTC", "maxLeverage": 40,
                                   "marginTableId": 40}
    spot = info(client, {"type": "spotMeta"})
    assert [t["name"] for t in spot["tokens"]] == ["USDC", "PURR", "HYPE", "JEFF"]
    assert [(u["name"], u["index"], u["tokens"]) for u in spot["universe"]] == [
        ("PURR/USDC", 0, [1, 0]), ("@1", 1, [2, 0]), ("@2", 2, [3, 0])]
    universe, ctxs = info(client, {"type": "metaAndAssetCtxs"})
    assert universe == meta and len(ctxs) == 4
    btc = ctxs[0]
    assert set(btc) == {"dayNtlVlm", "funding", "impactPxs", "markPx", "midPx",
                        "openInterest", "oraclePx", "premium", "prevDayPx"}
    assert all(isinstance(v, str) for k, v in btc.items() if k != "impactPxs")
    d = hl.markets.decimals("BTC/USDC:USDC")
    assert btc["markPx"] == fmt_num(hl.markets.price("BTC/USDC:USDC", NOW), d)
    assert btc["prevDayPx"] == fmt_num(hl.markets.price("BTC/USDC:USDC", NOW - DAY_MS), d)
    # The mark is the open of the current 1m candle: candles and marks agree.
    candle = info(client, {"type": "candleSnapshot", "req": {
        "coin": "BTC", "interval": "1m", "startTime": NOW, "endTime": NOW}})
    assert candle[0]["o"] == btc["markPx"]


def test_candle_snapshot_matches_the_generator(hl: HyperliquidSim, client: httpx.Client) -> None:
    start = NOW - 10 * HOUR_MS + 7  # inside a candle: the candle holding startTime comes back
    rows = info(client, {"type": "candleSnapshot", "req": {
        "coin": "ETH", "interval": "1h", "startTime": start, "endTime": NOW}})
    truth = hl.candles("ETH", "1h", start)
    assert [r["t"] for r in rows] == truth.ts.tolist()
    assert rows[0]["t"] == start - start % HOUR_MS and rows[-1]["t"] == NOW - NOW % HOUR_MS
    d = hl.markets.decimals("ETH/USDC:USDC")
    for r, o, h, lo, c in zip(rows, truth.open, truth.high, truth.low, truth.close,
                              strict=True):
        assert (r["o"], r["h"], r["l"], r["c"]) == tuple(fmt_num(x, d) for x in (o, h, lo, c))
        assert r["T"] == r["t"] + HOUR_MS - 1 and r["s"] == "ETH" and r["i"] == "1h"
        assert isinstance(r["v"], str) and isinstance(r["n"], int)
    # Spot by @index and by PURR/USDC, priced by the generator's spot symbols.
    spot = info(client, {"type": "candleSnapshot", "req": {
        "coin": "@1", "interval": "1d", "startTime": NOW - 3 * DAY_MS, "endTime": NOW}})
    assert [r["s"] for r in spot] == ["@1"] * 4
    assert spot[0]["o"] == fmt_num(hl.markets.generator.arrays(
        "HYPE/USDC", "1d", np.array([spot[0]["t"]])).open[0], hl.markets.decimals("HYPE/USDC"))
    purr = info(client, {"type": "candleSnapshot", "req": {
        "coin": "PURR/USDC", "interval": "15m", "startTime": NOW - HOUR_MS, "endTime": NOW}})
    assert len(purr) == 5
    assert info(client, {"type": "candleSnapshot", "req": {
        "coin": "NOPE", "interval": "1m", "startTime": 0, "endTime": NOW}}) == []


def test_only_the_most_recent_5000_candles_exist(hl: HyperliquidSim,
                                                 client: httpx.Client) -> None:
    rows = info(client, {"type": "candleSnapshot", "req": {
        "coin": "BTC", "interval": "1m", "startTime": NOW - 30 * DAY_MS, "endTime": NOW}})
    now_open = NOW - NOW % MINUTE_MS
    assert len(rows) == 5000
    assert rows[-1]["t"] == now_open and rows[0]["t"] == now_open - 4999 * MINUTE_MS
    older = info(client, {"type": "candleSnapshot", "req": {
        "coin": "BTC", "interval": "1m", "startTime": NOW - 30 * DAY_MS,
        "endTime": now_open - 5000 * MINUTE_MS}})
    assert older == []  # before the horizon nothing is served, not even on request
    daily = info(client, {"type": "candleSnapshot", "req": {
        "coin": "BTC", "interval": "1d", "startTime": 0, "endTime": NOW}})
    assert daily[0]["t"] == to_ms("2023-01-01")  # daily history starts at the listing


def test_funding_history_pages_of_500_oldest_first(hl: HyperliquidSim,
                                                   client: httpx.Client) -> None:
    start = NOW - 30 * DAY_MS
    first = info(client, {"type": "fundingHistory", "coin": "SOL", "startTime": start})
    assert len(first) == 500 and first[0]["time"] >= start
    assert [r["time"] for r in first] == sorted(r["time"] for r in first)
    assert set(first[0]) == {"coin", "fundingRate", "premium", "time"}
    assert all(0 <= r["time"] % HOUR_MS < 400 for r in first)  # hourly, a few ms late
    rows, requests = page_forward(client, {"type": "fundingHistory", "coin": "SOL"}, start,
                                  500)
    assert rows == hl.funding_history("SOL", start)
    assert len(rows) == 30 * 24 and requests == 2


# ---------------------------------------------------------------------- accounts


def test_fills_page_forward_to_the_truth(hl: HyperliquidSim, client: httpx.Client) -> None:
    user = busy(hl)
    truth = [fill_wire(f) for f in hl.fills(user)]
    assert 1000 < len(truth) < 1500  # 40 fills a day for 30 days
    rows, _ = page_forward(client, {"type": "userFillsByTime", "user": user}, START, 2000)
    assert rows == truth
    f = rows[0]
    assert set(f) >= {"coin", "px", "sz", "side", "time", "startPosition", "dir", "closedPnl",
                      "hash", "oid", "crossed", "fee", "tid", "feeToken"}
    assert all(isinstance(f[k], str) for k in ("px", "sz", "startPosition", "closedPnl", "fee"))
    # startTime and endTime are inclusive.
    t = truth[100]["time"]
    same = [r for r in truth if r["time"] == t]
    assert info(client, {"type": "userFillsByTime", "user": user, "startTime": t,
                         "endTime": t}) == same
    # Upper-case hex addresses are the same user.
    assert info(client, {"type": "userFillsByTime", "user": "0x" + user[2:].upper(),
                         "startTime": t, "endTime": t}) == same


def test_positions_are_the_running_sum_of_fills(hl: HyperliquidSim) -> None:
    user = busy(hl)
    fills = hl.fills(user)
    running: dict[str, float] = {}
    for f in fills:
        assert f.start_position == pytest.approx(running.get(f.coin, 0.0), abs=1e-9)
        running[f.coin] = round(running.get(f.coin, 0.0) + f.signed_sz, f.sz_decimals)
        if f.dir.startswith("Open"):
            assert f.closed_pnl == 0
    assert {d for f in fills for d in [f.dir]} >= {"Open Long", "Close Long", "Open Short",
                                                   "Close Short"}
    positions = {p.coin: p.szi for p in hl.positions(user)}
    assert positions == {c: s for c, s in running.items() if s != 0}
    state = hl.account_state(user)
    assert {p["position"]["coin"]: p["position"]["szi"] for p in state["assetPositions"]} == {
        c: fmt_num(s, hl.markets.perps[c].sz_decimals) for c, s in positions.items()}


def test_orders_lifecycle_matches_the_fills(hl: HyperliquidSim, client: httpx.Client) -> None:
    user = busy(hl)
    by_oid: dict[int, float] = {}
    for f in hl.fills(user):
        by_oid[f.oid] = by_oid.get(f.oid, 0.0) + f.sz
    orders = hl.orders(user)
    statuses = {o.status(NOW) for o in orders}
    assert statuses == {"open", "filled", "canceled"}
    for o in orders:
        if o.status(NOW) == "filled":
            assert by_oid[o.oid] == pytest.approx(o.sz)
        else:
            assert o.oid not in by_oid
    hist = info(client, {"type": "historicalOrders", "user": user})
    assert len(hist) == len(orders)
    assert [h["order"]["oid"] for h in hist] == [o.oid for o in reversed(orders)]  # newest first
    assert {h["status"] for h in hist} == statuses
    opened = [o.oid for o in reversed(hl.open_orders(user))]
    assert [o["oid"] for o in info(client, {"type": "openOrders", "user": user})] == opened
    front = info(client, {"type": "frontendOpenOrders", "user": user})
    assert [o["oid"] for o in front] == opened
    assert all(o["sz"] == o["origSz"] and o["orderType"] == "Limit" for o in front)


def test_historical_orders_keep_the_most_recent_2000() -> None:
    address = derive_addresses(3, 1)[0]
    hl = make(HyperliquidSpec(accounts=(AccountSpec(address, fills_per_day=400, start=START),)))
    with run_in_thread(hl.exchange, hyperliquid=hl) as url, httpx.Client(base_url=url) as c:
        rows = info(c, {"type": "historicalOrders", "user": address})
        fills = hl.fills(address)
        assert len(fills) > 10_000
        reachable = fills[-10_000:]
        got, requests = page_forward(c, {"type": "userFillsByTime", "user": address}, 0, 2000)
        # Only the 10,000 most recent fills can be reached, whatever startTime says.
        assert got == [fill_wire(f) for f in reachable]
        assert requests == 6
    orders = hl.orders(address)
    assert len(orders) > 2000 and len(rows) == 2000
    assert rows[0]["order"]["oid"] == orders[-1].oid
    assert rows[-1]["order"]["oid"] == orders[-2000].oid


def test_funding_payments(hl: HyperliquidSim, client: httpx.Client) -> None:
    user = busy(hl)
    truth = hl.funding(user)
    assert len(truth) > 1000
    rows, requests = page_forward(client, {"type": "userFunding", "user": user}, START, 500)
    assert rows == [funding_wire(p) for p in truth] and requests >= 3
    d = rows[0]["delta"]
    assert set(d) == {"type", "coin", "usdc", "szi", "fundingRate", "nSamples"}
    assert d["type"] == "funding" and rows[0]["hash"] == "0x" + "0" * 64
    fills = hl.fills(user)
    for p in truth[::97]:
        # Paid on the position held at settlement, at the mark then: usdc = -szi x mark x rate.
        held = [f for f in fills if f.coin == p.coin and f.time <= p.time]
        szi = round(held[-1].start_position + held[-1].signed_sz, held[-1].sz_decimals)
        assert p.szi == szi != 0
        mark = hl.markets.price(hl.markets.perps[p.coin].symbol, p.time)
        assert p.usdc == pytest.approx(-szi * mark * p.funding_rate, abs=1e-6)


def test_ledger_updates(hl: HyperliquidSim, client: httpx.Client) -> None:
    user = busy(hl)
    truth = hl.ledger(user)
    assert truth[0].delta == {"type": "deposit", "usdc": "100000.0"}
    rows = info(client, {"type": "userNonFundingLedgerUpdates", "user": user,
                         "startTime": 0, "endTime": None})
    assert rows == [ledger_wire(e) for e in truth]
    assert all(isinstance(r["delta"]["usdc"], str) for r in rows if "usdc" in r["delta"])


def test_an_account_without_activity_gets_empty_data(hl: HyperliquidSim,
                                                     client: httpx.Client) -> None:
    for user in (idle(hl), "0x" + "ab" * 20):  # listed but idle; never seen
        for kind in ("userFillsByTime", "userFunding", "userNonFundingLedgerUpdates"):
            assert info(client, {"type": kind, "user": user, "startTime": 0}) == []
        for kind in ("openOrders", "frontendOpenOrders", "historicalOrders"):
            assert info(client, {"type": kind, "user": user}) == []
        state = info(client, {"type": "clearinghouseState", "user": user})
        assert state["assetPositions"] == [] and state["withdrawable"] == "0.0"
        assert state["marginSummary"] == {"accountValue": "0.0", "totalNtlPos": "0.0",
                                          "totalRawUsd": "0.0", "totalMarginUsed": "0.0"}
        assert state["time"] == NOW


def test_clearinghouse_state_adds_up(hl: HyperliquidSim, client: httpx.Client) -> None:
    user = busy(hl)
    state = info(client, {"type": "clearinghouseState", "user": user, "dex": ""})
    assert state == hl.account_state(user)
    value = float(state["marginSummary"]["accountValue"])
    upnl = sum(float(p["position"]["unrealizedPnl"]) for p in state["assetPositions"])
    model = hl.model(user)
    assert model is not None
    assert value == pytest.approx(model.cash(NOW) + upnl, abs=1e-5)
    margin = sum(float(p["position"]["marginUsed"]) for p in state["assetPositions"])
    assert float(state["withdrawable"]) == pytest.approx(value - margin, abs=1e-5)
    pos = state["assetPositions"][0]["position"]
    assert set(pos) == {"coin", "szi", "leverage", "entryPx", "positionValue", "unrealizedPnl",
                        "returnOnEquity", "liquidationPx", "marginUsed", "maxLeverage",
                        "cumFunding"}
    assert set(pos["cumFunding"]) == {"allTime", "sinceOpen", "sinceChange"}


# ---------------------------------------------------------------------- time and seeds


def test_two_sims_with_one_seed_agree_and_another_seed_differs() -> None:
    a, b, c = make(seed=11), make(seed=11), make(seed=12)
    addr_a, addr_c = busy(a), busy(c)
    assert addr_a == busy(b) and addr_a != addr_c  # addresses derive from the seed
    assert [fill_wire(f) for f in a.fills(addr_a)] == [fill_wire(f) for f in b.fills(addr_a)]
    assert a.account_state(addr_a) == b.account_state(addr_a)
    assert [ledger_wire(e) for e in a.ledger(addr_a)] == [ledger_wire(e) for e in
                                                         b.ledger(addr_a)]
    assert [f.px for f in a.fills(addr_a)][:50] != [f.px for f in c.fills(addr_c)][:50]


def test_moving_the_clock_reveals_new_events_and_keeps_old_ones(hl: HyperliquidSim,
                                                                client: httpx.Client) -> None:
    user = busy(hl)
    before = info(client, {"type": "userFillsByTime", "user": user, "startTime": NOW - DAY_MS})
    funding_before = hl.funding(user)
    assert all(r["time"] <= NOW for r in before)
    clock = hl.exchange.clock
    assert isinstance(clock, FakeClock)
    clock.set(NOW + 2 * DAY_MS)  # across the model's day boundary
    after = info(client, {"type": "userFillsByTime", "user": user, "startTime": NOW - DAY_MS})
    assert after[: len(before)] == before and len(after) > len(before) + 40
    assert hl.funding(user)[: len(funding_before)] == funding_before
    assert [fill_wire(f) for f in hl.fills(user, 0, NOW)] == [
        fill_wire(f) for f in make().fills(user)]


# ---------------------------------------------------------------------- limits and faults


def test_weights_and_429_after_the_budget(hl: HyperliquidSim, client: httpx.Client) -> None:
    clock = hl.exchange.clock
    assert isinstance(clock, FakeClock)
    clock.set(NOW - NOW % 60_000)  # the start of a window
    info(client, {"type": "clearinghouseState", "user": busy(hl)})
    assert hl.used_weight() == 2
    info(client, {"type": "candleSnapshot", "req": {
        "coin": "BTC", "interval": "1m", "startTime": 0, "endTime": clock.now_ms()}})
    assert hl.used_weight() == 2 + 20 + 5000 // 60
    rows = info(client, {"type": "userFunding", "user": busy(hl), "startTime": 0})
    assert len(rows) == 500
    assert hl.used_weight() == 2 + 20 + 83 + 20 + 500 // 20
    # The base weight is checked before serving, the items' weight charged after: a
    # request is served while its base weight fits, and may take the total past 1200.
    heavy = {"type": "candleSnapshot", "req": {
        "coin": "ETH", "interval": "1m", "startTime": 0, "endTime": clock.now_ms()}}
    served = 0
    while True:
        before = hl.used_weight()
        r = client.post("/info", json=heavy)
        if r.status_code != 200:
            break
        assert before + 20 <= 1200
        served += 1
    assert r.status_code == 429 and r.json() is None
    assert before + 20 > 1200 and served == 11  # 150 + 10 x 103 = 1180 still admits one
    assert hl.used_weight() == before  # a refused request costs nothing
    clock.set(clock.now_ms() + 60_000)  # the next window
    assert client.post("/info", json={"type": "meta"}).status_code == 200


def test_scripted_faults(hl: HyperliquidSim, client: httpx.Client) -> None:
    hl.force("503", info_type="userFillsByTime")
    body = {"type": "userFillsByTime", "user": busy(hl), "startTime": NOW - HOUR_MS}
    assert client.post("/info", json={"type": "meta"}).status_code == 200  # other types pass
    r = client.post("/info", json=body)
    assert r.status_code == 503 and "text/html" in r.headers["content-type"]
    good = client.post("/info", json=body)
    assert good.status_code == 200
    hl.force("truncate")
    with pytest.raises(json.JSONDecodeError):
        json.loads(client.post("/info", json=body).text)
    hl.force("html")
    r = client.post("/info", json=body)
    assert r.status_code == 200 and r.text.startswith("<html>")
    hl.force("429")
    assert client.post("/info", json=body).status_code == 429
    hl.force("slow", delay_s=0.01)
    assert client.post("/info", json=body).json() == good.json()
    assert hl.rejected >= 2


def test_bad_requests_get_hyperliquid_errors(hl: HyperliquidSim, client: httpx.Client) -> None:
    bad = [
        {"type": "userFillsByTime", "user": "0x1234", "startTime": 0},  # too short
        {"type": "userFillsByTime", "user": "0x" + "zz" * 20, "startTime": 0},  # not hex
        {"type": "userFillsByTime", "user": busy(hl)},  # no startTime
        {"type": "userFunding", "user": busy(hl), "startTime": "0"},  # a string
        {"type": "clearinghouseState"},  # no user
        {"type": "noSuchType"},
        {"type": "candleSnapshot", "req": {"coin": "BTC", "interval": "6h", "startTime": 0,
                                           "endTime": NOW}},  # not a Hyperliquid interval
        {"user": busy(hl)},
    ]
    for body in bad:
        r = client.post("/info", json=body)
        assert r.status_code == 422, body
        assert r.text == "Failed to deserialize the JSON body into the target type"
    r = client.post("/info", content=b'{"type": "meta"', headers={
        "content-type": "application/json"})
    assert r.status_code == 400 and r.text.startswith("Failed to parse the request body")
    r = client.post("/info", content=b'{"type": "meta"}')
    assert r.status_code == 415


def test_binance_routes_still_served(hl: HyperliquidSim, client: httpx.Client) -> None:
    r = client.get("/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1h",
                                              "limit": 2})
    assert r.status_code == 200 and len(r.json()) == 2


def test_aggregate_by_time_combines_the_pieces_of_one_crossing_order(
        hl: HyperliquidSim, client: httpx.Client) -> None:
    user = busy(hl)
    fills = hl.fills(user)
    body = {"type": "userFillsByTime", "user": user, "startTime": START}
    plain = info(client, body)
    combined = info(client, {**body, "aggregateByTime": True})
    groups = {(f.oid, f.time) for f in fills}
    assert len(plain) == len(fills) and len(combined) == len(groups) < len(fills)
    for row in combined:
        pieces = [f for f in fills if (f.oid, f.time) == (row["oid"], row["time"])]
        assert float(row["sz"]) == pytest.approx(sum(f.sz for f in pieces))
        assert row["tid"] == pieces[0].tid
