"""The availability tracker's HEAD probes against bare httpx HEAD loops, same server, same run.

Goal (issue 7): probing 1,000 symbols x 20 days (20,000 HEADs) against the sim over
loopback through the tracker's probe function (``availability.probe.probe_all`` on the
client ``make_client`` builds, as a run uses them) takes at most 1.3x a bare asyncio/httpx
HEAD loop with the same concurrency against the same server.

Two bare loops are measured, and the goal is held against the faster:

- ``bare, one client``: one ``httpx.AsyncClient`` (pool limit = concurrency) shared by
  ``--concurrency`` workers, the loop anyone would write first. httpcore's pool rescans
  every queued request against every connection on each request's start and end, so this
  loop spends most of its time in the pool at 32 in flight;
- ``bare, client per worker``: each worker its own one-connection ``AsyncClient``: nothing
  for the pool to search, the fastest plain httpx gets.

The sim runs in its own process (uvicorn, one event loop) so that it does not share the
client's GIL. It computes a file's size by building the file once and then answers HEADs
from memory; every file is built before measuring (``--interval 1d`` by default: a day's
1d file builds in about a millisecond, a 1m file in about ten; the HEADs themselves do
not depend on the interval). Rounds are interleaved (tracker, bare, bare per worker) so
that load from elsewhere on the host hits all three alike; medians are printed. Exit
status 1 when a HEAD did not answer 200 or the goal was missed.

    python bench/availability.py [--symbols 1000] [--days 20] [--concurrency 32]
                                 [--rounds 2] [--interval 1d]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from multiprocessing.synchronize import Event
from typing import Any

import httpx

from candlekeep.availability.dataset import ProbeStatus
from candlekeep.availability.probe import ProbeTarget, make_client, probe_all
from candlekeep.core.clock import FakeClock, SystemClock
from candlekeep.core.timeutil import to_ms
from candlekeep.sources.binance_archive.paths import ArchiveFile, Market, Period
from net import free_port, wait_listening

GOAL = 1.3
NOW = to_ms("2025-03-01T06:00:00Z")
LAST_DAY = dt.date(2025, 2, 28)


def symbol(i: int) -> str:
    return f"S{i:04d}"


def serve(port: int, symbols: int, days: int, interval: str, ready: Event) -> None:
    """The sim in this (child) process: every probed file built once, then uvicorn."""
    import uvicorn

    from candlekeep.sim.archive import ArchiveSpec, parse_key
    from candlekeep.sim.exchange import SimExchange
    from candlekeep.sim.server import SimServerApp

    exchange = SimExchange(7, {f"{symbol(i)}/USDT": "2020-01-01" for i in range(symbols)},
                           clock=FakeClock(NOW), transient=None)
    app = SimServerApp(exchange, ArchiveSpec(intervals=(interval,)))
    for f in files(symbols, days, interval):
        parsed = parse_key(f.path)
        assert parsed is not None and app.archive.exists(parsed[0]), f.path
        app.archive.size_and_md5(parsed[0])
    ready.set()
    uvicorn.run(app.app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                lifespan="off", loop="asyncio")


def files(symbols: int, days: int, interval: str) -> list[ArchiveFile]:
    return [ArchiveFile(Market.USDM, f"{symbol(i)}USDT", interval, Period.DAILY,
                        LAST_DAY - dt.timedelta(days=d))
            for d in range(days) for i in range(symbols)]


async def tracker(urls: list[str], concurrency: int) -> tuple[float, int]:
    targets = [ProbeTarget("", LAST_DAY, u) for u in urls]
    async with make_client(concurrency, 30.0) as client:
        t = time.perf_counter()
        probes = await probe_all(client, targets, concurrency=concurrency,
                                 clock=SystemClock())
        elapsed = time.perf_counter() - t
    return elapsed, sum(p.status is not ProbeStatus.AVAILABLE for p in probes)


async def bare_one_client(urls: list[str], concurrency: int) -> tuple[float, int]:
    bad = 0
    limits = httpx.Limits(max_connections=concurrency,
                          max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        items = iter(urls)

        async def worker() -> None:
            nonlocal bad
            for url in items:
                if (await client.head(url)).status_code != 200:
                    bad += 1

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t, bad


async def bare_client_per_worker(urls: list[str], concurrency: int) -> tuple[float, int]:
    bad = 0
    clients = [httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=1))
               for _ in range(concurrency)]
    items = iter(urls)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal bad
        for url in items:
            if (await client.head(url)).status_code != 200:
                bad += 1

    try:
        t = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        return time.perf_counter() - t, bad
    finally:
        for c in clients:
            await c.aclose()


Loop = Callable[[list[str], int], Coroutine[Any, Any, tuple[float, int]]]
LOOPS: dict[str, Loop] = {"tracker (probe_all)": tracker,
                          "bare, one client": bare_one_client,
                          "bare, client per worker": bare_client_per_worker}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--symbols", type=int, default=1000)
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--interval", default="1d")
    args = ap.parse_args()

    port = free_port()
    ready = mp.Event()
    server = mp.Process(target=serve, args=(port, args.symbols, args.days, args.interval,
                                            ready), daemon=True)
    t0 = time.perf_counter()
    server.start()
    try:
        if not ready.wait(3600):
            raise SystemExit("the sim did not finish building its files")
        wait_listening(port)
        print(f"sim ready: {args.symbols * args.days:,} {args.interval} files built in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        base = f"http://127.0.0.1:{port}"
        urls = [f.url(base) for f in files(args.symbols, args.days, args.interval)]
        asyncio.run(tracker(urls[:500], args.concurrency))  # warm-up: imports, sockets
        times: dict[str, list[float]] = {name: [] for name in LOOPS}
        bad = 0
        for r in range(args.rounds):
            for name, loop in LOOPS.items():
                elapsed, wrong = asyncio.run(loop(urls, args.concurrency))
                bad += wrong
                times[name].append(elapsed)
                print(f"round {r + 1} {name:<26} {elapsed:7.2f}s "
                      f"{len(urls) / elapsed:7.0f} HEAD/s", flush=True)
    finally:
        server.terminate()
        server.join(5)
    med = {name: statistics.median(v) for name, v in times.items()}
    best_bare = min(med["bare, one client"], med["bare, client per worker"])
    ratio = med["tracker (probe_all)"] / best_bare
    print(f"\n{len(urls):,} HEADs, concurrency {args.concurrency}, medians of "
          f"{args.rounds} rounds:")
    for name, m in med.items():
        print(f"  {name:<26} {m:7.2f}s {len(urls) / m:7.0f} HEAD/s")
    print(f"  tracker / faster bare loop = {ratio:.2f}x (goal <= {GOAL}x); "
          f"tracker / one-client bare loop = "
          f"{med['tracker (probe_all)'] / med['bare, one client']:.2f}x")
    if bad:
        print(f"FAILED: {bad} HEADs did not answer 200")
    if ratio > GOAL:
        print("FAILED: goal missed")
    sys.exit(1 if bad or ratio > GOAL else 0)


if __name__ == "__main__":
    main()
