"""The ``command`` job type against real programs."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from candlekeep.config.models import Config
from candlekeep.jobs import command
from candlekeep.jobs.base import JobContext
from candlekeep.jobs.command import CommandParams, run_command
from candlekeep.jobs.procgroup import ProcessIdentity
from candlekeep.jobs.runtime import Runtime


def ctx(tmp_path: Path, *, dry_run: bool = False) -> JobContext:
    cfg = Config(config_path=tmp_path / "candlekeep.yaml", data_dir=tmp_path / "data")
    return JobContext(runtime=Runtime(cfg), job_name="cmd", log=logging.getLogger("t"),
                      dry_run=dry_run)


def gone(pid: int) -> bool:
    """Not running (absent or a zombie waiting for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def wait_for_file(path: Path, deadline_s: float = 10.0) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


async def test_success_captures_output_tails(tmp_path: Path) -> None:
    p = CommandParams(argv=["sh", "-c", "for i in $(seq 1 30); do echo out$i; done; "
                            "echo warn >&2"])
    res = await run_command(ctx(tmp_path), p)
    assert res.ok
    assert res.warnings == ["warn"]
    assert res.details["exit_status"] == 0
    assert res.details["stdout_tail"][-1] == "out30" and len(res.details["stdout_tail"]) == 20


async def test_nonzero_exit_is_a_failure_with_the_tail(tmp_path: Path) -> None:
    p = CommandParams(argv=["sh", "-c", "echo doing; echo 'cannot reach db' >&2; exit 3"])
    res = await run_command(ctx(tmp_path), p)
    assert not res.ok
    assert res.errors[0].startswith("exit status 3")
    assert "cannot reach db" in res.errors[0]


async def test_cwd_is_relative_to_the_config_folder_and_env_is_merged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scripts").mkdir()
    monkeypatch.setenv("CK_TEST_OUTER", "outer")
    p = CommandParams(argv=[sys.executable, "-c",
                            "import os; print(os.getcwd(), os.environ['A'], "
                            "os.environ['CK_TEST_OUTER'])"],
                      cwd="scripts", env={"A": "b"})
    res = await run_command(ctx(tmp_path), p)
    assert res.ok, res.errors
    assert res.details["stdout_tail"] == [f"{(tmp_path / 'scripts').resolve()} b outer"]


async def test_missing_program(tmp_path: Path) -> None:
    res = await run_command(ctx(tmp_path), CommandParams(argv=["no-such-program-xyz"]))
    assert not res.ok and "no-such-program-xyz" in res.errors[0]


async def test_dry_run_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    res = await run_command(ctx(tmp_path, dry_run=True),
                            CommandParams(argv=["touch", str(marker)]))
    assert res.ok and "would run" in res.warnings[0]
    assert not marker.exists()


async def test_cancel_event_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    c = ctx(tmp_path)
    p = CommandParams(argv=["sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"])
    job = asyncio.ensure_future(run_command(c, p))
    shell, child = (int(x) for x in (await wait_for_file(pids)).split())
    c.cancel.set()
    res = await asyncio.wait_for(job, 15)
    assert not res.ok and res.errors[0] == "cancelled; process group ended by SIGTERM"
    assert res.details["exit_status"] == -signal.SIGTERM
    assert gone(shell) and gone(child)


async def test_task_cancellation_kills_the_process_group(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pids = tmp_path / "pids"
    p = CommandParams(argv=["sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"])
    job = asyncio.ensure_future(run_command(ctx(tmp_path), p))
    shell, child = (int(x) for x in (await wait_for_file(pids)).split())
    job.cancel()
    results = await asyncio.gather(job, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert gone(shell) and gone(child)  # ended before the cancellation went through
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"command cancelled job=cmd pid={shell}: process group ended by SIGTERM"]


@pytest.fixture
def strays() -> Iterator[list[Path]]:
    """Files a test's programs write pids to: whatever of those still runs at the end is
    killed, pass or fail."""
    files: list[Path] = []
    yield files
    for pid in (int(f.read_text()) for f in files if f.exists() and f.read_text().strip()):
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


async def eventually(what: str, cond: Callable[[], bool], deadline_s: float = 10.0) -> None:
    """Polls a condition nothing can be awaited for (another process's fate)."""
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture(params=["pidfd", "waitpid thread"])
def exit_detection(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the job learns that the program exited: a pidfd, and (a kernel or an OS
    without pidfds) a thread blocked in waitpid."""
    if request.param == "waitpid thread":
        def no_pidfd(pid: int, flags: int = 0) -> int:
            raise OSError(errno.ENOSYS, "pidfd_open")
        monkeypatch.setattr(os, "pidfd_open", no_pidfd, raising=False)
    return str(request.param)


async def test_exit_ends_the_run_and_what_it_left_in_the_background(
        tmp_path: Path, strays: list[Path], exit_detection: str) -> None:
    strays.append(bg := tmp_path / "bg")
    p = CommandParams(argv=["sh", "-c", f"sleep 300 & echo $! > {bg}; echo started"])
    res = await asyncio.wait_for(run_command(ctx(tmp_path), p), 30)
    assert res.ok, res.errors
    assert res.details["stdout_tail"] == ["started"]
    assert res.details["group_ended_by"] == "SIGTERM"
    assert "left processes running" in res.warnings[0]
    assert gone(int(bg.read_text()))


async def test_what_ignores_sigterm_is_killed_after_the_grace(
        tmp_path: Path, strays: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command, "KILL_GRACE_S", 0.2)
    strays.append(bg := tmp_path / "bg")
    p = CommandParams(argv=["sh", "-c", f"trap '' TERM; sleep 300 & echo $! > {bg}"])
    res = await asyncio.wait_for(run_command(ctx(tmp_path), p), 30)
    assert res.ok, res.errors
    assert res.details["group_ended_by"] == "SIGKILL"
    assert gone(int(bg.read_text()))


async def test_a_process_that_left_the_group_does_not_hold_the_run(
        tmp_path: Path, strays: list[Path]) -> None:
    """It escaped with setsid but keeps the pipes: the run still ends, reading stops."""
    strays.append(esc := tmp_path / "escaped")
    escape = "import os, time; os.setsid(); open('ready', 'w').close(); time.sleep(300)"
    p = CommandParams(argv=["sh", "-c", f"mkfifo ready; {sys.executable} -c \"{escape}\" & "
                            f"echo $! > {esc}; read x < ready; echo started"])
    res = await asyncio.wait_for(run_command(ctx(tmp_path), p), 30)
    assert res.ok, res.errors
    assert "started" in res.details["stdout_tail"]
    assert not gone(int(esc.read_text()))  # out of the group's reach, by its own doing


async def test_huge_lines_binary_and_nul_output_is_read_to_the_end_and_capped(
        tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.stdout.write('x' * 200 * 1024)\n"  # one line, over asyncio's readline limit
        "sys.stdout.write('\\n')\n"
        "for i in range(20000):\n"  # then more than any pipe buffer holds
        "    print(f'line {i} ' + 'y' * 50)\n"
        "print('last line', flush=True)\n"
        "sys.stderr.buffer.write(b'bin\\x00ary\\xff\\n' * 3000)\n"
        "sys.exit(3)\n")
    res = await asyncio.wait_for(
        run_command(ctx(tmp_path), CommandParams(argv=[sys.executable, "-c", script])), 30)
    assert not res.ok
    assert res.errors[0].startswith("exit status 3; last output:\n")
    assert "\x00" not in res.errors[0] and len(res.errors[0]) <= 4096
    out, err = res.details["stdout_tail"], res.details["stderr_tail"]
    assert out[-1] == "last line" and len(out) <= 20 and sum(map(len, out)) <= 8192
    assert err[-1] == "bin\ufffdary\ufffd" and len(err) <= 20
    assert not any("\x00" in line for line in out + err)
    lines = sum(len(f"line {i} ") + 51 for i in range(20000))
    assert res.details["stdout_bytes"] == 200 * 1024 + 1 + lines + len("last line\n")
    assert res.details["stderr_bytes"] == 3000 * len(b"bin\x00ary\xff\n")


async def test_the_run_reports_its_process_group_then_its_end(tmp_path: Path) -> None:
    reported: list[str | None] = []
    c = ctx(tmp_path)
    c.process_hook = reported.append
    res = await run_command(c, CommandParams(argv=["sh", "-c", "exit 0"]))
    assert res.ok
    assert len(reported) == 2 and reported[1] is None
    assert reported[0] is not None
    assert ProcessIdentity.from_text(reported[0]).pgid == res.details["pid"]


PARENT = """
import asyncio, logging, sys
from pathlib import Path
from candlekeep.config.models import Config
from candlekeep.jobs.base import JobContext
from candlekeep.jobs.command import CommandParams, run_command
from candlekeep.jobs.runtime import Runtime

folder = Path(sys.argv[1])
cfg = Config(config_path=folder / "candlekeep.yaml", data_dir=folder / "data")
ctx = JobContext(runtime=Runtime(cfg), job_name="cmd", log=logging.getLogger("t"))
asyncio.run(run_command(ctx, CommandParams(argv=["sh", "-c", "echo $$ > pid; exec sleep 300"])))
"""


@pytest.mark.slow
async def test_the_program_dies_with_the_daemon(tmp_path: Path, strays: list[Path]) -> None:
    strays.append(pid_file := tmp_path / "pid")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)])
    try:
        pid = int(await wait_for_file(pid_file))
    finally:
        parent.kill()
        await asyncio.to_thread(parent.wait)
    await eventually("the program died with its parent", lambda: gone(pid))
