"""Report fixtures: a state DB and a DuckDB store filled by real jobs on the in-process sim
exchange (built once per module, copied per test), and a real SMTP server on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from candlekeep.config import load_config
from candlekeep.jobs.runtime import Runtime
from candlekeep.scheduler.manual import run_now
from candlekeep.scheduler.validate import load_jobs
from candlekeep.state.statuses import RunStatus
from tests.waiting import free_port

DAY = 86_400_000
FAILING_ERROR = "<script>alert(1)</script> disk & quota exceeded"
"""What the failing job prints: markup a report must show as text, never as HTML."""
FAILING_JOB = "export<b>"


@dataclass
class Received:
    """What the SMTP server on loopback was handed."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class Inbox:
    host: str
    port: int
    messages: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session,
                          envelope: Envelope) -> str:
        content = envelope.original_content or b""
        msg = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), msg))
        return "250 OK"


class SmtpServer:
    """An aiosmtpd server on a chosen loopback port, started when a test says so (the
    port refuses connections until then: a mail server that is down, then back)."""

    def __init__(self, box: Inbox) -> None:
        self.box = box
        self._controller = Controller(box, hostname=box.host, port=box.port)
        self._started = False

    def start(self) -> None:
        self._controller.start()
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._controller.stop()
            self._started = False


@pytest.fixture
def later_inbox() -> Iterator[SmtpServer]:
    """A mail server that is down until the test starts it."""
    server = SmtpServer(Inbox("127.0.0.1", free_port()))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    server = SmtpServer(Inbox("127.0.0.1", free_port()))
    server.start()
    try:
        yield server.box
    finally:
        server.stop()


def config_dict(smtp_port: int, extra_sections: list[str] | None = None) -> dict[str, Any]:
    start = int(time.time() * 1000) // DAY * DAY - DAY  # yesterday 00:00 UTC: a whole day
    return {
        "data_dir": "data",
        "stores": {"main": {"type": "duckdb", "path": "data/candles.duckdb"}},
        "sources": {"sim": {"type": "sim", "seed": 7}},
        "series": [
            {"source": "sim", "symbols": ["BTC/USDT", "ETH/USDT"], "timeframes": ["1m"],
             "start": start},
            # configured but never fetched: MISSING in the freshness table
            {"source": "sim", "symbols": ["SOL/USDT"], "timeframes": ["1h"], "start": start},
        ],
        "jobs": [
            {"name": "backfill-1m", "type": "backfill", "params": {"timeframe": "1m"}},
            {"name": "scan", "type": "gaps_scan"},
            {"name": "fresh", "type": "freshness"},
            {"name": FAILING_JOB, "type": "command", "params": {"argv": [
                "sh", "-c", f"echo '{FAILING_ERROR}' >&2; exit 3"]}},
            {"name": "daily", "type": "report", "params": {"report": "daily"}},
        ],
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none",
                 "from": "candlekeep@example.org", "timeout": "5s"},
        "reports": {"daily": {
            "to": ["ops@example.org", "desk@example.org"], "subject": "[ck] daily",
            "sections": ["freshness", "runs", "gaps", "coverage", "errors",
                         *(extra_sections or [])]}},
    }


def write_config(folder: Path, smtp_port: int, extra_sections: list[str] | None = None) -> Path:
    path = folder / "candlekeep.yaml"
    path.write_text(yaml.safe_dump(config_dict(smtp_port, extra_sections)))
    return path


async def run_jobs(config: Path, *names: str) -> dict[str, Any]:
    """Run configured jobs through the one run path (recorded like a daemon's ticks)."""
    cfg = load_config(config)
    specs = {s.name: s for s in load_jobs(cfg)}
    rt = Runtime(cfg)
    try:
        return {n: await run_now(rt, specs[n]) for n in names}
    finally:
        await rt.aclose()


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose data dir holds a day of 1m candles of two symbols (with the sim's
    exchange-side holes recorded as open gaps), freshness verdicts and a failed run."""
    folder = tmp_path_factory.mktemp("filled")
    config = write_config(folder, free_port())
    outcomes = asyncio.run(run_jobs(config, "backfill-1m", "scan", "fresh", FAILING_JOB))
    assert [o.status for o in outcomes.values()] == [
        RunStatus.SUCCESS, RunStatus.SUCCESS, RunStatus.SUCCESS, RunStatus.FAILED]
    return folder


@pytest.fixture
def site(filled: Path, tmp_path: Path) -> Path:
    """A private copy of the filled folder (its outbox is this test's alone)."""
    target = tmp_path / "site"
    shutil.copytree(filled, target)
    return target
