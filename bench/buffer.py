"""Cost of writing through a buffer store and flushing it, against upserting the same batches
straight into the same two targets.

Target (issue): 1M candles, in the batches ingestion writes (one series' consecutive candles
per batch, series taking turns), written to a buffer and flushed into two targets in at most
1.5x the time of upserting every batch directly into both, measured in the same run. Also
printed: the writes alone (what a job waits for when it writes to a buffer).

Targets are two DuckDB files, or a DuckDB file and a PostgreSQL schema with ``--pg URL``.
Every run uses fresh, empty targets; the two cases alternate which goes first.

    python bench/buffer.py [--rows 1000000] [--batch 5000] [--pg postgresql://…]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from candlekeep.buffer.flush import flush
from candlekeep.buffer.store import BufferStore
from candlekeep.config import parse_config
from candlekeep.jobs.runtime import Runtime
from candlekeep.stores.base import Store

sys.path.insert(0, str(Path(__file__).parent))
from common import candle_batch


def batches(rows: int, batch: int, series: int) -> list[pa.Table]:
    """Each series in consecutive chunks of ``batch`` candles, series taking turns."""
    per_series = rows // series
    whole = candle_batch(series, per_series)
    out = []
    for start in range(0, per_series, batch):
        for s in range(series):
            out.append(whole.slice(s * per_series + start, min(batch, per_series - start)))
    return out


def runtime(work: Path, pg: str | None) -> Runtime:
    second: dict[str, Any] = {"type": "duckdb", "path": "b.duckdb"}
    if pg is not None:
        second = {"type": "postgresql", "dsn": pg, "schema": f"bench_{secrets.token_hex(4)}"}
    raw = {"data_dir": ".", "stores": {
        "buf": {"type": "buffer", "path": "buf", "targets": ["a", "b"]},
        "a": {"type": "duckdb", "path": "a.duckdb"}, "b": second}}
    return Runtime(parse_config(raw, str(work / "candlekeep.yaml"), work))


def direct(rt: Runtime, todo: list[pa.Table]) -> float:
    a, b = rt.store("a"), rt.store("b")
    t = time.perf_counter()
    for batch in todo:
        a.upsert_candles(batch)
        b.upsert_candles(batch)
    return time.perf_counter() - t


def buffered(rt: Runtime, todo: list[pa.Table]) -> tuple[float, float]:
    buf = rt.store("buf")
    assert isinstance(buf, BufferStore)
    rt.state  # noqa: B018 - the state DB is created outside the timing, as in a daemon
    t = time.perf_counter()
    for batch in todo:
        buf.upsert_candles(batch)
    written = time.perf_counter() - t
    report = flush(buf)
    total = time.perf_counter() - t
    assert report.pending == 0 and not any(x.error for x in report.targets.values()), report
    return written, total


def count(store: Store) -> int:
    return sum(s.count for s in store.spans())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg", default=None, help="PostgreSQL URL for the second target")
    args = parser.parse_args()
    todo = batches(args.rows, args.batch, args.series)
    rows = sum(b.num_rows for b in todo)
    times: dict[str, list[float]] = {"direct": [], "buffer write": [], "buffer write+flush": []}
    for rep in range(args.repeat):
        order = ["direct", "buffer"] if rep % 2 == 0 else ["buffer", "direct"]
        for case in order:
            with tempfile.TemporaryDirectory(prefix="candlekeep-bench-") as tmp:
                rt = runtime(Path(tmp), args.pg)
                try:
                    if case == "direct":
                        times["direct"].append(direct(rt, todo))
                    else:
                        written, total = buffered(rt, todo)
                        times["buffer write"].append(written)
                        times["buffer write+flush"].append(total)
                    assert count(rt.store("a")) == rows and count(rt.store("b")) == rows
                finally:
                    import asyncio

                    asyncio.run(rt.aclose())
    targets = "DuckDB + PostgreSQL" if args.pg else "two DuckDB files"
    print(f"{rows:,} candles in {len(todo)} batches of <= {args.batch:,}, targets: {targets}")
    base = statistics.median(times["direct"])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:22s} {med:8.2f}s median {min(values):8.2f}s min {med / base:7.2f}x")
    ratio = statistics.median(times["buffer write+flush"]) / base
    verdict = "meets" if ratio <= 1.5 else "MISSES"
    print(f"\nbuffer write+flush / direct upserts = {ratio:.2f}x ({verdict} the 1.5x target)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
