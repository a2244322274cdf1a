"""Reader.rows, the statement runner report sections and plug-ins use, says the same on
SQLite and PostgreSQL (``:name`` parameters, ``%`` and colons in literals)."""

from __future__ import annotations

from pathlib import Path

import pytest

from candlekeep.state.db import StateDB
from candlekeep.state.reader import open_reader
from candlekeep.state.version import SCHEMA_VERSION

SQL = ("SELECT COUNT(*), MAX(symbol) FROM gaps WHERE symbol LIKE 'BTC%' AND source = :src "
       "AND last_error <> 'time :ts' AND timeframe = :tf")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_literals_with_percent_and_colons_and_parameters(url: str) -> None:
    db = StateDB(url)
    from candlekeep.state import tables as t

    with db.engine.begin() as conn:
        conn.execute(t.gaps.insert(), [
            {"source": "s", "symbol": sym, "timeframe": "1m", "gap_start": i,
             "gap_end": i, "detected_at": 0, "status": "open", "attempts": 0,
             "empty_attempts": 0, "last_error": "x"}
            for i, sym in enumerate(["BTC/USDT", "BTC/EUR", "ETH/USDT"])])
    db.dispose()
    with open_reader(url, SCHEMA_VERSION) as reader:
        assert reader is not None
        assert reader.rows(SQL, {"src": "s", "tf": "1m"}) == [(2, "BTC/USDT")]
