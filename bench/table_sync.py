"""Cost of the ``sync`` job's paging against the least work the store contract allows.

A source table of N rows (``--rows``, default 1M; 10 rows share each ``ingested_at`` value)
is copied into an empty target table twice, in the same run:

- baseline: one ``read`` of the whole table and one ``upsert`` of it (no paging, no cursor,
  no positions: the whole table in memory at once);
- sync: the ``sync`` job through the run path, in pages of ``--batch-rows``, saving its
  position after every page.

Printed: both times and their ratio, then an incremental run after 1% new rows, and a run
with nothing new (what a frequent schedule costs when the source is quiet). Last, why pages
are read as windows: one page read from the start of the table ordered and limited to the
end (``lo`` only) against the same page read as a window (``lo`` and ``hi``).

    python bench/table_sync.py                       # DuckDB → DuckDB
    python bench/table_sync.py --to postgresql --dsn postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from candlekeep.config import parse_config
from candlekeep.core.datasets import Dataset
from candlekeep.jobs.runner import build_params
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.manual import run_adhoc

TS = pa.timestamp("ms", tz="UTC")
T0 = 1_700_000_000_000
RUN = secrets.token_hex(3)
DS = Dataset("bench_trades", pa.schema([
    pa.field("id", pa.int64(), nullable=False), pa.field("symbol", pa.string()),
    pa.field("price", pa.float64()), pa.field("qty", pa.float64()),
    pa.field("ingested_at", TS, nullable=False)]), ("id",), time="ingested_at")


def rows(first: int, n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(first, first + n, dtype=np.int64)
    symbols = pa.array([f"SYM{i}" for i in range(20)]).take(pa.array(ids % 20))
    return pa.table({"id": ids, "symbol": symbols, "price": 100 + rng.random(n),
                     "qty": rng.random(n), "ingested_at": pa.array(T0 + ids // 10).cast(TS)},
                    schema=DS.schema)


def best_of(n: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def target_config(args: argparse.Namespace, folder: Path, tag: str) -> dict[str, Any]:
    if args.to == "duckdb":
        return {"type": "duckdb", "path": str(folder / f"{tag}.duckdb")}
    return {"type": "postgresql", "dsn": args.dsn, "schema": f"bench_sync_{tag}_{RUN}"}


def drop_schemas(args: argparse.Namespace) -> None:
    import psycopg

    with psycopg.connect(args.dsn, autocommit=True) as conn:
        for tag in ("base", "dst"):
            conn.execute(f"DROP SCHEMA IF EXISTS bench_sync_{tag}_{RUN} CASCADE")


async def main_async(args: argparse.Namespace, folder: Path) -> None:
    raw = {"data_dir": str(folder / "data"),
           "stores": {"src": {"type": "duckdb", "path": str(folder / "src.duckdb")},
                      "base": target_config(args, folder, "base"),
                      "dst": target_config(args, folder, "dst")}}
    rt = Runtime(parse_config(raw, str(folder / "candlekeep.yaml"), folder))
    try:
        src = rt.store("src")
        src.upsert(DS, rows(0, args.rows))

        t0 = time.perf_counter()
        whole = src.read(DS)
        rt.store("base").upsert(dataclasses.replace(DS, name="bench_copy"), whole)
        baseline = time.perf_counter() - t0
        del whole

        params = build_params("sync", {"from": "src", "to": "dst", "tables": [DS.name],
                                       "batch_rows": args.batch_rows})
        t0 = time.perf_counter()
        res = await run_adhoc(rt, "sync", params)
        synced = time.perf_counter() - t0
        if not res.ok or res.rows_written != args.rows:
            raise SystemExit(f"sync failed: {res.errors} rows={res.rows_written}")
        print(f"{args.rows:,} rows duckdb → {args.to}, pages of {args.batch_rows:,}")
        print(f"  baseline read+upsert: {baseline:7.2f} s")
        print(f"  sync job:             {synced:7.2f} s   ratio {synced / baseline:.2f}x")

        extra = args.rows // 100
        src.upsert(DS, rows(args.rows, extra, seed=1))
        t0 = time.perf_counter()
        res = await run_adhoc(rt, "sync", params)
        print(f"  +{extra:,} new rows:     {time.perf_counter() - t0:7.2f} s   "
              f"rows={res.rows_written}")
        t0 = time.perf_counter()
        res = await run_adhoc(rt, "sync", params)
        print(f"  nothing new:          {time.perf_counter() - t0:7.2f} s   "
              f"rows={res.rows_written}")
        page_ms = args.batch_rows // 10  # 10 rows per ms of ingested_at
        to_end = best_of(3, lambda: src.read(DS, column="ingested_at", lo=T0,
                                              limit=args.batch_rows))
        window = best_of(3, lambda: src.read(DS, column="ingested_at", lo=T0,
                                              hi=T0 + page_ms, limit=args.batch_rows))
        print(f"  one page, to the end: {to_end:7.3f} s   as a window: {window:.3f} s   "
              f"ratio {to_end / window:.1f}x")
    finally:
        await rt.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-rows", type=int, default=100_000)
    ap.add_argument("--to", choices=("duckdb", "postgresql"), default="duckdb")
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            asyncio.run(main_async(args, Path(tmp)))
        finally:
            if args.to == "postgresql":
                drop_schemas(args)


if __name__ == "__main__":
    main()
