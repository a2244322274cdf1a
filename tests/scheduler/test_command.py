"""The ``command`` job type against real programs."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import pytest

from candlekeep.config.models import Config
from candlekeep.jobs.base import JobContext
from candlekeep.jobs.command import CommandParams, run_command
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
    assert not res.ok and "cancelled" in res.errors[0]
    assert gone(shell) and gone(child)


async def test_task_cancellation_kills_the_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    p = CommandParams(argv=["sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"])
    job = asyncio.ensure_future(run_command(ctx(tmp_path), p))
    shell, child = (int(x) for x in (await wait_for_file(pids)).split())
    job.cancel()
    results = await asyncio.gather(job, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    end = time.monotonic() + 10
    while not (gone(shell) and gone(child)) and time.monotonic() < end:
        await asyncio.sleep(0.02)
    assert gone(shell) and gone(child)
