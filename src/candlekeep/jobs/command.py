"""The ``command`` job type: run any program on the schedule.

It is the migration path for old cron scripts: same argv, now with history, retries,
timeouts, no overlap and the SLO report. The program runs in its own process group so that
cancelling the job (timeout, ``candlekeep stop``) also stops whatever it spawned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from pathlib import Path

from pydantic import Field

from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type

TAIL_LINES = 20
TAIL_LINE_CHARS = 500
KILL_GRACE_S = 5.0
"""After SIGTERM, how long the process group gets before SIGKILL."""
PIPE_DRAIN_S = 2.0
"""After the program exits, how long its output may keep coming (from children)."""


class CommandParams(Params):
    argv: list[str] = Field(min_length=1, description="program and arguments (no shell)")
    cwd: str | None = Field(default=None, description="working folder, relative to the "
                            "config file's folder")
    env: dict[str, str] = Field(default_factory=dict, description="merged over the "
                                "daemon's environment")


def _workdir(ctx: JobContext, cwd: str | None) -> Path:
    path = ctx.config.config_path
    base = path.parent if path is not None else Path.cwd()
    if cwd is None:
        return base
    p = Path(cwd).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


async def _tail(stream: asyncio.StreamReader | None, keep: deque[str]) -> None:
    if stream is None:
        return
    while True:
        line = await stream.readline()
        if not line:
            return
        text = line.decode(errors="replace").rstrip("\r\n")
        keep.append(text[:TAIL_LINE_CHARS])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the group, then SIGKILL it if it lingers; never leaves a zombie behind."""
    if proc.returncode is not None:
        _signal_group(proc.pid, signal.SIGKILL)  # what the finished leader left running
        return
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(asyncio.CancelledError):
        await proc.wait()


@job_type("command", CommandParams)
async def run_command(ctx: JobContext, params: CommandParams) -> JobResult:
    """Runs a program; a non-zero exit status is a failure, with its output's tail."""
    workdir = _workdir(ctx, params.cwd)
    if ctx.dry_run:
        return JobResult(warnings=[f"would run {params.argv!r} in {workdir}"
                                   + (f" with env {sorted(params.env)}" if params.env else "")],
                         details={"argv": params.argv, "cwd": str(workdir)})
    env = {**os.environ, **params.env}
    try:
        proc = await asyncio.create_subprocess_exec(
            *params.argv, cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
    except FileNotFoundError as exc:
        missing = workdir if not workdir.is_dir() else params.argv[0]
        return JobResult(errors=[f"cannot run {params.argv[0]!r}: not found ({missing}): "
                                 f"{exc.strerror}"])
    except PermissionError as exc:
        return JobResult(errors=[f"cannot run {params.argv[0]!r}: {exc.strerror}"])
    ctx.log.info("command started job=%s pid=%s argv=%r", ctx.job_name, proc.pid, params.argv)
    out: deque[str] = deque(maxlen=TAIL_LINES)
    err: deque[str] = deque(maxlen=TAIL_LINES)
    readers = asyncio.gather(_tail(proc.stdout, out), _tail(proc.stderr, err))
    waiter = asyncio.ensure_future(proc.wait())
    cancel = asyncio.ensure_future(ctx.cancel.wait())
    try:
        await asyncio.wait({waiter, cancel}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            await _stop(proc)
            return JobResult(errors=["cancelled; the process group was stopped"],
                             details=_details(proc, out, err))
        # A child it left in the background may hold the pipes open: don't wait for it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(readers), PIPE_DRAIN_S)
    except asyncio.CancelledError:
        await _stop(proc)
        raise
    finally:
        cancel.cancel()
        waiter.cancel()
        readers.cancel()
    code = proc.returncode
    details = _details(proc, out, err)
    if code != 0:
        why = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        tail = "\n".join(err or out)
        return JobResult(errors=[f"{why}" + (f"; last output:\n{tail}" if tail else "")],
                         details=details)
    return JobResult(warnings=list(err), details=details)


def _details(proc: asyncio.subprocess.Process, out: deque[str],
             err: deque[str]) -> dict[str, object]:
    return {"pid": proc.pid, "exit_status": proc.returncode, "stdout_tail": list(out),
            "stderr_tail": list(err)}
