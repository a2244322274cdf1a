"""Realistic availability rows, written through ``Store.upsert(AVAILABILITY, ...)`` the way
the tracker writes them: probe columns first, volumes later as a partial batch."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from candlekeep.availability.dataset import AVAILABILITY, PROBE_COLUMNS, VOLUME_COLUMNS
from candlekeep.stores.base import Store

D0 = dt.date(2024, 1, 1)
DAYS = 20  # 2024-01-01 .. 2024-01-20
PROBED_AT = 1_705_795_200_000  # 2024-01-21T00:00:00Z
BASE = "https://data.binance.vision/data/futures/um/daily/klines"


def day(n: int) -> dt.date:
    """2024-01-``n``."""
    return dt.date(2024, 1, n)


def _status(symbol: str, d: dt.date) -> str | None:
    """What a probe of ``symbol``'s file for ``d`` found (None: never probed)."""
    n = d.day
    if symbol == "BTCUSDT":
        return "available"
    if symbol == "ETHUSDT":
        return "error" if n == 10 else "available"
    if symbol == "NEWUSDT":  # listed on the 15th
        return "available" if n >= 15 else "missing"
    if symbol == "OLDUSDT":  # delisted after the 10th
        return "available" if n <= 10 else "missing"
    if symbol == "LATEUSDT":  # the last two files are late (inside the buffer)
        return "available" if n <= 18 else "missing"
    if symbol == "GAPUSDT":  # nobody probed the 6th and 7th
        return None if n in (6, 7) else "available"
    raise AssertionError(symbol)


SYMBOLS = ("BTCUSDT", "ETHUSDT", "NEWUSDT", "OLDUSDT", "LATEUSDT", "GAPUSDT")


def probe_rows(market: str = "futures/um", symbols: tuple[str, ...] = SYMBOLS,
               days: int = DAYS) -> list[dict[str, Any]]:
    rows = []
    for i in range(days):
        d = D0 + dt.timedelta(days=i)
        for s in symbols:
            status = _status(s, d)
            if status is None:
                continue
            ok = status == "available"
            rows.append({
                "market": market, "date": d, "symbol": s, "data_type": "klines/1m",
                "status": status, "available": ok, "size": 61_000 + i if ok else None,
                "last_modified": PROBED_AT - (DAYS - i) * 86_400_000 + 3_600_000 if ok
                else None,
                "url": f"{BASE}/{s}/1m/{s}-1m-{d}.zip",
                "error": "HTTP 503 after 3 attempts" if status == "error" else None,
                "probed_at": PROBED_AT})
    return rows


def table(rows: list[dict[str, Any]], columns: tuple[str, ...] = PROBE_COLUMNS) -> pa.Table:
    schema = pa.schema([AVAILABILITY.schema.field(c) for c in columns])
    return pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=schema)


def seed(store: Store) -> None:
    """Two markets: futures/um (the six symbols above) and a little spot; then volumes for
    BTCUSDT as a partial batch, as the 1d-kline pass writes them."""
    store.upsert(AVAILABILITY, table(probe_rows()))
    store.upsert(AVAILABILITY, table(probe_rows("spot", ("BTCUSDT",), 5)))
    volumes = [{"market": "futures/um", "date": D0 + dt.timedelta(days=i), "symbol": "BTCUSDT",
                "volume": 1000.0 + i, "quote_volume": 4.2e7, "trades": 90_000}
               for i in range(DAYS)]
    store.upsert(AVAILABILITY, table(volumes, VOLUME_COLUMNS))
