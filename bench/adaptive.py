"""Adaptive rate limits: a backfill against a sim that enforces 1/20 of the budget it advertises.

Starts the simulated exchange as its own process (`candlekeep sim serve`) advertising
``--advertised`` weight per ``--window`` seconds in exchangeInfo but enforcing only
``--enforced`` (per IP, as Binance counts), then runs the real backfill job (CCXT source,
DuckDB store) twice on fresh stores:

- adaptive: nothing configured, so the source paces to the advertised budget and adapts
  (the bench gives the source the sim's advertised figures, as CcxtSource takes Binance's
  from sources/capabilities.py: the sim's short window keeps the run short);
- fixed: ``rate_limit`` set to the true budget, as a user who knows it would.

For each it prints the 429s and 418s received and the klines requests answered per second
as a fraction of the true ceiling (enforced / window / weight per klines request).

    python bench/adaptive.py                       # ~2 minutes
    python bench/adaptive.py --window 5 --days 120

Targets (issue #9): adaptive 429s <= 3, 418s 0, fraction >= 0.7; fixed 0 429s, >= 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from candlekeep.config import parse_config
from candlekeep.jobs.runner import build_params
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.manual import run_adhoc
from candlekeep.sources.ccxt_source import CcxtSource
from candlekeep.sources.ratelimit import WeightLimiter
from net import free_port, wait_listening

KLINES_WEIGHT = 2  # Binance spot, any limit
DAY = 86_400_000


@dataclass(frozen=True)
class Outcome:
    answered: int
    rate_limited: int
    banned: int
    cuts: int
    elapsed_s: float
    final_budget: int


async def run_backfill(folder: Path, url: str, args: argparse.Namespace,
                       adaptive: bool) -> Outcome:
    now = time.time_ns() // 1_000_000
    end = now // DAY * DAY
    source: dict[str, Any] = {"type": "ccxt", "exchange": "binance", "base_url": url}
    if not adaptive:
        source["rate_limit"] = {"weight": args.enforced, "window": args.window}
    raw = {
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"sb": source},
        "series": [{"source": "sb", "symbols": args.symbols.split(","), "timeframes": ["1m"],
                    "start": end - args.days * DAY, "end": end}],
    }
    cfg = parse_config(raw, str(folder / "candlekeep.yaml"), folder)
    rt = Runtime(cfg)
    src = rt.source("sb")
    assert isinstance(src, CcxtSource)
    if adaptive:  # what CcxtSource builds from capabilities, with the sim's advertised figures
        src.limiter = WeightLimiter(args.advertised, args.window, clock=src.clock,
                                    adaptive=True, name="sb")
    try:
        await src.markets()  # load markets before the clock starts: not a klines request
        await asyncio.sleep(args.window * 1.5)  # exchangeInfo's weight leaves the window
        before = src.stats.requests
        t0 = time.perf_counter()
        res = await run_adhoc(rt, "backfill", build_params("backfill", {"concurrency": 8}))
        elapsed = time.perf_counter() - t0
        if not res.ok:
            raise SystemExit(f"backfill failed: {res.errors}")
        snap = src.limiter.snapshot()
        sent = src.stats.requests - before
        return Outcome(sent - snap.rate_limited - snap.banned, snap.rate_limited, snap.banned,
                       snap.cuts, elapsed, snap.effective_budget)
    finally:
        await rt.aclose()


def report(name: str, out: Outcome, ceiling: float, targets: str) -> None:
    achieved = out.answered / out.elapsed_s
    print(f"{name:9} {out.answered} klines answered in {out.elapsed_s:.1f} s = "
          f"{achieved:.2f} req/s = {achieved / ceiling:.3f} of the ceiling; "
          f"429s {out.rate_limited}, 418s {out.banned}, cuts {out.cuts}, "
          f"final budget {out.final_budget}  ({targets})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--advertised", type=int, default=1200,
                    help="weight per window exchangeInfo advertises")
    ap.add_argument("--enforced", type=int, default=60,
                    help="weight per window the sim enforces")
    ap.add_argument("--window", type=float, default=3.0, help="window length, seconds")
    ap.add_argument("--days", type=int, default=70, help="history per symbol (1m candles)")
    ap.add_argument("--symbols", default="BTC/USDT,ETH/USDT,SOL/USDT,BNB/USDT")
    args = ap.parse_args()
    ceiling = args.enforced / args.window / KLINES_WEIGHT
    print(f"sim       advertises {args.advertised} weight / {args.window:g} s, enforces "
          f"{args.enforced}: ceiling {ceiling:.1f} klines requests/s")
    for adaptive in (True, False):
        port = free_port()  # a fresh sim each time: no budget or ban carried over
        server = subprocess.Popen(
            [sys.executable, "-m", "candlekeep", "sim", "serve", "--port", str(port),
             "--weight-limit", str(args.advertised), "--enforced-weight-limit",
             str(args.enforced), "--window", str(args.window)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(port)
            with tempfile.TemporaryDirectory() as tmp:
                out = asyncio.run(run_backfill(Path(tmp), f"http://127.0.0.1:{port}", args,
                                               adaptive))
        finally:
            server.terminate()
            server.wait(10)
        if adaptive:
            report("adaptive", out, ceiling, "targets: 429s <= 3, 418s 0, >= 0.7")
        else:
            report("fixed", out, ceiling, "targets: 429s 0, >= 0.9")


if __name__ == "__main__":
    main()
