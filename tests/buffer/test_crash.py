"""kill -9 at any moment: of a flush, over and over, and of a writer.

A flush killed anywhere (in a target's transaction, between an upsert and its
acknowledgement, between deleting a file and forgetting its acknowledgements) must leave a
state from which the next flush ends with every written row in every target exactly once,
the last write of each key winning. One target is DuckDB, whose candles table has no primary
key, so a file written twice there would show as duplicate rows; the other is PostgreSQL.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from typing import Any

import pytest

from candlekeep.buffer.flush import flush
from candlekeep.buffer.store import BufferStore
from tests.buffer import procs
from tests.buffer.conftest import OpenRuntime, WriteConfig
from tests.buffer.data import assert_exactly, expected, overlapping_batches
from tests.stores.candle_data import BTC, T0, candles, grid

pytestmark = pytest.mark.slow

KILLS = 20
FIRST = 30


@pytest.fixture(scope="module")
def forkserver() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.buffer.procs"])
    return ctx


def _next(conn: Connection) -> Any:
    """The next message a (possibly dead) child left in its pipe; None when none is left."""
    try:
        return conn.recv() if conn.poll() else None
    except EOFError:
        return None


def test_flush_killed_at_random_moments_loses_and_doubles_nothing(
        write_config: WriteConfig, open_runtime: OpenRuntime, forkserver: ForkServerContext,
        pg_url: str) -> None:
    """Jobs keep writing while flushes are killed; the batches overwrite each other's
    keys, so a file applied twice or out of order would leave a wrong price."""
    config = write_config(b={"type": "postgresql", "dsn": pg_url, "schema": "flushed"})
    rt = open_runtime(config)
    buf = rt.store("buf")
    assert isinstance(buf, BufferStore)
    batches = overlapping_batches(count=FIRST + KILLS, rows=80, step=50)
    for b in batches[:FIRST]:
        buf.upsert_candles(b)
    rng = random.Random(20240601)
    window = 0.8
    interrupted = 0
    for i in range(KILLS):
        started, tell = forkserver.Pipe(duplex=False)
        child = forkserver.Process(target=procs.flush_child, args=(str(config), 160, tell))
        child.start()
        tell.close()
        assert started.recv() == "flushing"
        buf.upsert_candles(batches[FIRST + i])
        time.sleep(rng.uniform(0, window))  # picks the moment of the kill; awaits nothing
        child.kill()
        child.join()
        if _next(started) == "done":
            window /= 2  # this machine flushes faster than the window: aim earlier
        else:
            interrupted += 1
        started.close()
    assert interrupted > 0
    report = flush(buf)
    assert report.pending == 0 and buf.folder.pending() == []
    for target in ("a", "b"):
        assert_exactly(rt.store(target), batches)


def test_writer_killed_mid_batch_keeps_every_acknowledged_batch(
        write_config: WriteConfig, open_runtime: OpenRuntime, forkserver: ForkServerContext,
        pg_url: str) -> None:
    config = write_config(b={"type": "postgresql", "dsn": pg_url, "schema": "flushed"})
    rt = open_runtime(config)
    buf = rt.store("buf")
    assert isinstance(buf, BufferStore)
    batches = [candles(BTC, grid(BTC, T0 + i * 600_000_000, 2_000), price=float(i))
               for i in range(200)]
    acked, tell = forkserver.Pipe(duplex=False)
    child = forkserver.Process(target=procs.write_child, args=(str(config), batches, tell))
    child.start()
    tell.close()
    assert acked.recv() == -1
    last = -1
    while last < 20:
        last = acked.recv()
    child.kill()
    child.join()
    while (more := _next(acked)) is not None:
        last = more
    flush(buf)
    assert [n for n in os.listdir(buf.folder.path) if not n.startswith(".")] == []
    for target in ("a", "b"):
        got = dict(zip(*(rt.store(target).read_candles(BTC).column(c).to_pylist()
                         for c in ("ts", "open")), strict=True))
        written = expected(batches[: last + 1])
        assert all(got[k[3]] == v for k, v in written.items())  # every acknowledged row
        in_flight = expected(batches[last + 1: last + 2])
        assert set(got) <= {k[3] for k in (*written, *in_flight)}  # and nothing else
        assert len(got) == rt.store(target).read_candles(BTC).num_rows  # once
