"""DuckDBStore specifics against real DuckDB files: atomic writes under failure and kill,
no file created by reads, and cross-process locking. The behaviour every store shares is in
test_contract.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from candlekeep.core.errors import StoreError
from candlekeep.core.schema import CANDLE_SCHEMA
from candlekeep.core.series import SeriesKey
from candlekeep.core.timeframes import MINUTE_MS
from candlekeep.stores import duckdb_store
from candlekeep.stores.duckdb_store import DuckDBStore
from candlekeep.stores.prepare import prepare_candles
from tests.stores.candle_data import BTC, T0, candles, gaps, grid


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    s = DuckDBStore("test", tmp_path / "candles.duckdb")
    yield s
    s.close()


# --------------------------------------------------------------------------- atomicity


def test_failed_upsert_leaves_old_state(
    store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ts = grid(BTC, T0, 10)
    store.upsert_candles(candles(BTC, ts, price=1.0))

    def append_then_fail(cur: duckdb.DuckDBPyConnection) -> None:
        raise RuntimeError("crash after the delete, before the append")

    monkeypatch.setattr(duckdb_store, "_append", append_then_fail)
    with pytest.raises(RuntimeError):
        store.upsert_candles(candles(BTC, ts, price=2.0))
    monkeypatch.undo()
    assert store.read_candles(BTC).column("open").to_pylist() == [1.0] * 10


def test_process_killed_mid_upsert_leaves_old_state(tmp_path: Path) -> None:
    path = tmp_path / "crash.duckdb"
    store = DuckDBStore("test", path)
    ts = grid(BTC, T0, 10)
    store.upsert_candles(candles(BTC, ts, price=1.0))
    store.close()
    child = f"""
        import os
        from candlekeep.core.schema import candles_from_columns
        from candlekeep.stores import duckdb_store
        def die(cur):
            os._exit(3)  # no commit, no close: as if killed between delete and append
        duckdb_store._append = die
        s = duckdb_store.DuckDBStore("child", {str(path)!r})
        ts = {ts!r}
        n = len(ts)
        s.upsert_candles(candles_from_columns("binance", "BTC/USDT", "1m", ts,
            [2.0] * n, [2.0] * n, [2.0] * n, [2.0] * n, [2.0] * n, 0))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(child)], check=False)
    assert done.returncode == 3
    assert store.read_candles(BTC).column("open").to_pylist() == [1.0] * 10


def test_empty_batch_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "never-written.duckdb"
    store = DuckDBStore("test", path)
    assert store.upsert_candles(CANDLE_SCHEMA.empty_table()) == 0
    assert store.spans() == []
    assert store.span(BTC) is None
    assert store.latest(BTC) is None
    assert store.read_candles(BTC).schema.equals(CANDLE_SCHEMA)
    assert store.find_gaps().num_rows == 0
    assert not path.exists()  # reading never creates the file


# --------------------------------------------------------------------------- concurrency


def test_threads_writing_and_reading_one_file(tmp_path: Path) -> None:
    """Jobs call the store from worker threads; reads and writes interleave (and switch the
    shared instance between read-only and read-write) without errors or lost rows."""
    path = tmp_path / "threads.duckdb"
    stores = [DuckDBStore(f"s{i}", path) for i in range(3)]
    keys = [SeriesKey("binance", f"S{i}/USDT", "1m") for i in range(8)]
    ts = grid(BTC, T0, 200)

    def work(i: int) -> None:
        s = stores[i % len(stores)]
        key = keys[i % len(keys)]
        s.upsert_candles(candles(key, ts[(i * 7) % 100 : (i * 7) % 100 + 100], price=float(i)))
        s.spans()
        s.find_gaps(key)
        s.read_candles(key)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(work, range(48)))
    spans = stores[0].spans()
    assert [s.series for s in spans] == sorted(keys)
    for s in spans:
        assert s.count == len(set(range(s.first_ms, s.last_ms + 1, MINUTE_MS)))
    assert gaps(stores[0].find_gaps()) == []


def _child(script: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_CHILD_READER = """
    import sys
    import duckdb
    from candlekeep.stores import duckdb_store

    real_connect = duckdb.connect

    def connect(*args, **kwargs):
        try:
            return real_connect(*args, **kwargs)
        except duckdb.Error as exc:
            if duckdb_store._is_lock_conflict(exc):
                print("locked", flush=True)  # the parent releases the file on this line
            raise

    duckdb_store.duckdb.connect = connect
    store = duckdb_store.DuckDBStore("child", {path!r}, lock_timeout_s={timeout})
    try:
        print("spans", [s.count for s in store.spans()], flush=True)
    except duckdb_store.StoreError as exc:
        print("error", exc, flush=True)
"""


def test_other_process_reading_while_this_one_writes_retries(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    store = DuckDBStore("parent", path)
    ts = grid(BTC, T0, 100)
    store.upsert_candles(candles(BTC, ts[:50]))

    db = duckdb_store._database(path)
    with db.write_lock, db.cursor(write=True, timeout_s=10, keep_alive_s=0) as cur:
        assert cur is not None  # this process now holds the file, as during a write
        child = _child(_CHILD_READER.format(path=str(path), timeout=60.0))
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        duckdb_store._write(cur, prepare_candles(candles(BTC, ts[50:])))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.splitlines()[-1] == "spans [100]"


def test_gives_up_with_a_clear_error_when_the_file_stays_locked(tmp_path: Path) -> None:
    path = tmp_path / "held.duckdb"
    store = DuckDBStore("parent", path)
    store.upsert_candles(candles(BTC, grid(BTC, T0, 5)))
    db = duckdb_store._database(path)
    with db.cursor(write=True, timeout_s=10, keep_alive_s=0):
        child = _child(_CHILD_READER.format(path=str(path), timeout=0.2))
        out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    last = out.splitlines()[-1]
    assert last.startswith("error DuckDB file") and "in use by another process" in last


def test_keep_alive_reuses_the_instance_and_close_releases_it(tmp_path: Path) -> None:
    path = tmp_path / "kept.duckdb"
    store = DuckDBStore("kept", path, keep_alive_s=3600)
    store.upsert_candles(candles(BTC, grid(BTC, T0, 5)))
    assert store.span(BTC) is not None  # served by the kept read-write instance
    store.close()
    child = _child(_CHILD_READER.format(path=str(path), timeout=0.0))
    out, err = child.communicate(timeout=60)
    assert out.splitlines()[-1] == "spans [5]", err


def test_a_writer_waits_for_readers_of_this_process(tmp_path: Path) -> None:
    path = tmp_path / "modes.duckdb"
    store = DuckDBStore("modes", path)
    store.upsert_candles(candles(BTC, grid(BTC, T0, 5)))
    db = duckdb_store._database(path)
    wrote = threading.Event()

    def write() -> None:
        store.upsert_candles(candles(BTC, grid(BTC, T0 + 5 * MINUTE_MS, 5)))
        wrote.set()

    with db.cursor(write=False, timeout_s=10, keep_alive_s=0) as cur:
        assert cur is not None  # a read-only instance is open in this process
        writer = threading.Thread(target=write)
        writer.start()
    writer.join(timeout=60)
    assert wrote.is_set()
    span = store.span(BTC)
    assert span is not None and span.count == 10


_CHILD_OPENER = """
    import duckdb

    try:
        duckdb.connect({path!r}).close()  # read-write: needs no other process holding the file
        print("opened", flush=True)
    except duckdb.Error as exc:
        print("locked" if "lock" in str(exc).lower() else f"error {{exc}}", flush=True)
"""


def _other_process_opens_for_writing(path: Path) -> str:
    out, err = _child(_CHILD_OPENER.format(path=str(path))).communicate(timeout=60)
    assert out, err
    return out.split()[-1]


def test_a_session_opens_once_and_releases_the_file_when_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "session.duckdb"
    store = DuckDBStore("session", path)
    store.upsert_candles(candles(BTC, grid(BTC, T0, 5)))
    db = duckdb_store._database(path)
    with store.session():
        assert store.read_candles(BTC).num_rows == 5
        opened = db._conn
        assert opened is not None  # held between the calls of the block
        assert store.span(BTC) is not None and store.describe("candles") is not None
        assert db._conn is opened  # the later calls used the same instance
        assert _other_process_opens_for_writing(path) == "locked"
    assert db._conn is None
    assert _other_process_opens_for_writing(path) == "opened"


def test_a_write_inside_a_reading_session_reopens_and_keeps_read_write(tmp_path: Path) -> None:
    path = tmp_path / "session-write.duckdb"
    store = DuckDBStore("session", path)
    store.upsert_candles(candles(BTC, grid(BTC, T0, 5)))
    db = duckdb_store._database(path)
    with store.session():
        assert store.read_candles(BTC).num_rows == 5  # a read-only instance
        store.upsert_candles(candles(BTC, grid(BTC, T0 + 5 * MINUTE_MS, 5)))
        kept = db._conn
        assert kept is not None and not db._read_only
        assert store.read_candles(BTC).num_rows == 10
        assert db._conn is kept
    assert db._conn is None
    assert _other_process_opens_for_writing(path) == "opened"


def test_a_session_on_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "absent.duckdb"
    store = DuckDBStore("session", path)
    with store.session():
        assert store.read_candles(BTC).num_rows == 0 and store.describe("candles") is None
    assert not path.exists()


def test_a_folder_that_cannot_be_made_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    store = DuckDBStore("test", tmp_path / "file" / "candles.duckdb")
    with pytest.raises(StoreError, match=r"store test .*File exists"):
        store.upsert_candles(candles(BTC, grid(BTC, T0, 3)))


def test_a_foreign_table_with_microsecond_times_reads_as_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE ticks (id BIGINT PRIMARY KEY, seen TIMESTAMPTZ NOT NULL)")
        con.execute("INSERT INTO ticks VALUES (1, make_timestamptz(1700000000123456::BIGINT))")
    store = DuckDBStore("test", path)
    ticks = store.describe("ticks")
    assert ticks is not None and ticks.key == ("id",)
    got = store.read(ticks)
    assert got.column("seen").cast(pa.int64()).to_pylist() == [1_700_000_000_123]
    store.close()
