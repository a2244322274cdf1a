"""The Hyperliquid report sections on account datasets seeded in a real store (DuckDB, and
one run on PostgreSQL): every number against a hand computation, each class and reason,
the lag a late account follows, an empty day, and the sections in a rendered message."""

from __future__ import annotations

import dataclasses
import email
import email.message
import email.policy
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from candlekeep.accounts.datasets import (
    ACCOUNT_SNAPSHOTS,
    ASSET_CTX_SNAPSHOTS,
    FILLS,
    OPEN_ORDERS_SNAPSHOTS,
    ORDERS,
    POSITIONS_SNAPSHOTS,
)
from candlekeep.config import load_config
from candlekeep.core.clock import FakeClock
from candlekeep.core.datasets import Dataset
from candlekeep.core.errors import ConfigError
from candlekeep.core.timeutil import to_ms
from candlekeep.jobs.runtime import Runtime
from candlekeep.reports import sections
from candlekeep.reports.hyperliquid import missing, targets, trades
from candlekeep.reports.hyperliquid.common import (
    Day,
    MissingParams,
    TargetsParams,
    TradesParams,
    normalise_symbol,
)
from candlekeep.reports.hyperliquid.missing import Reason
from candlekeep.reports.hyperliquid.targets import Alignment
from candlekeep.reports.mailer import send_report
from candlekeep.reports.sections import SectionInput
from tests.waiting import free_port

HOUR = 3_600_000
DAY = 24 * HOUR
NOW = to_ms("2024-05-10T08:00:00Z")
D = NOW // DAY * DAY - DAY  # the reported day (the previous UTC day): 2024-05-09
ALPHA = "0x" + "a" * 40
BETA = "0x" + "b" * 40
GAMMA = "0x" + "c" * 40
DELTA = "0x" + "d" * 40
TARGETS = Dataset("targets", pa.schema([
    pa.field("date", pa.date32(), nullable=False),
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("weight", pa.float64()),
    pa.field("inserted_at", pa.timestamp("ms", tz="UTC"), nullable=False),
]), key=("date", "symbol", "inserted_at"), time="date")


def batch(ds: Dataset, rows: Sequence[Mapping[str, Any]], **common: Any) -> pa.Table:
    """Rows as ``ds`` has them: absent columns null, times in epoch ms."""
    full = [{**common, **r} for r in rows]
    return pa.table({f.name: pa.array([r.get(f.name) for r in full], f.type)
                     for f in ds.schema}, schema=ds.schema)


def target_rows(day_ms: int, weights: Mapping[str, float | None], inserted: int = 0
                ) -> list[dict[str, Any]]:
    import datetime as dt

    date = dt.datetime.fromtimestamp(day_ms / 1000, dt.UTC).date()
    return [{"date": date, "symbol": s, "weight": w, "inserted_at": day_ms - 6 * HOUR + inserted}
            for s, w in weights.items()]


def write_config(folder: Path, store: dict[str, Any], params: dict[str, Any],
                 accounts: Sequence[tuple[str, str]]) -> Path:
    path = folder / "candlekeep.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": "data", "stores": {"main": store},
        "sources": {"hl": {"type": "hyperliquid"}},
        "accounts": [{"name": n, "address": a, "source": "hl"} for n, a in accounts],
        "smtp": {"host": "127.0.0.1", "port": free_port(), "security": "none",
                 "from": "candlekeep@example.org"},
        "reports": {"hl": {"to": ["desk@example.org"], "subject": "[hl]",
                           "sections": list(params), "params": params}},
    }))
    return path


@contextmanager
def runtime(config: Path) -> Iterator[tuple[Runtime, SectionInput]]:
    rt = Runtime(load_config(config), clock=FakeClock(NOW))
    try:
        with rt.state.reader() as reader:
            yield rt, SectionInput(reader, rt, "hl", NOW, NOW - DAY)
    finally:
        import asyncio

        asyncio.run(rt.aclose())


def seed(rt: Runtime, *tables: tuple[Dataset, pa.Table]) -> None:
    st = rt.store("main")
    for ds, table in tables:
        assert st.upsert(ds, table) == table.num_rows


def duckdb_store(folder: Path) -> dict[str, Any]:
    return {"type": "duckdb", "path": str(folder / "data" / "hl.duckdb")}


# -- targets vs actuals ---------------------------------------------------------------------

LAST = D + 23 * HOUR + 45 * 60_000  # the day's last snapshot (23:45)
TARGETS_D = {"BTC/USDC:USDC": 0.4, "ETH": -0.3, "sol-perp": 0.2, "DOGE": 0.1, "XRP": 0.0}
TARGETS_D1 = {"BTC": 0.5, "ETH": -0.5}  # the day before: what beta holds a day late
TARGETS_D2 = {"BTC": 1.0}


def tracking_data() -> list[tuple[Dataset, pa.Table]]:
    snaps = [  # (address, time, equity)
        (ALPHA, D + 10 * HOUR, 9_000.0), (ALPHA, LAST, 10_000.0),
        (ALPHA, NOW - HOUR, 11_000.0),  # today: not the reported day
        (BETA, LAST, 20_000.0)]
    acct = batch(ACCOUNT_SNAPSHOTS, [
        {"address": a, "account": "x", "snapshot_ts": t, "account_value": v}
        for a, t, v in snaps], source="hl")
    pos = batch(POSITIONS_SNAPSHOTS, [
        # alpha at 10:00 held only ETH short (the day's last snapshot replaces it)
        {"address": ALPHA, "snapshot_ts": D + 10 * HOUR, "coin": "ETH", "szi": -1.0,
         "position_value": 3_000.0},
        # alpha at 23:45: BTC aligned, ETH long against a short target, SOL 10 pp over,
        # AVAX without a target; DOGE missing
        {"address": ALPHA, "snapshot_ts": LAST, "coin": "BTC", "szi": 0.0625,
         "position_value": 4_000.0},
        {"address": ALPHA, "snapshot_ts": LAST, "coin": "ETH", "szi": 0.8,
         "position_value": 2_500.0},
        {"address": ALPHA, "snapshot_ts": LAST, "coin": "SOL", "szi": 20.0,
         "position_value": 3_000.0},
        {"address": ALPHA, "snapshot_ts": LAST, "coin": "AVAX", "szi": 12.5,
         "position_value": 500.0},
        {"address": ALPHA, "snapshot_ts": NOW - HOUR, "coin": "DOGE", "szi": 1e4,
         "position_value": 1_000.0},
        # beta holds the day before's targets: BTC valued by its mark (no position value)
        {"address": BETA, "snapshot_ts": LAST, "coin": "BTC", "szi": 0.08,
         "position_value": None},
        {"address": BETA, "snapshot_ts": LAST, "coin": "ETH", "szi": -2.0,
         "position_value": 5_000.0},
    ], source="hl")
    ctx = batch(ASSET_CTX_SNAPSHOTS, [
        {"coin": c, "snapshot_ts": t, "mark_px": px}
        for t, marks in ((D + 10 * HOUR, {"BTC": 60_000.0, "ETH": 3_000.0}),
                         (LAST, {"BTC": 62_500.0, "ETH": 2_500.0, "SOL": 150.0,
                                 "AVAX": 40.0, "DOGE": 0.1}),
                         (D + 23 * HOUR + 55 * 60_000, {"BTC": 99_999.0}))  # after: unused
        for c, px in marks.items()], source="hl")
    tgt = batch(TARGETS, [
        *target_rows(D, {"BTC/USDC:USDC": 0.9, "SHIB": 0.5}),  # replaced by later inserts
        *target_rows(D, {**TARGETS_D, "SHIB": None}, inserted=HOUR),
        *target_rows(D - DAY, TARGETS_D1), *target_rows(D - 2 * DAY, TARGETS_D2),
        *target_rows(D - 4 * DAY, {"BTC": 1.0}),  # beyond lag 3
    ])
    return [(ACCOUNT_SNAPSHOTS, acct), (POSITIONS_SNAPSHOTS, pos),
            (ASSET_CTX_SNAPSHOTS, ctx), (TARGETS, tgt)]


TRACKING_PARAMS = {"table": "targets"}
ACCOUNTS = [("alpha", ALPHA), ("beta", BETA), ("delta", DELTA)]


def check_tracking(report: targets.TrackingReport) -> None:
    assert report.day == "2024-05-09"
    alpha, beta, delta = report.accounts
    assert (alpha.account, alpha.snapshot_ms, alpha.equity, alpha.gross_notional) == (
        "alpha", LAST, 10_000.0, 10_000.0)
    # normalised actuals: BTC .4, ETH .25, SOL .3, AVAX .05; targets BTC .4 ETH -.3 SOL .2
    # DOGE .1 (XRP's zero is no symbol held)
    by = {s.symbol: s for s in alpha.symbols}
    assert {s: (pytest.approx(w.actual), pytest.approx(w.target), w.alignment)
            for s, w in by.items()} == {
        "AVAX": (0.05, 0.0, Alignment.EXTRA), "BTC": (0.4, 0.4, Alignment.ALIGNED),
        "DOGE": (0.0, 0.1, Alignment.MISSING), "ETH": (0.25, -0.3, Alignment.SIGN_FLIP),
        "SOL": (0.3, 0.2, Alignment.MIS_SIZED)}
    assert by["SOL"].target_raw == 0.2 and by["SOL"].notional == 3_000.0
    lag = {le.lag: le.tracking_error for le in alpha.lags}
    # lag 0: (0 + .55 + .1 + .1 + .05) / 5; lag 1 vs BTC .5 ETH -.5: (.1 + .75 + .3 + .05) / 4;
    # lag 2 vs BTC 1: (.6 + .25 + .3 + .05) / 4; lag 3: no targets
    assert lag == {0: pytest.approx(0.16), 1: pytest.approx(0.3), 2: pytest.approx(0.3),
                   3: None}
    assert [le.target_date for le in alpha.lags] == [
        "2024-05-09", "2024-05-08", "2024-05-07", "2024-05-06"]
    assert alpha.best_lag == 0
    classes = {c.alignment: (c.symbols, pytest.approx(c.target_exposure),
                             pytest.approx(c.actual_exposure)) for c in alpha.classes}
    assert classes == {Alignment.MISSING: (1, 0.1, 0.0), Alignment.EXTRA: (1, 0.0, 0.05),
                       Alignment.SIGN_FLIP: (1, 0.3, 0.25),
                       Alignment.MIS_SIZED: (1, 0.2, 0.3), Alignment.ALIGNED: (1, 0.4, 0.4)}
    # beta: BTC 0.08 x mark 62,500 = 5,000, ETH -5,000: the day before's targets exactly
    assert beta.gross_notional == 10_000.0
    lag = {le.lag: le.tracking_error for le in beta.lags}
    # lag 0 vs BTC .4 ETH -.3 SOL .2 DOGE .1: (.1 + .2 + .2 + .1) / 4; lag 2: (.5 + .5) / 2
    assert lag == {0: pytest.approx(0.15), 1: pytest.approx(0.0), 2: pytest.approx(0.5),
                   3: None}
    assert beta.best_lag == 1
    assert [(c.alignment, c.symbols) for c in beta.classes if c.symbols] == [
        (Alignment.MISSING, 2), (Alignment.MIS_SIZED, 2)]
    assert delta.snapshot_ms is None and delta.problem == "no account snapshot on 2024-05-09"
    assert delta.lags == [] and delta.best_lag is None


def test_targets_against_actuals_with_lags_and_classes(tmp_path: Path) -> None:
    config = write_config(tmp_path, duckdb_store(tmp_path),
                          {"hyperliquid_targets": TRACKING_PARAMS}, ACCOUNTS)
    with runtime(config) as (rt, inp):
        seed(rt, *tracking_data())
        report = targets.compute(inp, TargetsParams(table="targets"))
        json.dumps(dataclasses.asdict(report))  # JSON-able as it is
    check_tracking(report)
    row = dict(zip([c.title for c in targets.COLUMNS], targets.rows(report)[0], strict=True))
    assert row["TE lag 0"] == pytest.approx(16.0) and row["best lag"] == "lag 0"
    assert row["classes"] == ("missing 1 (10.0%); extra 1 (5.0%); sign flip 1 (30.0%); "
                              "mis-sized 1 (20.0%); aligned 1 (40.0%)")
    assert row["off target"] == (
        "AVAX extra (target +0.0%, actual +5.0%); DOGE missing (target +10.0%, actual +0.0%);"
        " ETH sign flip (target -30.0%, actual +25.0%); SOL mis-sized (target +20.0%, "
        "actual +30.0%)")


def test_targets_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    store = {"type": "postgresql", "dsn": pg_url, "schema": "hl"}
    config = write_config(tmp_path, store, {"hyperliquid_targets": TRACKING_PARAMS}, ACCOUNTS)
    with runtime(config) as (rt, inp):
        seed(rt, *tracking_data())
        report = targets.compute(inp, TargetsParams(table="targets"))
    check_tracking(report)


def test_a_wider_mis_sized_threshold_and_the_current_day(tmp_path: Path) -> None:
    config = write_config(tmp_path, duckdb_store(tmp_path),
                          {"hyperliquid_targets": TRACKING_PARAMS}, ACCOUNTS[:1])
    with runtime(config) as (rt, inp):
        seed(rt, *tracking_data())
        wide = targets.compute(inp, TargetsParams(table="targets", mis_sized=10.5))
        today = targets.compute(inp, TargetsParams(table="targets", day=Day.CURRENT))
    sol = next(s for s in wide.accounts[0].symbols if s.symbol == "SOL")
    assert sol.alignment is Alignment.ALIGNED  # 10 pp is within 10.5
    (alpha,) = today.accounts  # today: the 07:00 snapshot, no targets dated today
    assert today.day == "2024-05-10" and alpha.snapshot_ms == NOW - HOUR
    assert alpha.problem == "no targets for 2024-05-10 in table targets"
    # today's DOGE against yesterday's targets (lag 1): (.4 + .3 + .2 + .9) / 4; lag 2
    # (BTC .5 ETH -.5): (.5 + .5 + 1) / 3; lag 3 (BTC 1): (1 + 1) / 2
    assert [le.tracking_error for le in alpha.lags] == [
        None, pytest.approx(0.45), pytest.approx(2 / 3), pytest.approx(1.0)]
    assert alpha.best_lag == 1


def test_symbols_are_normalised_to_the_market_spelling() -> None:
    market = {"KPEPE": "kPEPE", "BTC": "BTC"}
    assert normalise_symbol("BTC/USDC:USDC", market) == "BTC"
    assert normalise_symbol(" kpepe-perp ", market) == "kPEPE"
    assert normalise_symbol("KPEPE/USDC", market) == "kPEPE"
    assert normalise_symbol("NEW_USDT", market) == "NEW"  # not listed: its base as written
    assert normalise_symbol("@107") == "@107"  # a spot index stays itself



def test_targets_dated_as_iso_text_and_an_unknown_account(tmp_path: Path) -> None:
    text_targets = Dataset("text_targets", pa.schema([
        pa.field("date", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("weight", pa.float64()),
        pa.field("inserted_at", pa.string(), nullable=False),
    ]), key=("date", "symbol", "inserted_at"))
    config = write_config(tmp_path, duckdb_store(tmp_path),
                          {"hyperliquid_targets": {"table": "text_targets"}}, ACCOUNTS)
    rows = [("2024-05-09", "BTC", 0.9, "2024-05-09T01:00"),
            ("2024-05-09", "BTC-PERP", 0.4, "2024-05-09T02:00"),  # the latest BTC
            ("2024-05-09", "ETH/USDC:USDC", -0.3, "2024-05-09T01:00"),
            ("2024-05-09", "SOL", 0.2, "2024-05-09T01:00"),
            ("2024-05-09", "DOGE", 0.1, "2024-05-09T01:00"),
            ("2024-05-08", "BTC", 0.5, "2024-05-08T01:00"),
            ("2024-05-08", "ETH", -0.5, "2024-05-08T01:00"),
            ("2024-05-07", "BTC", 1.0, "2024-05-07T01:00"),
            ("2024-05-10", "BTC", 1.0, "2024-05-10T01:00")]  # after the day: not read
    table = pa.table(dict(zip(text_targets.schema.names, map(list, zip(*rows, strict=True)),
                              strict=True)), schema=text_targets.schema)
    with runtime(config) as (rt, inp):
        seed(rt, *tracking_data()[:3], (text_targets, table))
        report = targets.compute(inp, TargetsParams(table="text_targets"))
        with pytest.raises(sections.SectionError, match=r"unknown account 'gamma' "
                           r"\(configured: alpha, beta, delta\)"):
            targets.compute(inp, TargetsParams(table="text_targets", accounts=["gamma"]))
        (only_beta,) = targets.compute(
            inp, TargetsParams(table="text_targets", accounts=["beta"])).accounts
    check_tracking(report)  # the same targets as the date-typed table's
    assert only_beta.account == "beta" and only_beta.best_lag == 1

# -- trades ------------------------------------------------------------------------------------

def test_trades_of_the_last_24_hours(tmp_path: Path) -> None:
    config = write_config(tmp_path, duckdb_store(tmp_path),
                          {"hyperliquid_trades": {"top": 2}}, ACCOUNTS[:2])
    fills = batch(FILLS, [
        {"address": ALPHA, "tid": 1, "time": NOW - 3 * HOUR, "coin": "BTC", "px": 60_000.0,
         "sz": 0.1, "side": "B", "dir": "Open Long", "closed_pnl": 0.0, "fee": 2.4},
        {"address": ALPHA, "tid": 2, "time": NOW - 2 * HOUR, "coin": "BTC", "px": 61_000.0,
         "sz": 0.05, "side": "A", "dir": "Close Long", "closed_pnl": 50.0, "fee": 1.22},
        {"address": ALPHA, "tid": 3, "time": NOW - HOUR, "coin": "ETH", "px": 3_000.0,
         "sz": 2.0, "side": "A", "dir": "Open Short", "closed_pnl": -10.0, "fee": 2.4},
        {"address": ALPHA, "tid": 4, "time": NOW - 25 * HOUR, "coin": "SOL", "px": 150.0,
         "sz": 100.0, "side": "B", "closed_pnl": 0.0, "fee": 6.0},  # before the window
        {"address": ALPHA, "tid": 5, "time": NOW + HOUR, "coin": "SOL", "px": 150.0,
         "sz": 100.0, "side": "B", "closed_pnl": 0.0, "fee": 6.0},  # after now
        {"address": GAMMA, "tid": 1, "time": NOW - HOUR, "coin": "BTC", "px": 60_000.0,
         "sz": 1.0, "side": "B", "closed_pnl": 0.0, "fee": 24.0},  # not a reported account
    ], source="hl")
    with runtime(config) as (rt, inp):
        seed(rt, (FILLS, fills))
        report = trades.compute(inp, TradesParams(top=2))
        json.dumps(dataclasses.asdict(report))
    alpha, beta = report.accounts
    assert (alpha.account, alpha.trades, alpha.symbols) == ("alpha", 3, ["BTC", "ETH"])
    assert alpha.gross_notional == pytest.approx(6_000 + 3_050 + 6_000)
    assert alpha.realized_pnl == pytest.approx(40.0) and alpha.fees == pytest.approx(6.02)
    # the two largest: 6,000 each, the earlier first
    assert [(t.tid, t.notional) for t in alpha.top] == [(1, pytest.approx(6_000.0)),
                                                     (3, pytest.approx(6_000.0))]
    assert (beta.trades, beta.symbols, beta.gross_notional, beta.top) == (0, [], 0.0, [])
    (row_a, row_b) = trades.rows(report)
    assert row_a[:6] == ("alpha", 3, "BTC, ETH", pytest.approx(15_050.0),
                         pytest.approx(40.0), pytest.approx(6.02))
    assert row_a[6] == ("BTC Open Long 0.1 @ 60,000 = 6,000.00; "
                        "ETH Open Short 2 @ 3,000 = 6,000.00")
    assert row_b == ("beta", 0, None, 0.0, 0.0, 0.0, None)


# -- missing positions -------------------------------------------------------------------------

MISSING_TARGETS = {
    "BTC": 0.3, "KPEPE/USDC:USDC": 0.1,  # both held
    "NOPE": 0.1, "TINY": 0.00005, "ETH": 0.1, "SOL": 0.1, "AVAX": 0.1, "LINK": 0.1,
    "DOGE": 0.1, "ZERO": 0.0}


def missing_data() -> list[tuple[Dataset, pa.Table]]:
    early = D + 12 * HOUR
    acct = batch(ACCOUNT_SNAPSHOTS, [
        {"address": GAMMA, "snapshot_ts": early, "account_value": 90_000.0},
        {"address": GAMMA, "snapshot_ts": LAST, "account_value": 100_000.0}], source="hl")
    pos = batch(POSITIONS_SNAPSHOTS, [
        {"address": GAMMA, "snapshot_ts": LAST, "coin": "BTC", "szi": 0.5,
         "position_value": 31_250.0},
        {"address": GAMMA, "snapshot_ts": LAST, "coin": "kPEPE", "szi": -1e6,
         "position_value": 10_000.0},
        {"address": GAMMA, "snapshot_ts": early, "coin": "DOGE", "szi": 1e5,
         "position_value": 10_000.0},  # held earlier, not at the last snapshot
    ], source="hl")
    ctx = batch(ASSET_CTX_SNAPSHOTS, [
        {"coin": c, "snapshot_ts": LAST, "mark_px": 1.0}
        for c in ("BTC", "kPEPE", "TINY", "ETH", "SOL", "AVAX", "LINK", "DOGE")], source="hl")
    orders = batch(ORDERS, [
        # ETH: only reduce-only orders (one cancelled too: reduce-only comes first)
        {"oid": 1, "coin": "ETH", "order_time": D + HOUR, "reduce_only": True,
         "status": "canceled"},
        {"oid": 2, "coin": "ETH", "order_time": D + 2 * HOUR, "reduce_only": True,
         "status": "open"},
        # SOL: placed and cancelled, one by the exchange
        {"oid": 3, "coin": "SOL", "order_time": D + HOUR, "reduce_only": False,
         "status": "canceled"},
        {"oid": 4, "coin": "SOL", "order_time": D + 3 * HOUR, "reduce_only": False,
         "status": "marginCanceled"},
        # AVAX: filled (then closed again by the second fill)
        {"oid": 5, "coin": "AVAX", "order_time": D + HOUR, "reduce_only": False,
         "status": "filled"},
        # LINK: still resting
        {"oid": 6, "coin": "LINK", "order_time": D + 20 * HOUR, "reduce_only": False,
         "status": "open"},
        # DOGE: cancelled the day before, and on the day after the last snapshot
        {"oid": 7, "coin": "DOGE", "order_time": D - HOUR, "reduce_only": False,
         "status": "canceled"},
        {"oid": 8, "coin": "DOGE", "order_time": LAST + 5 * 60_000, "reduce_only": False,
         "status": "canceled"},
    ], address=GAMMA, source="hl")
    fills = batch(FILLS, [
        {"tid": 1, "time": D + 2 * HOUR, "coin": "AVAX", "px": 40.0, "sz": 10.0, "side": "B"},
        {"tid": 2, "time": D + 5 * HOUR, "coin": "AVAX", "px": 41.0, "sz": 10.0, "side": "A"},
        {"tid": 3, "time": LAST + 5 * 60_000, "coin": "LINK", "px": 15.0, "sz": 10.0,
         "side": "B"},  # after the last snapshot
    ], address=GAMMA, source="hl")
    resting = batch(OPEN_ORDERS_SNAPSHOTS, [
        {"snapshot_ts": LAST, "oid": 6, "coin": "LINK", "reduce_only": False},
        {"snapshot_ts": early, "oid": 9, "coin": "DOGE", "reduce_only": False},  # earlier
    ], address=GAMMA, source="hl")
    tgt = batch(TARGETS, target_rows(D, MISSING_TARGETS))
    return [(ACCOUNT_SNAPSHOTS, acct), (POSITIONS_SNAPSHOTS, pos), (ASSET_CTX_SNAPSHOTS, ctx),
            (ORDERS, orders), (FILLS, fills), (OPEN_ORDERS_SNAPSHOTS, resting),
            (TARGETS, tgt)]


def test_each_missing_position_gets_its_first_reason(tmp_path: Path) -> None:
    config = write_config(tmp_path, duckdb_store(tmp_path),
                          {"hyperliquid_missing_positions": {"table": "targets"}},
                          [("gamma", GAMMA), ("delta", DELTA)])
    with runtime(config) as (rt, inp):
        seed(rt, *missing_data())
        report = missing.compute(inp, MissingParams(table="targets"))
        json.dumps(dataclasses.asdict(report))
    delta, gamma = report.accounts
    assert delta.problem == "no account snapshot on 2024-05-09" and delta.missing == []
    assert (gamma.snapshot_ms, gamma.equity, gamma.problem) == (LAST, 100_000.0, None)
    got = {m.symbol: (m.reason, m.target_weight, m.target_notional) for m in gamma.missing}
    assert got == {
        "AVAX": (Reason.FILLED_NO_POSITION, 0.1, pytest.approx(10_000.0)),
        "DOGE": (Reason.UNKNOWN, 0.1, pytest.approx(10_000.0)),
        "ETH": (Reason.REDUCE_ONLY_ORDERS, 0.1, pytest.approx(10_000.0)),
        "LINK": (Reason.OPEN_ORDER_NO_POSITION, 0.1, pytest.approx(10_000.0)),
        "NOPE": (Reason.NO_MARKET_METADATA, 0.1, pytest.approx(10_000.0)),
        "SOL": (Reason.ORDERS_CANCELLED, 0.1, pytest.approx(10_000.0)),
        "TINY": (Reason.BELOW_MIN_NOTIONAL, 0.00005, pytest.approx(5.0)),
    }
    avax = next(m for m in gamma.missing if m.symbol == "AVAX").activity
    assert avax == missing.Activity(orders=1, fills=2, fill_notional=810.0)
    rows = {r[1]: r for r in missing.rows(report)}
    assert rows[None] == ("delta", None, None, None, None, "no account snapshot on 2024-05-09")
    assert rows["SOL"] == ("gamma", "SOL", pytest.approx(10.0), pytest.approx(10_000.0),
                           "orders_cancelled",
                           "2 order(s) that day: 0 reduce-only, 2 cancelled or rejected")
    assert rows["TINY"][5] == "below the 10.00 minimum order value"
    assert missing.headline(list(rows.values())) == "7 targets without a position"
    # a lower minimum: TINY's $5 is enough, and nothing else explains it
    with runtime(config) as (_rt, inp):
        lower = missing.compute(inp, MissingParams(table="targets", min_notional=5.0))
    assert next(m.reason for m in lower.accounts[1].missing if m.symbol == "TINY") \
        is Reason.UNKNOWN


# -- an empty day, errors, the rendered message --------------------------------------------------

def test_an_empty_day_is_said_not_failed(tmp_path: Path) -> None:
    params = {"hyperliquid_targets": {"table": "targets"},
              "hyperliquid_trades": {}, "hyperliquid_missing_positions": {"table": "targets"}}
    config = write_config(tmp_path, duckdb_store(tmp_path), params, ACCOUNTS[:1])
    with runtime(config) as (rt, inp):
        seed(rt, (TARGETS, batch(TARGETS, target_rows(D - 5 * DAY, {"BTC": 1.0}))))
        tracking = targets.compute(inp, TargetsParams(table="targets"))
        gone = missing.compute(inp, MissingParams(table="targets"))
        traded = trades.compute(inp, TradesParams())
    assert [(a.account, a.problem) for a in tracking.accounts] == [
        ("alpha", "no account snapshot on 2024-05-09")]
    assert [(a.account, a.problem) for a in gone.accounts] == [
        ("alpha", "no account snapshot on 2024-05-09")]
    assert [(a.account, a.trades) for a in traded.accounts] == [("alpha", 0)]
    # a snapshot, but no targets dated that day
    with runtime(config) as (rt, inp):
        seed(rt, (ACCOUNT_SNAPSHOTS, batch(ACCOUNT_SNAPSHOTS, [
            {"address": ALPHA, "snapshot_ts": LAST, "account_value": 1_000.0}])))
        tracking = targets.compute(inp, TargetsParams(table="targets"))
        gone = missing.compute(inp, MissingParams(table="targets"))
    (alpha,) = tracking.accounts
    assert alpha.problem == "no targets for 2024-05-09 in table targets"
    assert [le.tracking_error for le in alpha.lags] == [None] * 4 and alpha.symbols == []
    assert gone.accounts[0].problem == "no targets for 2024-05-09 in table targets"


def test_settings_are_checked_when_the_report_resolves(tmp_path: Path) -> None:
    def resolve(params: dict[str, Any], listed: list[str] | None = None) -> str:
        config = write_config(tmp_path, duckdb_store(tmp_path), params, ACCOUNTS)
        if listed is not None:
            raw = yaml.safe_load(config.read_text())
            raw["reports"]["hl"]["sections"] = listed
            config.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError) as err:
            sections.resolve(load_config(config), "hl")
        return str(err.value)

    assert "reports.hl.params.hyperliquid_targets.table: Field required" in resolve(
        {"hyperliquid_targets": {}})
    assert "reports.hl.params.hyperliquid_trades.top: Input should be greater than or " \
           "equal to 1" in resolve({"hyperliquid_trades": {"top": 0}})
    assert "reports.hl.params.hyperliquid_trades.colour: Extra inputs are not permitted" \
        in resolve({"hyperliquid_trades": {"colour": "red"}})
    assert "reports.hl.params.runs: section 'runs' takes no settings" in resolve(
        {"runs": {"x": 1}})
    assert "reports.hl.params.hyperliquid_trades: settings for section " \
           "'hyperliquid_trades', which the report does not list" in resolve(
               {"hyperliquid_trades": {}}, listed=["runs"])


def test_a_missing_targets_table_is_the_sections_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, duckdb_store(tmp_path),
                          {"hyperliquid_targets": {"table": "targetz"}}, ACCOUNTS[:1])
    with runtime(config) as (rt, inp):
        seed(rt, *tracking_data())
        with pytest.raises(sections.SectionError, match=r"store main has no targets table "
                           r"'targetz' \(its tables: .*targets.*\)"):
            targets.compute(inp, TargetsParams(table="targetz"))


async def test_the_three_sections_in_a_rendered_message(tmp_path: Path) -> None:
    params = {"hyperliquid_targets": {"table": "targets"},
              "hyperliquid_trades": {"top": 1},
              "hyperliquid_missing_positions": {"table": "targets"}}
    config = write_config(tmp_path, duckdb_store(tmp_path), params, ACCOUNTS)
    rt = Runtime(load_config(config), clock=FakeClock(NOW))
    try:
        seed(rt, *tracking_data())
        seed(rt, (FILLS, batch(FILLS, [
            {"address": BETA, "tid": 1, "time": NOW - HOUR, "coin": "ETH", "px": 2_500.0,
             "sz": 2.0, "side": "A", "dir": "Open Short", "closed_pnl": 0.0, "fee": 1.5}])))
        out = await send_report(rt, "hl", dry_run=True)
    finally:
        await rt.aclose()
    assert out.problems == [] and not out.sent
    msg = email.message_from_bytes(out.path.read_bytes(), policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    assert msg["Subject"] == "[hl] 2024-05-10: 3 targets without a position"
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and html is not None
    text = plain.get_content()
    lines = {ln.split()[0]: ln.split() for ln in _table(text, "Targets vs actuals")}
    assert lines["alpha"][:9] == ["alpha", "2024-05-09", "23:45", "10,000.00", "16.00%",
                                  "30.00%", "30.00%", "-", "lag"]
    assert lines["beta"][4:10] == ["15.00%", "0.00%", "50.00%", "-", "lag", "1"]
    assert "delta" in lines and "no account snapshot on 2024-05-09" in " ".join(
        lines["delta"])
    (beta_trades,) = [ln for ln in _table(text, "Trades") if ln.startswith("beta")]
    assert beta_trades.split() == ["beta", "1", "ETH", "5,000.00", "0.00", "1.50", "ETH",
                                   "Open", "Short", "2", "@", "2,500", "=", "5,000.00"]
    gone = [ln.split()[:5] for ln in _table(text, "Targets without a position")]
    assert gone[:3] == [["alpha", "DOGE", "10.00%", "1,000.00", "unknown"],
                        ["beta", "DOGE", "10.00%", "2,000.00", "unknown"],
                        ["beta", "SOL", "20.00%", "4,000.00", "unknown"]]
    assert gone[3][:2] == ["delta", "-"]
    body = html.get_content()
    for cell in ("lag 1", "5,000.00", "ETH Open Short 2 @ 2,500 = 5,000.00",
                 "no account snapshot on 2024-05-09", "no orders or fills that day"):
        assert f">{cell}</td>" in body, cell  # a whole cell of the HTML table
    assert "sign flip 1 (30.0%)" in body and "<h2 style=\"font-size:16px;margin:0 0 4px;\">" \
        "Targets vs actuals</h2>" in body


def _table(text: str, title: str) -> list[str]:
    lines = text.split(f"\n{title}\n", 1)[1].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("-"))
    rows = lines[start + 1:]
    return rows[:rows.index("")] if "" in rows else rows
