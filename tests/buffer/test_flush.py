"""Flushing: every target gets every file once and in order, a target that is down holds up
nobody and catches up later, bad files go to quarantine and come back, and two flushers
never run on one buffer at once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from candlekeep.buffer import acks
from candlekeep.buffer.files import BufferFile, encode
from candlekeep.buffer.flush import flush, retry
from candlekeep.buffer.locks import exclusive
from candlekeep.buffer.status import buffer_status
from candlekeep.buffer.store import BufferStore
from candlekeep.core.clock import Clock, SystemClock
from candlekeep.core.datasets import CANDLES, Dataset
from candlekeep.core.errors import StoreError
from candlekeep.jobs.runtime import Runtime
from candlekeep.state.db import StateDB
from candlekeep.stores.base import Store
from candlekeep.stores.duckdb_store import DuckDBStore
from tests.buffer.conftest import OpenRuntime, WriteConfig
from tests.buffer.data import assert_exactly, overlapping_batches
from tests.pg import throwaway_database
from tests.stores.candle_data import BTC, ETH, T0, candles, grid

ROOT = Path(__file__).parents[2]


def write_all(buf: BufferStore, batches: Sequence[pa.Table]) -> None:
    for b in batches:
        buf.upsert_candles(b)


@pytest.mark.parametrize("max_rows", [50, 1_000_000], ids=["file-by-file", "coalesced"])
def test_every_target_gets_every_row_once_last_write_winning(
        buf: BufferStore, rt: Runtime, max_rows: int) -> None:
    batches = overlapping_batches(count=14, rows=50, step=30)
    write_all(buf, batches)
    report = flush(buf, max_rows=max_rows)
    for target in ("a", "b"):
        assert_exactly(rt.store(target), batches)
        assert report.targets[target].files == 14 and report.targets[target].error is None
    assert report.pending == 0 and report.deleted == 14
    assert buf.folder.pending() == []
    assert acks.acked(rt.state, rt.store("buf").ack_key) == {}


@dataclass
class Down:
    """A target store config that cannot be reached yet, what its error names, and how to
    bring it up."""

    config: dict[str, Any]
    named: str
    bring_up: Callable[[], None]


@pytest.fixture(params=["duckdb", "postgresql"])
def down(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Down]:
    if request.param == "duckdb":
        blocker = tmp_path / "b-is-down"
        blocker.write_text("b's folder cannot be created while this file is here")
        yield Down({"type": "duckdb", "path": str(blocker / "b.duckdb")}, str(blocker),
                   blocker.unlink)
        return
    with throwaway_database() as url:  # a database that does not exist yet
        later = f"{url}_later"
        name = later.rsplit("/", 1)[1]
        with psycopg.connect(url, autocommit=True) as conn:
            def create() -> None:
                conn.execute(f'CREATE DATABASE "{name}"')

            try:
                yield Down({"type": "postgresql", "dsn": later}, name, create)
            finally:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_target_that_is_down_holds_up_nobody_and_catches_up(
        write_config: WriteConfig, open_runtime: OpenRuntime, down: Down) -> None:
    rt = open_runtime(write_config(b=down.config))
    buf = rt.store("buf")
    assert isinstance(buf, BufferStore)
    batches = overlapping_batches(count=6, rows=40, step=25)
    write_all(buf, batches)

    report = flush(buf)
    assert_exactly(rt.store("a"), batches)
    assert report.targets["a"].files == 6 and report.targets["a"].error is None
    b = report.targets["b"]
    assert b.files == 0 and b.error is not None and down.named in b.error
    assert (b.waiting_files, b.waiting_rows) == (6, 240)
    status = buffer_status(buf)
    assert status.files == 6
    assert [(lag.target, lag.files) for lag in status.lags] == [("a", 0), ("b", 6)]

    more = overlapping_batches(count=8, rows=40, step=25)[6:]  # written while b is down
    write_all(buf, more)
    down.bring_up()
    report = flush(buf)
    assert report.targets["b"].files == 8 and report.targets["a"].files == 2
    assert report.pending == 0
    for target in ("a", "b"):
        assert_exactly(rt.store(target), [*batches, *more])


def test_a_file_stored_but_not_acknowledged_is_written_again_harmlessly(
        buf: BufferStore, rt: Runtime) -> None:
    """Where a flush killed after a target's commit, before its acknowledgement, leaves it."""
    batches = overlapping_batches(count=3, rows=20, step=10)
    write_all(buf, batches)
    for b in batches[:2]:
        rt.store("a").upsert_candles(b)
    report = flush(buf)
    assert report.targets["a"].files == 3 and report.pending == 0
    assert_exactly(rt.store("a"), batches)


def test_a_file_every_target_has_is_deleted_without_writing_it(
        buf: BufferStore, rt: Runtime) -> None:
    """Where a flush killed after the last acknowledgement, before the delete, leaves it."""
    write_all(buf, overlapping_batches(count=2, rows=20, step=10))
    first = buf.folder.pending()[:1]
    for target in ("a", "b"):
        acks.record(rt.state, rt.store("buf").ack_key, target, first, 0)
    report = flush(buf)
    assert report.deleted == 2 and report.targets["a"].files == 1
    assert acks.acked(rt.state, rt.store("buf").ack_key) == {}
    assert [s.count for s in rt.store("a").spans()] == [20]  # only the second file's rows


def test_one_target_at_a_time(buf: BufferStore, rt: Runtime) -> None:
    batches = overlapping_batches(count=4, rows=20, step=10)
    write_all(buf, batches)
    first = flush(buf, ["a"])
    assert list(first.targets) == ["a"] and first.pending == 4
    assert_exactly(rt.store("a"), batches)
    assert rt.store("b").spans() == []
    second = flush(buf, ["b"])
    assert second.pending == 0 and second.deleted == 4
    assert_exactly(rt.store("b"), batches)
    with pytest.raises(StoreError, match="c is not one of its targets"):
        flush(buf, ["c"])


def _corrupt(path: Path) -> bytes:
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    return good


def test_a_damaged_file_goes_to_quarantine_and_back(buf: BufferStore, rt: Runtime) -> None:
    batches = [candles(s, grid(s, T0 + i * 3_600_000, 10), price=float(i))
               for i, s in enumerate([BTC, ETH, BTC])]
    write_all(buf, batches)
    damaged = buf.folder.pending()[1]
    good = _corrupt(buf.folder.path / damaged.name)

    report = flush(buf)
    assert list(report.quarantined) == [damaged.name]
    assert "unreadable Parquet" in report.quarantined[damaged.name]
    assert report.pending == 0 and report.targets["a"].files == 2
    (held,) = buf.folder.quarantined()
    assert held.file == damaged and "unreadable Parquet" in held.reason
    note = buf.folder.path / "quarantine" / f"{damaged.name}.reason.txt"
    assert f"candlekeep buffer quarantine retry {damaged.name}" in note.read_text()
    assert buffer_status(buf).quarantined == 1

    (buf.folder.path / "quarantine" / damaged.name).write_bytes(good)  # the fix
    assert retry(buf, [damaged.name]) == [damaged]
    assert not note.exists() and buf.folder.quarantined() == []
    flush(buf)
    for target in ("a", "b"):
        assert_exactly(rt.store(target), batches)
    with pytest.raises(StoreError, match=r"not in quarantine: nope\.parquet"):
        retry(buf, ["nope.parquet"])


def _plant(buf: BufferStore, table: pa.Table) -> BufferFile:
    """A file in the pending folder that the buffer did not write itself (named under the
    name lock, as a writer would, so a flush takes it)."""
    with buf.folder._names.claim() as taken:
        file = BufferFile.make(taken, table.num_rows)
        pq.write_table(table, buf.folder.path / file.name)
    return file


def test_files_that_no_longer_fit_their_dataset_are_quarantined(buf: BufferStore) -> None:
    buf.upsert_candles(candles(BTC, [T0]))
    rekeyed = Dataset("candles", CANDLES.schema, key=("source", "symbol", "ts"))
    stray = _plant(buf, candles(BTC, [T0]))
    other_key = _plant(buf, encode(rekeyed, candles(BTC, [T0])))
    report = flush(buf)
    assert "not written by a buffer" in report.quarantined[stray.name]
    assert "keyed on (source, symbol, timeframe, ts), the file on (source, symbol, ts)" \
        in report.quarantined[other_key.name]
    assert report.targets["a"].files == 1 and report.pending == 0


def test_two_flushers_never_run_at_once(buf: BufferStore, rt: Runtime) -> None:
    buf.upsert_candles(candles(BTC, [T0]))
    with exclusive(buf.folder.path, 0) as holder:
        assert holder is None
        report = flush(buf, wait_s=0)
        assert report.busy_pid == os.getpid()
        assert report.targets["a"].files == 0 and len(buf.folder.pending()) == 1
        with pytest.raises(StoreError, match=f"being flushed by process {os.getpid()}"):
            retry(buf, wait_s=0)
    assert flush(buf, wait_s=0).pending == 0


@pytest.mark.slow
def test_two_flushing_processes_write_everything_once(
        write_config: WriteConfig, open_runtime: OpenRuntime) -> None:
    config = write_config()
    rt = open_runtime(config)
    buf = rt.store("buf")
    assert isinstance(buf, BufferStore)
    batches = overlapping_batches(count=12, rows=30, step=20)
    write_all(buf, batches)
    child = textwrap.dedent(f"""
        from candlekeep.buffer.flush import flush
        from candlekeep.config import load_config
        from candlekeep.jobs.runtime import Runtime
        rt = Runtime(load_config({str(config)!r}))
        report = flush(rt.store("buf"), max_rows=30)
        assert not any(t.error for t in report.targets.values()), report
        print(report.targets["a"].files)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT) for _ in range(2)]
    files = [int(p.communicate()[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum(files) == 12  # each file flushed by one of them
    for target in ("a", "b"):
        assert_exactly(rt.store(target), batches)
    assert buf.folder.pending() == []


def test_stop_between_groups(buf: BufferStore, rt: Runtime) -> None:
    batches = overlapping_batches(count=6, rows=20, step=20)
    write_all(buf, batches)
    seen: list[int] = []
    report = flush(buf, max_rows=40, stop=lambda: True, progress=seen.append)
    assert report.stopped and seen == [2]
    assert report.pending == 4 and report.targets["b"].waiting_files == 4
    assert flush(buf).pending == 0
    assert_exactly(rt.store("b"), batches)


def test_leftovers_of_killed_writers_and_flushers_are_cleared(
        buf: BufferStore, rt: Runtime) -> None:
    buf.upsert_candles(candles(BTC, [T0]))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_tmp = buf.folder.path / f".tmp-{int(dead.stdout)}-00ff.parquet"
    dead_note = buf.folder.path / "quarantine" / f".tmp-{int(dead.stdout)}-00ff.txt"
    live_tmp = buf.folder.path / f".tmp-{os.getpid()}-00ff.parquet"
    dead_note.parent.mkdir()
    for tmp in (dead_tmp, dead_note, live_tmp):
        tmp.write_bytes(b"half a batch")
    gone = BufferFile(f"{1:020d}-1-5.parquet", 1, 5)  # deleted, its acks not yet
    acks.record(rt.state, rt.store("buf").ack_key, "a", [gone], 0)
    assert flush(buf).pending == 0
    assert not dead_tmp.exists() and not dead_note.exists()
    assert live_tmp.exists()  # a write still under way is left be
    assert acks.acked(rt.state, rt.store("buf").ack_key) == {}


class _Spy(DuckDBStore):
    """A real DuckDB target that remembers the hook calls it gets."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name, path)
        self.hooked: list[list[str]] = []

    def flushed(self, datasets: Sequence[Dataset]) -> None:
        self.hooked.append([d.name for d in datasets])


class _Env:
    def __init__(self, state: StateDB, stores: dict[str, Store]) -> None:
        self.clock: Clock = SystemClock()
        self.state = state
        self.stores = stores

    def store(self, name: str) -> Store:
        return self.stores[name]


def test_each_target_hears_which_datasets_it_received(tmp_path: Path) -> None:
    a, b = _Spy("a", tmp_path / "a.duckdb"), _Spy("b", tmp_path / "b.duckdb")
    state = StateDB(f"sqlite:///{tmp_path / 'state.db'}")
    buf = BufferStore("buf", tmp_path / "buf", ["a", "b"], _Env(state, {"a": a, "b": b}))
    buf.upsert_candles(candles(BTC, [T0]))
    flush(buf, ["a"])
    assert (a.hooked, b.hooked) == ([["candles"]], [])
    flush(buf)
    assert (a.hooked, b.hooked) == ([["candles"]], [["candles"]])
    flush(buf)  # nothing written: nobody is told
    assert (a.hooked, b.hooked) == ([["candles"]], [["candles"]])
    state.dispose()
