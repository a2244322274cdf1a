"""The API as users run it: ``candlekeep serve`` as a process on a free port, with a real
config (a sim source, a DuckDB store, the state DB) filled by real jobs.

Waits poll the process's log or a route against a deadline.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from candlekeep.core.timeframes import DAY_MS
from tests.scheduler.procs import ENV, wait_for, write_config

__all__ = ["DAY_MS", "TOKEN", "Served", "cli", "market_config", "now_ms", "serving",
           "wait_for"]

TOKEN = "api-test-token-3c9f1e"
SERVING = re.compile(r"serving the API on (http://\S+)")

JOBS: list[dict[str, Any]] = [
    {"name": "ingest", "type": "ingest", "schedule": "*/5 * * * *"},
    {"name": "gaps", "type": "gaps_scan", "schedule": "0 * * * *"},
    {"name": "freshness", "type": "freshness", "schedule": "*/10 * * * *"},
    {"name": "broken", "type": "command",
     "params": {"argv": ["sh", "-c", "echo disk full >&2; exit 3"]}},
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def market_config(folder: Path, *, state: str | None = None, token: str | None = TOKEN,
                  jobs: list[dict[str, Any]] | None = None, **api: Any) -> Path:
    """Two symbols at 1m and 1h from a day ago, from the simulated exchange."""
    start = now_ms() // DAY_MS * DAY_MS - DAY_MS
    extra: dict[str, Any] = {
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"sim": {"type": "sim", "seed": 3}},
        "series": [{"source": "sim", "symbols": ["BTC/USDT", "ETH/USDT"],
                    "timeframes": ["1m", "1h"], "start": start}],
    }
    if token is not None or api:
        extra["api"] = {**({"token": token} if token else {}), **api}
    if state is not None:
        extra["state"] = state
    return write_config(folder, JOBS if jobs is None else jobs, **extra)


def cli(cfg: Path, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    out = subprocess.run([sys.executable, "-m", "candlekeep", "--config", str(cfg), *args],
                         env=ENV, capture_output=True, text=True, timeout=120)
    if out.returncode not in ok:
        raise AssertionError(f"candlekeep {' '.join(args)} exited {out.returncode}\n"
                             f"{out.stdout}\n{out.stderr}")
    return out.stdout


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, *, token: str | None = TOKEN, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get(self.url + path, headers={**headers, **kw.pop("headers", {})},
                               **kw)

    def json(self, path: str) -> Any:
        resp = self.get(path)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        return resp.json()


@contextmanager
def serving(cfg: Path, *args: str) -> Iterator[Served]:
    """``candlekeep -v serve --port 0`` (access lines in its log), until the block ends."""
    log_path = cfg.parent / "serve.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "candlekeep", "-v", "--config",
                                 str(cfg), "serve", "--port", "0", *args],
                                env=ENV, stdout=log, stderr=log)
    served = Served(proc, log_path)
    try:
        def started() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited {proc.returncode}\n{served.log()}")
            found = SERVING.search(served.log())
            return found.group(1) if found else None

        served.url = wait_for("serve to listen", started)
        yield served
    finally:
        served.client.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
