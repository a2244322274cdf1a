"""Bulk backfill from the archive ÷ DuckDB loading the same CSVs itself.

Starts the simulated exchange (REST and archive) in its own process, so building its ZIPs
does not share our GIL, and warms it: every monthly file of the range is fetched once (and
held: ``ArchiveSpec.cache_files`` covers them all), its CSV written unzipped to disk for the
baseline. Then, in one run:

- bulk: the real ``backfill`` job through the run path (a CCXT Binance source with a ``bulk``
  block, a fresh DuckDB store): download, CHECKSUM, unzip, parse, validate, upsert,
  checkpoint per file, and the gap scan the backfill ends with;
- baseline: ``CREATE TABLE t AS SELECT * FROM read_csv([...])`` of the same CSVs (the 12
  columns as they are, microsecond times of 2025 spot files included) in a fresh DuckDB file;
- REST, for contrast: Binance's default spot budget (6000 weight/min, 2 per 1000-candle
  klines request) puts a floor under the same backfill; a short REST-only backfill measured
  against the same server gives its pace when the budget does not bind.

    python bench/bulk.py            # 6 years of 1m (~3.1M candles), 3 runs each: ~2 min
    python bench/bulk.py --quick    # 6 months
    python bench/bulk.py --stages   # and the time of each stage of the bulk path

Both sides run ``--repeat`` times, alternating, so they share the machine's noise; medians
are reported. Target (issue #7): bulk ÷ baseline <= 2.5.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import multiprocessing as mp
import shutil
import statistics
import threading
import time
import zipfile
from datetime import date
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from candlekeep.config import parse_config
from candlekeep.core.timeutil import to_ms
from candlekeep.jobs.runner import build_params
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.manual import run_adhoc
from net import free_port, wait_listening

SYMBOL, SYMBOL_ID = "BTC/USDT", "BTCUSDT"
END = "2025-07-01"  # a month boundary: the range is whole monthly files (6 of them µs)
BUDGET_WEIGHT, BUDGET_WINDOW_S, KLINES_WEIGHT, PAGE = 6000, 60.0, 2, 1000
REST_DAYS = 30  # the measured REST-only range
CSV_COLUMNS = {
    "open_time": "BIGINT", "open": "DOUBLE", "high": "DOUBLE", "low": "DOUBLE",
    "close": "DOUBLE", "volume": "DOUBLE", "close_time": "BIGINT", "quote_volume": "DOUBLE",
    "count": "BIGINT", "taker_buy_volume": "DOUBLE", "taker_buy_quote_volume": "DOUBLE",
    "ignore": "VARCHAR",
}


def serve_sim(port: int, files: int) -> None:
    """The sim server process: REST and an archive that keeps every file it builds."""
    import uvicorn

    from candlekeep.sim.archive import ArchiveSpec
    from candlekeep.sim.exchange import SimExchange
    from candlekeep.sim.server import create_app

    exchange = SimExchange(7, {SYMBOL: "2017-08-17"}, transient=None)
    app = create_app(exchange, ArchiveSpec(cache_files=files + 8))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                lifespan="off", loop="asyncio")


def months(start: date, end: date) -> list[date]:
    out, m = [], start
    while m < end:
        out.append(m)
        m = date(m.year + m.month // 12, m.month % 12 + 1, 1)
    return out


def warm(url: str, first: list[date], csv_dir: Path) -> tuple[list[Path], float, float, int]:
    """Fetch every file (ZIP and CHECKSUM) twice: the first pass builds them, the second
    shows they are all held. The CSVs go to ``csv_dir`` for the baseline."""
    folder = f"{url}/data/spot/monthly/klines/{SYMBOL_ID}/1m/"
    paths: list[Path] = []
    passes, size = [], 0
    with httpx.Client(timeout=120.0) as http:
        for attempt in range(2):
            t = time.perf_counter()
            for m in first:
                name = f"{SYMBOL_ID}-1m-{m:%Y-%m}"
                http.get(f"{folder}{name}.zip.CHECKSUM").raise_for_status()
                reply = http.get(f"{folder}{name}.zip")
                reply.raise_for_status()
                if attempt == 0:
                    size += len(reply.content)
                    with zipfile.ZipFile(io.BytesIO(reply.content)) as zf:
                        path = csv_dir / f"{name}.csv"
                        path.write_bytes(zf.read(f"{name}.csv"))
                        paths.append(path)
            passes.append(time.perf_counter() - t)
    return paths, passes[0], passes[1], size


def baseline(paths: list[Path], db: Path) -> tuple[float, int]:
    import duckdb

    con = duckdb.connect(str(db))
    files = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    cols = "{" + ", ".join(f"'{k}': '{v}'" for k, v in CSV_COLUMNS.items()) + "}"
    t = time.perf_counter()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv({files}, header = false, "
                f"columns = {cols})")
    con.close()  # checkpoints, as the store's writes do
    elapsed = time.perf_counter() - t
    con = duckdb.connect(str(db), read_only=True)
    row = con.execute("SELECT count(*) FROM t").fetchone()
    con.close()
    assert row is not None
    return elapsed, int(row[0])


async def backfill(folder: Path, url: str, start: str, end: str, *, bulk: bool,
                   concurrency: int, profile: Path | None = None
                   ) -> tuple[float, int, int, dict[str, Any]]:
    """The backfill job over [start, end): seconds, rows written, REST requests, details."""
    source: dict[str, Any] = {"type": "ccxt", "exchange": "binance", "base_url": url,
                              "rate_limit": {"weight": BUDGET_WEIGHT,
                                             "window": BUDGET_WINDOW_S}}
    if bulk:
        source["bulk"] = {"base_url": url, "concurrency": concurrency}
    raw = {
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"bn": source},
        "series": [{"source": "bn", "symbols": [SYMBOL], "timeframes": ["1m"],
                    "start": to_ms(start), "end": to_ms(end)}],
    }
    rt = Runtime(parse_config(raw, str(folder / "candlekeep.yaml"), folder))
    try:
        await rt.source("bn").markets()  # exchangeInfo before the clock starts
        prof = None
        if profile is not None:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t = time.perf_counter()
        res = await run_adhoc(rt, "backfill", build_params("backfill", {}))
        elapsed = time.perf_counter() - t
        if prof is not None:
            prof.disable()
            prof.dump_stats(str(profile))
        if not res.ok:
            raise SystemExit(f"backfill failed: {res.errors}")
        return elapsed, res.rows_written, res.requests, dict(res.details)
    finally:
        await rt.aclose()


class Stages:
    """Wall time per stage of the bulk path, summed over the threads that ran it (parses of
    files in flight overlap, so the sum can exceed the run): wraps the functions each stage
    is, for ``--stages`` only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _add(self, label: str, t0: float) -> None:
        with self._lock:
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0
            self.calls[label] = self.calls.get(label, 0) + 1

    def wrap(self, owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self._add(label, t0)

        setattr(owner, name, timed)

    def wrap_async(self, owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        async def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*a, **k)
            finally:
                self._add(label, t0)

        setattr(owner, name, timed)

    def install(self) -> None:
        from candlekeep.jobs import backfill as job
        from candlekeep.jobs.bulk_fetch import ArchiveWriter
        from candlekeep.sources.binance_archive import client, parse
        from candlekeep.stores.duckdb_store import DuckDBStore

        self.wrap_async(client.ArchiveClient, "_get", "download (HTTP GET, on the loop)")
        self.wrap(parse, "verify_checksum", "checksum (SHA-256)")
        self.wrap(parse, "_unzip", "unzip")
        self.wrap(parse, "_read", "CSV parse (Arrow)")
        self.wrap(parse, "validate_candles", "validation")
        self.wrap(client, "read_kline_zip", "checksum+unzip+parse+validate")
        self.wrap(DuckDBStore, "upsert_candles", "DuckDB upsert (in its thread)")
        self.wrap_async(ArchiveWriter, "flush", "write + checkpoint (on the loop)")
        self.wrap_async(job, "scan_gaps", "gap scan")

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="6 months instead of 6 years")
    ap.add_argument("--years", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side; medians shown")
    ap.add_argument("--concurrency", type=int, default=4, help="the bulk block's downloads")
    ap.add_argument("--stages", action="store_true",
                    help="time each stage of the bulk path (last run)")
    ap.add_argument("--profile", type=Path, help="cProfile the last bulk run into this file")
    args = ap.parse_args()
    end = date.fromisoformat(END)
    if args.quick:
        first = date(end.year - (1 if end.month <= 6 else 0), (end.month - 7) % 12 + 1, 1)
    else:
        first = date(end.year - args.years, end.month, 1)
    files = months(first, end)
    stages = Stages()
    if args.stages:
        stages.install()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = mp.get_context("spawn").Process(target=serve_sim, args=(port, len(files)),
                                             daemon=True)
    server.start()
    base_runs: list[float] = []
    bulk_runs: list[float] = []
    try:
        wait_listening(port)
        with TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "csv").mkdir()
            paths, build_s, held_s, zbytes = warm(url, files, root / "csv")
            for rep in range(args.repeat):  # alternating, so both sides share the noise
                last = rep == args.repeat - 1
                run_dir = root / f"run{rep}"
                run_dir.mkdir()
                base_s, base_rows = baseline(paths, run_dir / "baseline.duckdb")
                base_runs.append(base_s)
                stages.reset()
                bulk_s, rows, bulk_requests, details = asyncio.run(backfill(
                    run_dir, url, first.isoformat(), END, bulk=True,
                    concurrency=args.concurrency, profile=args.profile if last else None))
                bulk_runs.append(bulk_s)
                seconds, calls = dict(stages.seconds), dict(stages.calls)
                if rows != base_rows:
                    raise SystemExit(f"bulk stored {rows} rows, the baseline loaded {base_rows}")
                shutil.rmtree(run_dir)
            (root / "rest").mkdir()
            rest_end = to_ms(END)
            rest_start = rest_end - REST_DAYS * 86_400_000
            rest_s, rest_rows, rest_requests, _ = asyncio.run(backfill(
                root / "rest", url, time.strftime("%Y-%m-%d", time.gmtime(rest_start / 1000)),
                END, bulk=False, concurrency=4))
    finally:
        server.terminate()
        server.join(10)

    base_s, bulk_s = statistics.median(base_runs), statistics.median(bulk_runs)
    requests_full = -(-rows // PAGE)
    floor_s = requests_full * KLINES_WEIGHT / BUDGET_WEIGHT * BUDGET_WINDOW_S
    paced_s = rest_s / rest_rows * rows
    rest_full_s = max(floor_s, paced_s)
    stats = details.get("archive", {})

    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    print(f"range             {first} → {END}: {len(files)} monthly 1m files, {rows:,} candles, "
          f"{zbytes / 1e6:.0f} MB zipped")
    print(f"sim warm-up       built in {build_s:.1f} s, served again from cache in {held_s:.1f} s")
    print(f"baseline          DuckDB read_csv of the unzipped CSVs: {base_s:.2f} s median "
          f"({base_rows / base_s / 1e6:.2f} M rows/s; runs {runs(base_runs)})")
    print(f"bulk backfill     {bulk_s:.2f} s median ({rows / bulk_s / 1e6:.2f} M rows/s; "
          f"runs {runs(bulk_runs)}; {stats.get('files', 0)} files, {bulk_requests} REST "
          f"requests)")
    print(f"ratio             bulk ÷ baseline = {bulk_s / base_s:.2f}  (target <= 2.5)")
    print(f"REST measured     {REST_DAYS} days, {rest_requests} requests in {rest_s:.2f} s "
          f"→ {paced_s:.1f} s for the same {rows:,} candles unthrottled")
    print(f"REST budget floor {requests_full:,} requests x {KLINES_WEIGHT} weight at "
          f"{BUDGET_WEIGHT}/{BUDGET_WINDOW_S:g} s = {floor_s:.1f} s")
    print(f"REST estimate     {rest_full_s:.1f} s = {rest_full_s / bulk_s:.1f}x the bulk backfill")
    if args.stages:
        print(f"stages of the last bulk run ({bulk_runs[-1]:.2f} s), summed over threads:")
        for label, sec in seconds.items():
            print(f"  {label:34s} {sec:6.2f} s in {calls[label]} calls")


if __name__ == "__main__":
    main()
