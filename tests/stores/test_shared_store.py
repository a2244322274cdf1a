"""Several nodes, one store: two daemons sharing a PostgreSQL state DB and a PostgreSQL
store each backfill their own series from the simulated exchange over HTTP; a third process
then scans for gaps. Every candle the exchange has must be stored exactly once."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from candlekeep.core.timeframes import DAY_MS, parse_timeframe
from candlekeep.sim.exchange import Faults, SimExchange
from candlekeep.sim.server import run_in_thread
from candlekeep.state.db import StateDB
from tests.cli.conftest import cli_json
from tests.scheduler.procs import Daemon, runs, wait_for, write_config

pytestmark = pytest.mark.slow

SYMBOLS = {"A": ["BTC/USDT", "ETH/USDT"], "B": ["SOL/USDT"]}


def test_two_daemons_one_postgres_store_every_row_once(
    tmp_path: Path, pg_url: str, daemons: list[Daemon]
) -> None:
    exchange = SimExchange(7, {s: "2017-08-17" for group in SYMBOLS.values() for s in group},
                           faults=Faults())
    start = time.time_ns() // 1_000_000 // DAY_MS * DAY_MS - DAY_MS
    with run_in_thread(exchange) as url:
        source = {"type": "ccxt", "exchange": "binance", "base_url": url, "max_attempts": 8}
        common: dict[str, Any] = {
            "state": pg_url,
            "stores": {"shared": {"type": "postgresql", "dsn": pg_url, "schema": "md"}},
            "sources": {"sb": source},
        }

        def node(name: str, symbols: list[str]) -> Path:
            return write_config(
                tmp_path / name,
                [{"name": f"backfill.{name}", "type": "backfill", "schedule": "*/2 * * * * *"}],
                node=name, **common,
                series=[{"source": "sb", "symbols": symbols, "timeframes": ["1m", "1h"],
                         "start": start}])

        for name, symbols in SYMBOLS.items():
            daemons.append(Daemon(node(name, symbols)))
        state = StateDB(pg_url)
        try:
            for name in SYMBOLS:
                wait_for(f"a successful backfill on node {name}", lambda n=name: any(
                    r.status == "success" and r.rows_written > 0
                    for r in runs(state, f"backfill.{n}")), deadline_s=90)
            for d in daemons:
                assert d.term() == 0, d.output()
            nodes = {r.node for r in runs(state) if r.status == "success"}
            assert nodes == set(SYMBOLS)
        finally:
            state.dispose()

        everything = write_config(
            tmp_path / "scanner", [], state=pg_url, stores=common["stores"],
            sources={"sb": source},
            series=[{"source": "sb", "symbols": [s for g in SYMBOLS.values() for s in g],
                     "timeframes": ["1m", "1h"], "start": start}])
        scan = cli_json(everything, "gaps", "scan")
        after_backfill = stored_by_series(pg_url)
        for _ in range(2):  # late candles arrive; exchange-side holes are confirmed empty
            assert cli_json(everything, "gaps", "repair")["ok"]
        after_repair = stored_by_series(pg_url)

    assert set(after_repair) == {(s, tf) for g in SYMBOLS.values() for s in g
                                 for tf in ("1m", "1h")}
    for (symbol, tf), ts in after_repair.items():
        truth = exchange.expected(symbol, tf, start, ts[-1] + 1, source="sb")
        assert ts == truth["ts"].cast("int64").to_pylist(), f"{symbol} {tf}"
        assert set(after_backfill[(symbol, tf)]) <= set(ts)
    # the scanner, a third process, saw exactly the holes inside each stored span
    holes = sum(sum(1 for a, b in itertools.pairwise(ts) if b - a > parse_timeframe(tf).ms)
                for (_, tf), ts in after_backfill.items())
    assert holes > 0 and scan["details"]["gaps"] == holes


def stored_by_series(pg_url: str) -> dict[tuple[str, str], list[int]]:
    """Open times per (symbol, timeframe); fails if any candle is stored twice."""
    with psycopg.connect(pg_url) as conn:
        stored = conn.execute(
            "SELECT symbol, timeframe, (extract(epoch FROM ts) * 1000)::bigint FROM md.candles "
            "ORDER BY 1, 2, 3").fetchall()
    assert len(stored) == len(set(stored)), "a candle is stored twice"
    out: dict[tuple[str, str], list[int]] = {}
    for symbol, tf, ts in stored:
        out.setdefault((symbol, tf), []).append(ts)
    return out
