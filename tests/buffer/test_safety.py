"""What a flush must never do: take a file whose predecessor its listing missed, drop another
host's acknowledgements, let a state DB error escape as a raw database error; and what the
folder must do: move a quarantined file back once when named twice, make a new folder
durable in its parent."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml

from candlekeep.buffer import acks
from candlekeep.buffer.files import BufferFile, BufferFolder, encode
from candlekeep.buffer.flush import flush, retry
from candlekeep.buffer.store import BufferStore
from candlekeep.core.datasets import CANDLES
from candlekeep.core.errors import StoreError
from candlekeep.jobs.flush import FlushParams
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.manual import run_adhoc
from tests.buffer.conftest import OpenRuntime
from tests.buffer.data import assert_exactly, overlapping_batches
from tests.buffer.test_job import cli
from tests.pg import throwaway_database
from tests.stores.candle_data import BTC, T0, candles, grid

ROOT = Path(__file__).parents[2]


def _config(folder: Path, state: str, b: dict[str, Any] | None = None,
            extra: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"data_dir": "data", "state": state, "stores": {
        "buf": {"type": "buffer", "path": "data/buf", "targets": ["a", "b"]},
        "a": {"type": "duckdb", "path": "data/a.duckdb"},
        "b": b or {"type": "duckdb", "path": "data/b.duckdb"},
        **(extra or {})}}
    path = folder / "candlekeep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _buffer(rt: Runtime, name: str = "buf") -> BufferStore:
    store = rt.store(name)
    assert isinstance(store, BufferStore)
    return store


# ---- 1: a listing is not atomic against renames into the folder


def test_a_file_past_the_mark_waits_for_the_next_flush(buf: BufferStore, rt: Runtime) -> None:
    """A listing taken while files are renamed in can hold a newer file and miss an older
    one; a file the mark read before listing does not cover is such a newer file."""
    older = candles(BTC, grid(BTC, T0, 20), price=1.0)
    newer = candles(BTC, grid(BTC, T0, 20), price=9.0)  # the same keys: newer must win
    buf.upsert_candles(older)
    (written,) = buf.folder.pending()
    ahead = BufferFile.make(written.seq + 1, newer.num_rows)  # renamed in mid-listing
    pq.write_table(encode(CANDLES, newer), buf.folder.path / ahead.name)

    report = flush(buf)
    assert (report.deleted, report.pending) == (1, 1)
    assert buf.folder.pending() == [ahead]
    assert_exactly(rt.store("a"), [older])

    buf.upsert_candles(candles(BTC, [T0 - 60_000]))  # any write moves the mark past it
    flush(buf)
    assert buf.folder.pending() == []
    assert_exactly(rt.store("a"), [older, newer, candles(BTC, [T0 - 60_000])])


def test_a_file_numbered_before_the_mark_is_in_place_when_the_mark_is_read(
        tmp_path: Path) -> None:
    """A writer that has taken its number but not yet renamed its file holds the mark back
    until the rename is done."""
    writer, flusher = BufferFolder("buf", tmp_path), BufferFolder("buf", tmp_path)
    seen: list[list[BufferFile]] = []
    reader = threading.Thread(target=lambda: seen.append(flusher.flushable()))
    with writer._names.claim() as seq:
        reader.start()  # blocks on the name lock this writer holds
        file = BufferFile.make(seq, 1)
        (tmp_path / file.name).write_bytes(b"")
    reader.join()
    assert seen == [[file]]
    writer.close()
    flusher.close()


# ---- 2: hosts sharing one state DB, each with its own folder of the same buffer name


def test_hosts_sharing_a_state_db_keep_their_own_acknowledgements(
        tmp_path: Path, open_runtime: OpenRuntime) -> None:
    state = f"sqlite:///{tmp_path / 'state.db'}"
    blocker = tmp_path / "b-is-down"
    blocker.write_text("")
    down = {"type": "duckdb", "path": str(blocker / "b.duckdb")}
    host1 = open_runtime(_config(tmp_path / "h1", state, b=down))
    host2 = open_runtime(_config(tmp_path / "h2", state, b=down))
    buf1, buf2 = _buffer(host1), _buffer(host2)
    for batch in overlapping_batches(count=3, rows=10, step=10):
        buf1.upsert_candles(batch)

    assert flush(buf1).targets["a"].files == 3  # b is down: the files stay, acked by a
    flush(buf2)  # its own, empty folder
    again = flush(buf1)
    assert again.targets["a"].files == 0, "host 2 dropped host 1's acknowledgements"
    assert buf1.ack_key != buf2.ack_key
    assert sum(len(t) for t in acks.acked(host1.state, buf1.ack_key).values()) == 3


def test_the_folder_identity_is_written_once_and_kept(tmp_path: Path) -> None:
    first = BufferFolder("buf", tmp_path / "new" / "buf")
    ident = first.identity()
    assert (tmp_path / "new" / "buf" / ".buffer-id").read_text() == ident + "\n"
    assert BufferFolder("buf", tmp_path / "new" / "buf").identity() == ident
    (tmp_path / "new" / "buf" / ".buffer-id").write_text("garbage")
    with pytest.raises(StoreError, match=r"\.buffer-id holds no buffer id"):
        BufferFolder("buf", tmp_path / "new" / "buf").identity()


# ---- 3: a state DB that fails fails its buffer, not the flush job


async def test_a_failing_state_db_fails_its_buffer_naming_it_without_password(
        tmp_path: Path, open_runtime: OpenRuntime) -> None:
    with throwaway_database() as url:
        secret = url.replace("postgres@", "postgres:hunter2secret@", 1)
        assert "hunter2secret" in secret
        other = {"other": {"type": "buffer", "path": "data/other", "targets": ["a"]}}
        rt = open_runtime(_config(tmp_path, secret, extra=other))
        buf = _buffer(rt)
        buf.upsert_candles(candles(BTC, [T0]))
        _buffer(rt, "other").upsert_candles(candles(BTC, [T0 + 60_000]))
        with rt.state.engine.begin() as conn:  # written by the upsert, failing the ack
            conn.execute(sa.text("ALTER TABLE buffer_acks ADD COLUMN must CHAR NOT NULL"))

        with pytest.raises(StoreError) as caught:
            flush(buf)
        message = str(caught.value)
        assert message.startswith("buffer buf@") and "state DB postgresql" in message
        assert "cannot record that a has 1 file(s)" in message
        assert "hunter2secret" not in message and "***" in message

        res = await run_adhoc(rt, "flush", FlushParams())
        assert len(res.errors) == 2 and all("state DB" in e for e in res.errors)
        assert all("hunter2secret" not in e for e in res.errors)
        assert buf.folder.pending() != []  # nothing lost: the next flush tries again
        rt.state.dispose()


# ---- 4: quarantine retry with a name given twice


def test_retry_with_a_name_given_twice_moves_it_once(buf: BufferStore) -> None:
    buf.upsert_candles(candles(BTC, [T0]))
    (file,) = buf.folder.pending()
    buf.folder.quarantine(file, "test")
    assert retry(buf, [file.name, file.name]) == [file]
    assert buf.folder.pending() == [file] and buf.folder.quarantined() == []


def test_the_cli_retries_a_name_given_twice(tmp_path: Path, open_runtime: OpenRuntime) -> None:
    config = _config(tmp_path, f"sqlite:///{tmp_path / 'state.db'}")
    buf = _buffer(open_runtime(config))
    buf.upsert_candles(candles(BTC, [T0]))
    (file,) = buf.folder.pending()
    buf.folder.quarantine(file, "test")
    out = cli(config, "buffer", "quarantine", "retry", file.name, file.name, "--json")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == {"buf": [file.name]}


def test_a_failed_move_back_is_a_store_error(buf: BufferStore) -> None:
    buf.upsert_candles(candles(BTC, [T0]))
    (file,) = buf.folder.pending()
    buf.folder.quarantine(file, "test")
    (buf.folder.path / file.name).mkdir()  # a directory where the file must go
    with pytest.raises(StoreError, match=f"cannot move .*{file.name} back to pending"):
        buf.folder.unquarantine([file.name])


# ---- 5: a new folder is durable in its parent


def test_creating_the_folder_fsyncs_each_new_folder_in_its_parent(tmp_path: Path) -> None:
    """Watched with strace in a real process: fsync is what makes a new entry durable."""
    target = tmp_path / "x" / "y" / "buf"
    code = textwrap.dedent(f"""
        from pathlib import Path
        from candlekeep.buffer.files import BufferFolder
        BufferFolder("buf", Path({str(target)!r})).check_writable()
    """)
    out = subprocess.run(["strace", "-f", "-e", "trace=openat,fsync", "-o",
                          str(tmp_path / "trace"), sys.executable, "-c", code],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    trace = (tmp_path / "trace").read_text().splitlines()
    fds = {}
    synced = []
    for line in trace:
        if "openat(" in line and "= " in line and "O_RDONLY" in line:
            path = line.split('"')[1]
            fds[line.rsplit("= ", 1)[1].split()[0]] = path
        elif "fsync(" in line:
            synced.append(fds.get(line.split("fsync(")[1].split(")")[0]))
    assert synced == [str(tmp_path), str(tmp_path / "x"), str(tmp_path / "x" / "y")]
