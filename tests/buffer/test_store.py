"""Writing to a buffer store: one durable file per batch, validated before it is written,
named in write order across processes, and every failure to write a clear error that leaves
nothing pending. Reads go to the first target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from candlekeep.buffer.files import BufferFolder
from candlekeep.buffer.flush import flush
from candlekeep.buffer.store import BufferStore
from candlekeep.core.datasets import CANDLES, Dataset
from candlekeep.core.errors import StoreError
from candlekeep.jobs.runtime import Runtime
from tests.stores.candle_data import BTC, ETH, T0, candles, grid


def test_each_batch_is_one_file_with_its_rows_deduplicated(buf: BufferStore) -> None:
    ts = grid(BTC, T0, 10)
    twice = pa.concat_tables([candles(BTC, ts, price=1.0), candles(BTC, ts[:3], price=2.0)])
    assert buf.upsert_candles(twice) == 10
    assert buf.upsert_candles(candles(ETH, ts)) == 10
    files = buf.folder.pending()
    assert [f.rows for f in files] == [10, 10]
    dataset, table = buf.folder.read(files[0])
    assert dataset == CANDLES
    prices = dict(zip(table.column("ts").to_pylist(), table.column("open").to_pylist(),
                      strict=True))
    assert list(prices.values()) == [2.0] * 3 + [1.0] * 7
    assert not [n for n in os.listdir(buf.folder.path) if n.startswith(".tmp-")]


def test_a_bad_batch_fails_at_write_time_and_leaves_nothing(buf: BufferStore) -> None:
    off_grid = candles(BTC, [T0 + 1])
    with pytest.raises(StoreError, match="off the 1m grid"):
        buf.upsert_candles(off_grid)
    with pytest.raises(StoreError, match="lacks key column"):
        buf.upsert(CANDLES, candles(BTC, [T0]).drop_columns(["ts"]))
    with pytest.raises(StoreError, match="unknown column"):  # even when empty
        buf.upsert(CANDLES, candles(BTC, []).append_column("bogus", pa.array([], pa.int64())))
    assert buf.folder.pending() == []


def test_any_dataset_round_trips_through_the_file(buf: BufferStore, rt: Runtime) -> None:
    """A dataset this process never registered: the file carries its shape."""
    fills = Dataset("fills", pa.schema([pa.field("id", pa.int64(), nullable=False),
                                        pa.field("price", pa.float64()),
                                        pa.field("at", pa.timestamp("ms", tz="UTC"))]),
                    key=("id",), time="at")
    buf.upsert(fills, pa.table({"id": [1, 2, 1], "price": [1.0, 2.0, 3.0],
                                "at": pa.array([T0, T0, T0 + 1], pa.timestamp("ms", tz="UTC"))}))
    report = flush(buf)
    assert report.pending == 0
    for target in ("a", "b"):
        got = rt.store(target).read(fills)
        assert got.to_pydict()["id"] == [1, 2]
        assert got.to_pydict()["price"] == [3.0, 2.0]
        described = rt.store(target).describe("fills")
        assert described is not None and described.key == ("id",)


def test_reads_go_to_the_first_target(buf: BufferStore, rt: Runtime) -> None:
    ts = grid(BTC, T0, 5)
    rt.store("a").upsert_candles(candles(BTC, ts[:3]))
    rt.store("b").upsert_candles(candles(BTC, ts))
    assert [s.count for s in buf.spans()] == [3]
    assert buf.latest(BTC) == ts[2]
    assert buf.read_candles(BTC).num_rows == 3
    assert buf.read(CANDLES).num_rows == 3
    assert [s.name for s in buf.stats()] == ["candles"]
    assert buf.describe("candles") is not None
    assert buf.find_gaps().num_rows == 0


@pytest.mark.slow
def test_names_sort_in_write_order_across_processes(tmp_path: Path) -> None:
    """Two processes take turns writing; listing the folder gives their files in the order
    they were written."""
    folder = tmp_path / "buf"
    child = textwrap.dedent(f"""
        import sys
        from candlekeep.buffer.files import BufferFolder
        from candlekeep.core.datasets import CANDLES
        from tests.stores.candle_data import BTC, T0, candles
        folder = BufferFolder("buf", __import__("pathlib").Path({str(folder)!r}))
        for line in sys.stdin:
            i = int(line)
            print(folder.write(CANDLES, candles(BTC, [T0 + i * 60_000])).name, flush=True)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
             for _ in range(2)]
    written = []
    try:
        for i in range(30):
            p = procs[i % 2] if i < 10 else procs[(i // 3) % 2]
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write(f"{i}\n")
            p.stdin.flush()
            written.append(p.stdout.readline().strip())
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
            p.wait()
    assert [f.name for f in BufferFolder("buf", folder).pending()] == written
    assert len({f.seq for f in BufferFolder('buf', folder).pending()}) == 30


def _error_of_child(script: str, cwd: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, cwd=cwd, check=False)
    assert done.returncode == 0, done.stderr
    out: dict[str, object] = json.loads(done.stdout)
    return out


def test_a_write_that_runs_out_of_space_is_a_clear_error(tmp_path: Path) -> None:
    """The file-size limit makes the kernel refuse the write part-way through the file, as
    a full disk does; the job hears it and no file is left pending or half-written."""
    folder = tmp_path / "buf"
    got = _error_of_child(f"""
        import json, os, pathlib, resource, signal
        from candlekeep.buffer.files import BufferFolder
        from candlekeep.core.datasets import CANDLES
        from candlekeep.core.errors import StoreError
        from tests.stores.candle_data import BTC, T0, candles, grid
        folder = BufferFolder("buf", pathlib.Path({str(folder)!r}))
        batch = candles(BTC, grid(BTC, T0, 20_000))
        folder.write(CANDLES, candles(BTC, [T0]))  # the folder and its lock files exist
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, resource.RLIM_INFINITY))
        try:
            folder.write(CANDLES, batch)
            print(json.dumps({{"error": None}}))
        except StoreError as exc:
            print(json.dumps({{"error": str(exc), "files": sorted(os.listdir(folder.path))}}))
    """, Path(__file__).parents[2])
    error = str(got["error"])
    assert "buffer buf" in error and str(folder) in error and "File too large" in error
    assert "20000 rows of candles" in error and "nothing of it was stored" in error
    files = [n for n in got["files"] if not n.startswith(".")]  # type: ignore[attr-defined]
    assert len(files) == 1  # the first, small batch only
    assert not [n for n in got["files"] if n.startswith(".tmp-")]  # type: ignore[attr-defined]


def test_a_folder_that_cannot_be_created_is_a_clear_error(rt: Runtime, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the buffer's parent folder should be")
    bad = BufferStore("buf", blocker / "buf", ["a", "b"], rt)
    with pytest.raises(StoreError) as err:
        bad.upsert_candles(candles(BTC, [T0]))
    assert f"buffer buf: cannot write a batch of 1 rows of candles under {blocker / 'buf'}" \
        in str(err.value)
    assert "Not a directory [ENOTDIR]" in str(err.value)
    with pytest.raises(StoreError, match="Not a directory"):
        bad.check(write=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the "
                    "path-under-a-file case covers a folder the process cannot write")
def test_a_read_only_folder_is_a_clear_error(buf: BufferStore) -> None:
    buf.upsert_candles(candles(BTC, [T0]))
    buf.folder.path.chmod(0o500)
    try:
        with pytest.raises(StoreError, match=r"Permission denied \[EACCES\]"):
            buf.upsert_candles(candles(BTC, [T0 + 60_000]))
    finally:
        buf.folder.path.chmod(0o700)
    assert len(buf.folder.pending()) == 1
