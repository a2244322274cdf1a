"""Adaptive rate limits: backfills against a sim that enforces less than it advertises.

Starts the simulated exchange as its own process (`candlekeep sim serve`) advertising
``--advertised`` weight per ``--window`` seconds in exchangeInfo but enforcing only
``--enforced`` (per IP, as Binance counts), then runs the real backfill job (CCXT source,
DuckDB store) on fresh stores, for about ``--windows`` windows each:

- adaptive: nothing configured, so the source paces to the advertised budget and adapts
  (the bench gives the source the sim's advertised figures, as CcxtSource takes Binance's
  from sources/capabilities.py: the sim's short window keeps the run short; CCXT does not
  keep exchangeInfo's rateLimits, so the source cannot read them itself);
- fixed: ``rate_limit`` set to the true budget, as a user who knows it would.

For each it prints the 429s and 418s received (and 429s per 100 windows) and the klines
requests answered per second as a fraction of the true ceiling (enforced / window /
weight per klines request). Then a third case: enforced = advertised and every reply
delayed (``--slow-rate`` of them by the sim's 0.5 s), where the budget never binds and
adaptive must keep up with fixed: it prints adaptive / fixed achieved rate.

    python bench/adaptive.py                       # ~3 minutes
    python bench/adaptive.py --window 2 --windows 100

Targets (issue #9): adaptive 429s <= 3, 418s 0, fraction >= 0.7; fixed 0 429s, >= 0.9;
slow replies: adaptive / fixed >= 1 (within noise).
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


async def run_backfill(folder: Path, url: str, args: argparse.Namespace, advertised: int,
                       enforced: int | None, days: int) -> Outcome:
    """The backfill job over ``days`` of history per symbol; ``enforced``: the budget
    configured (fixed), None for adaptive from ``advertised``."""
    now = time.time_ns() // 1_000_000
    end = now // DAY * DAY
    source: dict[str, Any] = {"type": "ccxt", "exchange": "binance", "base_url": url}
    if enforced is not None:
        source["rate_limit"] = {"weight": enforced, "window": args.window}
    raw = {
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"sb": source},
        "series": [{"source": "sb", "symbols": args.symbols.split(","), "timeframes": ["1m"],
                    "start": end - days * DAY, "end": end}],
    }
    cfg = parse_config(raw, str(folder / "candlekeep.yaml"), folder)
    rt = Runtime(cfg)
    src = rt.source("sb")
    assert isinstance(src, CcxtSource)
    if enforced is None:  # what CcxtSource builds from capabilities, with the sim's figures
        src.limiter = WeightLimiter(advertised, args.window, clock=src.clock,
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


def run_case(args: argparse.Namespace, advertised: int, enforced: int, adaptive: bool,
             days: int, slow_rate: float = 0.0) -> Outcome:
    """One backfill against a fresh sim process (no budget or ban carried over)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "candlekeep", "sim", "serve", "--port", str(port),
         "--weight-limit", str(advertised), "--enforced-weight-limit", str(enforced),
         "--window", str(args.window), "--slow-rate", str(slow_rate)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        with tempfile.TemporaryDirectory() as tmp:
            return asyncio.run(run_backfill(Path(tmp), f"http://127.0.0.1:{port}", args,
                                            advertised, None if adaptive else enforced, days))
    finally:
        server.terminate()
        server.wait(10)


def report(name: str, out: Outcome, ceiling: float, window_s: float, targets: str) -> float:
    achieved = out.answered / out.elapsed_s
    windows = out.elapsed_s / window_s
    print(f"{name:9} {out.answered} klines answered in {out.elapsed_s:.1f} s "
          f"({windows:.0f} windows) = {achieved:.2f} req/s = {achieved / ceiling:.3f} of the "
          f"ceiling; 429s {out.rate_limited} ({100 * out.rate_limited / windows:.1f} per 100 "
          f"windows), 418s {out.banned}, cuts {out.cuts}, final budget {out.final_budget}"
          f"  ({targets})")
    return achieved


def history_days(requests: float, symbols: int) -> int:
    """Days of 1m history per symbol that take ``requests`` klines pages in all."""
    return max(1, round(requests * 1000 / 1440 / symbols))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--advertised", type=int, default=400,
                    help="weight per window exchangeInfo advertises")
    ap.add_argument("--enforced", type=int, default=20,
                    help="weight per window the sim enforces")
    ap.add_argument("--window", type=float, default=1.0, help="window length, seconds")
    ap.add_argument("--windows", type=int, default=64,
                    help="windows each backfill should take at the true ceiling")
    ap.add_argument("--symbols", default="BTC/USDT,ETH/USDT,SOL/USDT,BNB/USDT")
    ap.add_argument("--slow-rate", type=float, default=1.0,
                    help="share of replies the sim delays by 0.5 s in the third case")
    ap.add_argument("--slow-windows", type=int, default=15,
                    help="windows the slow-reply backfills take (8 pages in flight)")
    args = ap.parse_args()
    symbols = len(args.symbols.split(","))
    ceiling = args.enforced / args.window / KLINES_WEIGHT
    days = history_days(ceiling * args.window * args.windows, symbols)
    print(f"sim       advertises {args.advertised} weight / {args.window:g} s, enforces "
          f"{args.enforced}: ceiling {ceiling:.1f} klines requests/s; {days} days x "
          f"{symbols} symbols")
    out = run_case(args, args.advertised, args.enforced, True, days)
    report("adaptive", out, ceiling, args.window, "targets: 429s <= 3, 418s 0, >= 0.7")
    out = run_case(args, args.advertised, args.enforced, False, days)
    report("fixed", out, ceiling, args.window, "targets: 429s 0, >= 0.9")

    full = args.advertised / args.window / KLINES_WEIGHT
    slow_days = history_days(8 / 0.5 * args.window * args.slow_windows, symbols)
    print(f"sim       enforces what it advertises ({args.advertised}), {args.slow_rate:.0%} "
          f"of replies delayed 0.5 s; {slow_days} days x {symbols} symbols")
    rates = [report(name, run_case(args, args.advertised, args.advertised, adaptive,
                                   slow_days, args.slow_rate),
                    full, args.window, "the budget does not bind")
             for name, adaptive in (("adaptive", True), ("fixed", False))]
    print(f"slow      adaptive / fixed achieved rate {rates[0] / rates[1]:.3f}  (target >= 1)")


if __name__ == "__main__":
    main()
