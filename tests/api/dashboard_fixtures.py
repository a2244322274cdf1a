"""The dashboard test's world: a real config (two sim sources, a DuckDB store, the SQLite
state DB) filled through real jobs, ``candlekeep serve`` as a process (``tests.api.serving``),
and Debian's headless chromium driven through Selenium and /usr/bin/chromedriver.

Every wait polls something against a deadline (the server's log, the page's DOM).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.serving import DAY_MS, TOKEN, Served, cli, now_ms, serving
from tests.scheduler.procs import ENV, write_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
)
VIEWPORT = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
FAILING_JOB = "nightly-export"
FIRST_ERROR = ("upload to s3://backups/candles failed: "
               "<Error><Code>AccessDenied</Code></Error>")
"""What the failing job prints first: markup, as errors quoting a server's reply hold."""
HOUR_MS = 3_600_000
T = TypeVar("T")


def need_chromium() -> None:
    """Skip without Debian's chromium and chromedriver; under CI=true, fail."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    why = f"{', '.join(missing)} missing (apt-get install chromium chromium-driver)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(why)
    pytest.skip(why)


def dashboard_config(folder: Path, message: Path) -> Path:
    """Source ``sim`` (BTC kept fresh, ETH and BNB left six hours behind) and source
    ``replay``, whose SOL series is never written (missing); jobs of four types, one of
    them failing with the text of ``message`` on stderr."""
    start = now_ms() // DAY_MS * DAY_MS - DAY_MS
    jobs: list[dict[str, Any]] = [
        {"name": "ingest", "type": "ingest", "schedule": "*/5 * * * *"},
        {"name": "gaps", "type": "gaps_scan", "schedule": "0 * * * *"},
        {"name": "freshness", "type": "freshness", "schedule": "* * * * *"},
        {"name": FAILING_JOB, "type": "command", "schedule": "0 3 * * *",
         "params": {"argv": ["sh", "-c", 'cat "$0" >&2; exit 3', str(message)]}},
    ]
    return write_config(
        folder, jobs, api={"token": TOKEN},
        stores={"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        sources={"sim": {"type": "sim", "seed": 7}, "replay": {"type": "sim", "seed": 8}},
        series=[{"source": "sim", "symbols": ["BTC/USDT", "ETH/USDT", "BNB/USDT"],
                 "timeframes": ["1m", "5m", "1h"], "start": start},
                {"source": "replay", "symbols": ["SOL/USDT"],
                 "timeframes": ["1m", "5m", "1h"], "start": start}])


@dataclass
class Site:
    """The config, the file the failing job prints, and the API serving them."""

    config: Path
    message: Path
    served: Served

    @property
    def url(self) -> str:
        return self.served.url

    def api(self, path: str) -> Any:
        return self.served.json(path)

    def fail_job(self, message: str) -> None:
        """One more failed run of the failing job, its error ending with ``message``."""
        self.message.write_text(message)
        cli(self.config, "run", FAILING_JOB, ok=(1,))

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The API process stopped (SIGSTOP): it accepts connections and never answers."""
        self.served.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.served.proc.send_signal(signal.SIGCONT)


def _spawn(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "candlekeep", "--config", str(config),
                             *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen[str], ok: tuple[int, ...]) -> None:
    out, _ = proc.communicate(timeout=120)
    if proc.returncode not in ok:
        raise AssertionError(f"{proc.args} exited {proc.returncode}\n{out}")


@contextmanager
def dashboard_site(folder: Path) -> Iterator[Site]:
    """Real jobs fill the config while the API starts: history up to six hours ago for the
    ``sim`` series, then BTC up to now and the failing job, then a gap scan and a freshness
    check. Once the first has created the state DB, what may overlap does, which nearly
    halves the set-up (runs of one data command never overlap: the backfills take turns)."""
    message = folder / "failure.txt"
    message.write_text(FIRST_ERROR)
    config = dashboard_config(folder, message)
    six_hours_ago = time.strftime("%Y-%m-%d %H:%M", time.gmtime(now_ms() / 1000 - 6 * 3600))
    cli(config, "backfill", "--source", "sim", "--end", six_hours_ago)
    started: list[subprocess.Popen[str]] = []

    def run_all(*commands: tuple[tuple[str, ...], tuple[int, ...]]) -> None:
        procs = [(_spawn(config, *args), ok) for args, ok in commands]
        started.extend(p for p, _ in procs)
        for proc, ok in procs:
            _finish(proc, ok)

    try:
        filling = [_spawn(config, "backfill", "--source", "sim", "--symbol", "BTC/USDT"),
                   _spawn(config, "run", FAILING_JOB)]
        started.extend(filling)
        with serving(config) as served:
            _finish(filling[0], (0,))
            _finish(filling[1], (1,))
            run_all((("run", "gaps"), (0,)), (("run", "freshness"), (0, 1)))
            yield Site(config, message, served)
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def chromium(profile: Path) -> WebDriver:
    """Headless chromium with a new profile in ``profile``, its viewport 1280x800."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", VIEWPORT)
    return driver


def until(driver: WebDriver, what: str, fn: Callable[[WebDriver], T], timeout: float = 10,
          ) -> T:
    """Poll the page until ``fn`` returns something truthy."""
    result: T = WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        fn, message=f"timed out waiting for {what}")
    return result
