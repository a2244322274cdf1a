"""Backfill throughput against a rate budget.

Starts the simulated exchange as its own process (`candlekeep sim serve`) with a request-weight
budget, runs the real backfill job (CCXT source, DuckDB store) over enough history to keep the
budget saturated, and reports the request rate achieved as a fraction of the budget's ceiling
(budget / window / weight per klines request), plus the 429/418 replies received.

    python bench/backfill.py                      # ~60 s
    python bench/backfill.py --days 120 --window 5

Targets (issue #2): fraction >= 0.9, zero 429s.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from candlekeep.config import parse_config
from candlekeep.jobs.runner import build_params
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.manual import run_adhoc
from net import free_port, wait_listening

KLINES_WEIGHT = 2  # Binance spot, any limit
DAY = 86_400_000


async def run_backfill(folder: Path, url: str, args: argparse.Namespace) -> tuple[int, int, float]:
    now = time.time_ns() // 1_000_000
    end = now // DAY * DAY
    raw = {
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"sb": {"type": "ccxt", "exchange": "binance", "base_url": url,
                           "rate_limit": {"weight": args.weight, "window": args.window}}},
        "series": [{"source": "sb", "symbols": args.symbols.split(","), "timeframes": ["1m"],
                    "start": end - args.days * DAY, "end": end}],
    }
    cfg = parse_config(raw, str(folder / "candlekeep.yaml"), folder)
    rt = Runtime(cfg)
    source = rt.source("sb")
    try:
        await source.markets()  # load markets before the clock starts: not a klines request
        t0 = time.perf_counter()
        res = await run_adhoc(rt, "backfill", build_params("backfill", {"concurrency": 8}))
        elapsed = time.perf_counter() - t0
        if not res.ok:
            raise SystemExit(f"backfill failed: {res.errors}")
        return res.requests, source.stats.rate_limited, elapsed
    finally:
        await rt.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--weight", type=int, default=1200, help="server weight budget per window")
    ap.add_argument("--window", type=float, default=10.0, help="window length, seconds")
    ap.add_argument("--days", type=int, default=250, help="history per symbol (1m candles)")
    ap.add_argument("--symbols", default="BTC/USDT,ETH/USDT,SOL/USDT,BNB/USDT")
    args = ap.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "candlekeep", "sim", "serve", "--port", str(port),
         "--weight-limit", str(args.weight), "--window", str(args.window)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        with tempfile.TemporaryDirectory() as tmp:
            requests, limited, elapsed = asyncio.run(
                run_backfill(Path(tmp), f"http://127.0.0.1:{port}", args))
    finally:
        server.terminate()
        server.wait(10)
    ceiling = args.weight / args.window / KLINES_WEIGHT
    achieved = requests / elapsed
    print(f"budget            {args.weight} weight / {args.window:g} s "
          f"= {ceiling:.1f} klines requests/s ceiling")
    print(f"backfill          {requests} requests in {elapsed:.1f} s = {achieved:.1f} req/s")
    print(f"fraction          {achieved / ceiling:.3f}  (target >= 0.9)")
    print(f"429/418 replies   {limited}  (target 0)")


if __name__ == "__main__":
    main()
