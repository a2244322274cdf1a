"""The ``command`` job type: run any program on the schedule.

It is the migration path for old cron scripts: same argv, now with history, retries,
timeouts, no overlap and the SLO report. It supervises the program the way a service
manager does, so that a run and its slot end when the program does and nothing outlives it:

- the run ends when the program exits, not when its output pipes close (a child it left in
  the background holds them); asyncio's ``Process.wait()`` waits for the pipes, so exit is
  seen through a pidfd (or a thread blocked in waitpid where there are none);
- the program leads a new session and process group; when it exits (any status), times out
  or is cancelled, the whole group is ended (SIGTERM, a grace, SIGKILL) before the run ends;
- on Linux it dies with the daemon (PR_SET_PDEATHSIG), and its group's identity is reported
  to the run path, so that a restarted daemon can end what the program's children were
  left doing (``procgroup.end_recorded_group``);
- the output kept for history is a bounded tail of each stream, storable as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import Field

from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.procgroup import KILL_GRACE_S, end_group, identify
from candlekeep.jobs.registry import job_type

TAIL_LINES = 20
TAIL_BYTES = 8192
"""How much of the end of each output stream a run keeps (its first line may be cut)."""
ERROR_TAIL_CHARS = 2000
"""How much of that tail a failure's error message carries."""
PIPE_DRAIN_S = 2.0
"""Once the process group has been ended, how long its pipes may stay open (a process that
left the group with setsid holds them) before reading stops."""
PR_SET_PDEATHSIG = 1

T = TypeVar("T")


class CommandParams(Params):
    argv: list[str] = Field(min_length=1, description="program and arguments (no shell)")
    cwd: str | None = Field(default=None, description="working folder, relative to the "
                            "config file's folder")
    env: dict[str, str] = Field(default_factory=dict, description="merged over the "
                                "daemon's environment")


@job_type("command", CommandParams)
async def run_command(ctx: JobContext, params: CommandParams) -> JobResult:
    """Runs a program; a non-zero exit status is a failure, with its output's tail."""
    workdir = _workdir(ctx, params.cwd)
    if ctx.dry_run:
        return JobResult(warnings=[f"would run {params.argv!r} in {workdir}"
                                   + (f" with env {sorted(params.env)}" if params.env else "")],
                         details={"argv": params.argv, "cwd": str(workdir)})
    try:
        proc = _spawn(params.argv, workdir, {**os.environ, **params.env})
    except FileNotFoundError as exc:
        missing = workdir if not workdir.is_dir() else params.argv[0]
        return JobResult(errors=[f"cannot run {params.argv[0]!r}: not found ({missing}): "
                                 f"{exc.strerror}"])
    except PermissionError as exc:
        return JobResult(errors=[f"cannot run {params.argv[0]!r}: {exc.strerror}"])
    ctx.log.info("command started job=%s pid=%s argv=%r", ctx.job_name, proc.pid, params.argv)
    return await _supervise(ctx, proc)


def _workdir(ctx: JobContext, cwd: str | None) -> Path:
    path = ctx.config.config_path
    base = path.parent if path is not None else Path.cwd()
    if cwd is None:
        return base
    p = Path(cwd).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _spawn(argv: list[str], workdir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Starts the program as the leader of a new session (pgid = pid).

    Called on the event loop's thread, never a worker thread: PR_SET_PDEATHSIG fires when
    the *thread* that forked exits, so a retired worker thread would kill the program.
    """
    return subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                            start_new_session=True, preexec_fn=_die_with_parent())


def _die_with_parent() -> Callable[[], None] | None:
    """The ``preexec_fn`` that makes the program die with the daemon (None off Linux).

    It runs in the child between fork and exec, where little is safe, so everything it
    needs is resolved here first. If the daemon died before prctl took effect, the child
    has already been re-parented: it exits rather than run unsupervised.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@functools.cache
def _prctl() -> Callable[..., Any] | None:
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    prctl.restype = ctypes.c_int
    return prctl


async def _supervise(ctx: JobContext, proc: subprocess.Popen[bytes]) -> JobResult:
    """Waits for the program to exit or the run to be cancelled, then ends its group."""
    identity = identify(proc.pid)
    if identity is not None:
        ctx.report_process(identity.to_text())
    exited = asyncio.ensure_future(_exit_status(proc))
    assert proc.stdout is not None and proc.stderr is not None  # spawned with PIPE
    streams = (_Output(proc.stdout), _Output(proc.stderr))
    try:
        for stream in streams:
            await stream.start()
        cancelled = await _exited_or_cancelled(exited, ctx.cancel)
    except asyncio.CancelledError:
        ended_by = await _uninterrupted(_end(ctx, proc.pid, exited, streams))
        ctx.log.warning("command cancelled job=%s pid=%s: %s", ctx.job_name, proc.pid,
                        _ending(ended_by))
        raise
    ended_by = await _uninterrupted(_end(ctx, proc.pid, exited, streams))
    ctx.log.info("command ended job=%s pid=%s exit_status=%s: %s", ctx.job_name, proc.pid,
                 proc.returncode, _ending(ended_by))
    return _result(proc, streams, ended_by, cancelled=cancelled)


async def _exit_status(proc: subprocess.Popen[bytes]) -> int:
    """The program's exit status, as soon as it exits (whoever holds its pipes); reaps it."""
    if sys.platform == "linux":
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError:  # a kernel before 5.3, or out of descriptors
            pass
        else:
            try:
                await _readable(pidfd)
            finally:
                os.close(pidfd)
            return proc.wait()
    return await _wait_in_thread(proc)


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _settle, ready, None)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _wait_in_thread(proc: subprocess.Popen[bytes]) -> int:
    """A thread of its own blocks in waitpid: one per running program, so a long program
    never takes a slot of the loop's default executor."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()

    def wait() -> None:
        code = proc.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_settle, done, code)

    threading.Thread(target=wait, name=f"waitpid-{proc.pid}", daemon=True).start()
    return await done


def _settle(fut: asyncio.Future[T], value: T) -> None:
    if not fut.done():
        fut.set_result(value)


class _Output(asyncio.Protocol):
    """One output pipe, read to its end in chunks (asyncio's readline raises on a line over
    64 KiB, and a reader that stops leaves the program blocked on a full pipe): every byte
    is counted, only the last TAIL_BYTES are kept."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe = pipe
        self._transport: asyncio.BaseTransport | None = None
        self._kept = bytearray()
        self.total = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.connect_read_pipe(lambda: self, self._pipe)

    @property
    def reading(self) -> bool:
        return self._transport is not None

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        self._kept += data
        if len(self._kept) > 2 * TAIL_BYTES:  # trimmed in batches: O(1) per byte
            del self._kept[:-TAIL_BYTES]

    def connection_lost(self, exc: Exception | None) -> None:
        _settle(self.closed, None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        else:
            self._pipe.close()

    def lines(self) -> list[str]:
        """The last TAIL_LINES lines, storable as text: undecodable bytes and NUL (which
        PostgreSQL refuses in text) become U+FFFD."""
        text = self._kept[-TAIL_BYTES:].decode(errors="replace").replace("\x00", "\ufffd")
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        return [line.rstrip("\r") for line in lines[-TAIL_LINES:]]


async def _exited_or_cancelled(exited: asyncio.Future[int], cancel: asyncio.Event) -> bool:
    """Waits for the program to exit or the run to be cancelled (timeout, stop): True for
    the latter."""
    cancelled = asyncio.ensure_future(cancel.wait())
    either: set[asyncio.Future[Any]] = {exited, cancelled}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        cancelled.cancel()
    return not exited.done()


async def _uninterrupted(aw: Awaitable[T]) -> T:
    """Awaits ``aw`` to its end even if this task is cancelled meanwhile, then lets the
    cancellation through: a process group must never be left half-ended."""
    task = asyncio.ensure_future(aw)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


async def _end(ctx: JobContext, pgid: int, exited: asyncio.Future[int],
               streams: Sequence[_Output]) -> signal.Signals | None:
    """Ends the program's process group, reaps the program and reads what is left in its
    pipes; the run is over only then. Returns the signal that ended the group."""
    ended_by = await end_group(pgid, KILL_GRACE_S)
    await exited
    await _drain(streams)
    ctx.report_process(None)
    return ended_by


async def _drain(streams: Sequence[_Output]) -> None:
    """Reads the pipes to their end. A process that left the group (setsid) may hold them
    open for ever, so reading stops after PIPE_DRAIN_S."""
    reading = [s.closed for s in streams if s.reading]
    if reading:
        await asyncio.wait(reading, timeout=PIPE_DRAIN_S)
    for stream in streams:
        stream.close()


def _ending(ended_by: signal.Signals | None) -> str:
    if ended_by is None:
        return "nothing of it was left running"
    return f"process group ended by {ended_by.name}"


def _result(proc: subprocess.Popen[bytes], streams: Sequence[_Output],
            ended_by: signal.Signals | None, *, cancelled: bool) -> JobResult:
    out, err = (s.lines() for s in streams)
    details = {"pid": proc.pid, "exit_status": proc.returncode, "stdout_tail": out,
               "stderr_tail": err, "stdout_bytes": streams[0].total,
               "stderr_bytes": streams[1].total,
               "group_ended_by": ended_by.name if ended_by is not None else None}
    if cancelled:
        return JobResult(errors=[f"cancelled; {_ending(ended_by)}"], details=details)
    left = [] if ended_by is None else [
        f"the program left processes running; {_ending(ended_by)}"]
    if proc.returncode != 0:
        return JobResult(warnings=left, errors=[_failure(proc.returncode, err or out)],
                         details=details)
    return JobResult(warnings=left + err, details=details)


def _failure(code: int, tail: list[str]) -> str:
    """Why the run failed: the exit status or signal, then the last output lines."""
    why = f"exit status {code}" if code >= 0 else _signal_text(-code)
    text = "\n".join(tail)[-ERROR_TAIL_CHARS:]
    return why + (f"; last output:\n{text}" if text else "")


def _signal_text(number: int) -> str:
    with contextlib.suppress(ValueError):
        return f"signal {number} ({signal.Signals(number).name})"
    return f"signal {number}"
