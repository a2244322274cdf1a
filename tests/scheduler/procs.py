"""Helpers for tests that run real ``candlekeep`` processes: configs, daemons, polling.

Waiting is always polling the state DB, a PID file or a log against a deadline: another
process's progress cannot be awaited.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from candlekeep.state.db import StateDB
from candlekeep.state.rows import RunRow

T = TypeVar("T")
ENV = {**os.environ, "CANDLEKEEP_TEST_JOBS": "1"}


def write_config(folder: Path, jobs: list[dict[str, Any]], **extra: Any) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    path = folder / "candlekeep.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", "jobs": jobs, **extra}))
    return path


def cli(cfg: Path, *args: str, timeout: float = 60,
        prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "candlekeep", "--config", str(cfg),
                           *args], env=ENV, capture_output=True, text=True, timeout=timeout)


class Daemon:
    """``candlekeep start`` in the foreground, its output in a file beside the config.

    ``prefix`` wraps the command (``faketime -f +20s`` for a node whose clock is off)."""

    def __init__(self, cfg: Path, *args: str, prefix: tuple[str, ...] = (),
                 heartbeat: str = "1s") -> None:
        self.cfg = cfg
        self.out_path = cfg.parent / "daemon-test.out"
        self.out = self.out_path.open("ab")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "candlekeep", "--config", str(cfg), "start",
             "--heartbeat", heartbeat, *args], env=ENV, stdout=self.out, stderr=self.out)

    def output(self) -> str:
        self.out.flush()
        return self.out_path.read_text(errors="replace")

    def log(self) -> str:
        path = self.cfg.parent / "data" / "logs" / "candlekeep.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def term(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a test may have stopped it
            self.proc.kill()
            self.proc.wait(10)
        self.out.close()


def wait_for(what: str, fn: Callable[[], T | None], deadline_s: float = 30.0) -> T:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def runs(state: StateDB, job: str | None = None) -> list[RunRow]:
    return sorted(state.list_runs(job=job, limit=None), key=lambda r: (r.scheduled_for,
                                                                       r.attempt))


def faketime(offset: str) -> tuple[str, ...]:
    """A command prefix that runs a process with its clock moved by ``offset`` (libfaketime).

    Debian's ``faketime`` package; ``.ci/run`` installs it. Under CI=true a missing
    faketime is a failure, elsewhere a skip."""
    exe = shutil.which("faketime")
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("faketime is not installed (apt-get install faketime)")
        pytest.skip("faketime is not installed (apt-get install faketime)")
    return (exe, "-f", offset)
