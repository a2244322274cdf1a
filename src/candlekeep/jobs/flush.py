"""The ``flush`` job type: write buffered batches into every target of a buffer store.

The flushing itself lives in ``candlekeep.buffer.flush`` and is imported when a run starts:
registering job types happens on every ``candlekeep list``, which must not load pyarrow.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pydantic import Field

from candlekeep.config.store_types import BufferStoreConfig
from candlekeep.core.errors import CandlekeepError
from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type

if TYPE_CHECKING:
    from candlekeep.buffer.flush import FlushReport
    from candlekeep.stores.base import Store


class FlushParams(Params):
    buffer: str | None = Field(default=None, min_length=1)
    """A buffer store; default: every buffer store in the config."""
    target: str | None = Field(default=None, min_length=1)
    """Only this target (other targets keep their files waiting)."""


@job_type("flush", FlushParams, "Write buffered batches into every target of the buffers.")
async def flush(ctx: JobContext, p: FlushParams) -> JobResult:
    res = JobResult()
    buffers = {n: s for n, s in ctx.config.stores.items() if isinstance(s, BufferStoreConfig)}
    if p.buffer is not None and p.buffer not in buffers:
        res.errors.append(f"{p.buffer!r} is not a buffer store (buffer stores: "
                          f"{', '.join(buffers) or 'none configured'})")
        return res
    names = [p.buffer] if p.buffer is not None else list(buffers)
    if p.target is not None:
        names = [n for n in names if p.target in buffers[n].targets]
        if not names:
            res.errors.append(f"{p.target!r} is not a target of "
                              f"{p.buffer or 'any buffer store'}")
            return res
    if not names:
        res.warnings.append("no buffer store is configured: nothing to flush")
    targets = None if p.target is None else [p.target]
    res.details["buffers"] = {}
    for name in names:
        if ctx.cancel.is_set():
            res.errors.append(f"stopped before flushing buffer {name}")
            break
        store = await asyncio.to_thread(ctx.runtime.store, name)
        if ctx.dry_run:
            await asyncio.to_thread(_plan, store, targets, res)
            continue
        try:
            report = await _flush(ctx, store, targets)
        except CandlekeepError as exc:  # this buffer's folder or the state DB: next buffer
            res.errors.append(str(exc))
            continue
        res.details["buffers"][name] = report.as_dict()
        _fold(report, res)
    return res


async def _flush(ctx: JobContext, store: Store,
                 targets: list[str] | None) -> FlushReport:
    from candlekeep.buffer.flush import flush as flush_buffer
    from candlekeep.buffer.store import BufferStore

    assert isinstance(store, BufferStore)  # the config says so
    key = f"flush:{store.name}"
    pending = await asyncio.to_thread(store.folder.pending)
    ctx.progress.start(key, len(pending), f"flush {store.name}")
    try:
        return await asyncio.to_thread(
            flush_buffer, store, targets, stop=ctx.cancel.is_set,
            progress=lambda n: ctx.progress.advance(key, n))
    finally:
        ctx.progress.finish(key)


def _plan(store: Store, targets: list[str] | None, res: JobResult) -> None:
    from candlekeep.buffer.status import buffer_status
    from candlekeep.buffer.store import BufferStore

    assert isinstance(store, BufferStore)
    status = buffer_status(store)
    lags = [lag for lag in status.lags
            if lag.files and (targets is None or lag.target in targets)]
    for lag in lags:
        res.warnings.append(f"would flush {lag.files} file(s), {lag.rows} rows, "
                            f"from buffer {store.name} to {lag.target}")
    if not lags:
        res.warnings.append(f"buffer {store.name}: nothing to flush")
    res.details.setdefault("buffers", {})[store.name] = status.as_dict()


def _fold(report: FlushReport, res: JobResult) -> None:
    res.rows_written += report.rows
    name = report.buffer
    if report.busy_pid is not None:
        who = f"process {report.busy_pid}" if report.busy_pid else "another process"
        res.warnings.append(f"buffer {name}: skipped, {who} is flushing it")
    for file, reason in report.quarantined.items():
        res.warnings.append(f"buffer {name}: moved {file} to quarantine: {reason}")
    for target, tally in report.targets.items():
        if tally.error is not None:
            res.errors.append(
                f"buffer {name}: target store {target} failed: {tally.error} "
                f"({tally.waiting_files} file(s), {tally.waiting_rows} rows wait for it)")
    if report.stopped:
        res.errors.append(f"buffer {name}: flush stopped; {report.pending} file(s) pending")
