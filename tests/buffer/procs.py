"""What the crash tests run in child processes (started by a fork server that has imported
this module, so each child starts in milliseconds, not the second a fresh interpreter takes)."""

from __future__ import annotations

from multiprocessing.connection import Connection

import pyarrow as pa

from candlekeep.buffer.flush import flush
from candlekeep.config import load_config
from candlekeep.jobs.runtime import Runtime


def flush_child(config: str, max_rows: int, started: Connection) -> None:
    rt = Runtime(load_config(config))
    buf = rt.store("buf")
    rt.state  # noqa: B018 - opened before the kill window, which is for the flush itself
    started.send("flushing")
    flush(buf, max_rows=max_rows)  # type: ignore[arg-type]
    started.send("done")


def write_child(config: str, batches: list[pa.Table], acked: Connection) -> None:
    """Writes the batches in order, telling the parent each one that was acknowledged."""
    buf = Runtime(load_config(config)).store("buf")
    acked.send(-1)
    for i, batch in enumerate(batches):
        buf.upsert_candles(batch)
        acked.send(i)
