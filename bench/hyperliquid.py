"""Hyperliquid accounts: requests made by ``hyperliquid_accounts`` ÷ the fewest possible.

Goal (issue 8): pulling 10 accounts x 30 days of fills, funding payments and ledger updates
from the sim makes at most 1.2x the requests strictly needed, and a second run right after
makes exactly one request per dataset per account and writes 0 rows.

The fewest possible requests per dataset and account are the pages its events fill,
computed from the sim's truth: ceil(events / page size) with at least one (2,000 fills,
500 funding payments or ledger updates a page; of fills, only the 10,000 most recent are
served, so an account busier than that needs 5 pages and the run warns that older fills are
out of reach). Paging can cost more than that for two
reasons only: a page cut inside one millisecond is asked again from that millisecond (the
events of it seen twice), and a dataset whose events fill whole pages exactly needs one
more (empty) reply to know it has ended.

The sim runs in its own process (uvicorn; its clock stopped at NOW, every account's history
generated before measuring) and counts the requests it answers per type; the job runs here
through the run path into a DuckDB store, its state DB in a temporary folder. Exit status 1
when the goal is missed or the stored rows differ from the truth's counts.

    python bench/hyperliquid.py [--accounts 10] [--days 30] [--fills-per-day 150]
                                [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from candlekeep.core.timeutil import to_ms
from net import free_port, wait_listening

GOAL = 1.2
NOW = to_ms("2025-03-01T06:00:30Z")
DAY_MS = 86_400_000
PAGES = {"fills": 2000, "funding": 500, "ledger": 500}
TYPES = {"fills": "userFillsByTime", "funding": "userFunding",
         "ledger": "userNonFundingLedgerUpdates"}
TABLES = {"fills": "fills", "funding": "funding_payments", "ledger": "ledger_updates"}


def serve(port: int, accounts: int, days: int, fills_per_day: float, conn: Connection) -> None:
    """The sim in this (child) process: histories generated, then uvicorn; a thread answers
    the parent's questions (the truth's counts, requests answered) over ``conn``."""
    import uvicorn

    from candlekeep.core.clock import FakeClock
    from candlekeep.sim.exchange import SimExchange
    from candlekeep.sim.hyperliquid.app import HyperliquidSim
    from candlekeep.sim.hyperliquid.spec import AccountSpec, HyperliquidSpec, derive_addresses
    from candlekeep.sim.server import SimServerApp

    start = NOW - days * DAY_MS
    addresses = derive_addresses(11, accounts)
    spec = HyperliquidSpec(accounts=tuple(
        AccountSpec(a, fills_per_day=fills_per_day, ledger_per_day=2.0, start=start)
        for a in addresses), weight_limit=10**9)
    exchange = SimExchange(11, clock=FakeClock(NOW), holes=None, transient=None)
    hl = HyperliquidSim(exchange, spec)
    # Fills beyond the 10,000 most recent are not served: the truth is what can be had.
    truth = {a: {"fills": len(hl.reachable_fills(a)), "funding": len(hl.funding(a, start)),
                 "ledger": len(hl.ledger(a, start))} for a in addresses}
    app = SimServerApp(exchange, hyperliquid=hl)

    def answer() -> None:
        while True:
            ask = conn.recv()
            if ask == "truth":
                conn.send((start, truth))
            elif ask == "requests":
                conn.send(dict(hl.requests_by_type))

    threading.Thread(target=answer, daemon=True).start()
    conn.send("ready")
    uvicorn.run(app.app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                lifespan="off", loop="asyncio")


def fewest(truth: dict[str, dict[str, int]]) -> dict[str, int]:
    """Per dataset, the pages its events need over every account (at least one each)."""
    return {d: sum(max(1, math.ceil(counts[d] / PAGES[d])) for counts in truth.values())
            for d in PAGES}


async def run_job(folder: Path, url: str, addresses: list[str], since: int,
                  concurrency: int) -> tuple[Any, float]:
    from candlekeep.config import parse_config
    from candlekeep.jobs.base import JobResult
    from candlekeep.jobs.runner import build_params
    from candlekeep.jobs.runtime import Runtime
    from candlekeep.scheduler.manual import adhoc_spec
    from candlekeep.scheduler.runpath import execute_attempt

    cfg = parse_config({
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/accounts.duckdb"}},
        "sources": {"hl": {"type": "hyperliquid", "base_url": url,
                           "weight_per_minute": 10**9}},
        "accounts": [{"name": f"acct{i}", "address": a, "source": "hl"}
                     for i, a in enumerate(addresses)],
    }, str(folder / "candlekeep.yaml"), folder)
    rt = Runtime(cfg)
    try:
        spec = adhoc_spec("hyperliquid_accounts", build_params("hyperliquid_accounts", {
            "datasets": list(PAGES), "since": since, "concurrency": concurrency}))
        t = time.perf_counter()
        attempt = await execute_attempt(rt, spec, asyncio.Event())
        elapsed = time.perf_counter() - t
        if attempt.error is not None:
            raise SystemExit(f"the run failed: {attempt.error}")
        stored = {d: rt.store("main").stats([TABLES[d]]) for d in PAGES}
        res = attempt.result or JobResult()
        res.details["stored"] = {d: (s[0].rows if s else 0) for d, s in stored.items()}
        return res, elapsed
    finally:
        await rt.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--accounts", type=int, default=10)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--fills-per-day", type=float, default=150.0)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()

    port = free_port()
    here, there = mp.Pipe()
    server = mp.Process(target=serve, args=(port, args.accounts, args.days,
                                            args.fills_per_day, there), daemon=True)
    t0 = time.perf_counter()
    server.start()
    failed = []
    try:
        if not here.poll(3600) or here.recv() != "ready":
            raise SystemExit("the sim did not finish generating its accounts")
        wait_listening(port)
        here.send("truth")
        since, truth = here.recv()
        addresses = list(truth)
        totals = {d: sum(c[d] for c in truth.values()) for d in PAGES}
        need = fewest(truth)
        print(f"sim ready in {time.perf_counter() - t0:.1f}s: {len(addresses)} accounts x "
              f"{args.days} days: " + ", ".join(f"{totals[d]:,} {d}" for d in PAGES),
              flush=True)
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            first, t_first = asyncio.run(run_job(folder, url, addresses, since,
                                                 args.concurrency))
            here.send("requests")
            after_first = here.recv()
            second, t_second = asyncio.run(run_job(folder, url, addresses, since,
                                                   args.concurrency))
            here.send("requests")
            after_second = here.recv()
    finally:
        server.terminate()
        server.join(5)

    print(f"\nfirst run: {first.rows_written:,} rows in {t_first:.2f}s, "
          f"{first.requests} requests, {len(first.warnings)} warnings")
    for w in first.warnings[:3]:
        print(f"  warning: {w}")
    made_total = need_total = 0
    for d in PAGES:
        made = after_first.get(TYPES[d], 0)
        made_total += made
        need_total += need[d]
        stored = first.details["stored"][d]
        print(f"  {d:<8} {made:5d} requests / {need[d]:5d} pages needed = "
              f"{made / need[d]:.3f}x   stored {stored:,} of {totals[d]:,}")
        if stored != totals[d]:
            failed.append(f"{d}: stored {stored} rows, the truth has {totals[d]}")
    ratio = made_total / need_total
    print(f"  all      {made_total:5d} requests / {need_total:5d} pages needed = {ratio:.3f}x "
          f"(goal <= {GOAL}x)")
    if ratio > GOAL:
        failed.append(f"requests / pages needed = {ratio:.3f}x > {GOAL}x")

    second_made = {d: after_second.get(TYPES[d], 0) - after_first.get(TYPES[d], 0)
                   for d in PAGES}
    print(f"second run: {second.rows_written} rows in {t_second:.2f}s, requests "
          + ", ".join(f"{d} {n}" for d, n in second_made.items())
          + f" (goal: {len(addresses)} each, 0 rows)")
    if second.rows_written != 0:
        failed.append(f"the second run wrote {second.rows_written} rows")
    if any(n != len(addresses) for n in second_made.values()):
        failed.append(f"the second run made {second_made} requests")
    for f in failed:
        print(f"FAILED: {f}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
