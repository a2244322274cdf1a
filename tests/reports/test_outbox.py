"""A report is one message per report, period and recipients: retries and concurrent senders
send the kept message instead of writing another, and the outbox stays bounded."""

from __future__ import annotations

import asyncio
import email
import email.policy
import fcntl
import logging
import os
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

from candlekeep.config import load_config
from candlekeep.core.clock import FakeClock
from candlekeep.jobs.runtime import Runtime
from candlekeep.reports.mailer import send_report
from candlekeep.reports.outbox import KEEP_PENDING, Mailroom
from candlekeep.scheduler.manual import run_now
from candlekeep.scheduler.validate import load_jobs
from candlekeep.state.statuses import RunStatus
from tests.cli.conftest import cli
from tests.reports.conftest import DAY, Inbox, SmtpServer, config_dict
from tests.waiting import free_port, until

HOUR = 3_600_000


def _files(site: Path, box: str) -> list[Path]:
    folder = site / "data" / "reports" / box
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []


def _message(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _config(site: Path, port: int, **daily: Any) -> Path:
    """The site's config with the mail server on ``port`` and ``daily`` merged into the
    report, and the report job retried twice (1 s apart)."""
    raw = config_dict(port)
    raw["reports"]["daily"].update(daily)
    (job,) = [j for j in raw["jobs"] if j["name"] == "daily"]
    job["retries"] = {"attempts": 3, "backoff": "1s", "max_backoff": "1s"}
    path = site / "candlekeep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _midday() -> int:
    """Noon UTC today: far from a day's edges, where a daily report's period changes."""
    return int(time.time() * 1000) // DAY * DAY + DAY // 2


async def test_retries_send_the_message_the_first_attempt_kept(
        site: Path, later_inbox: SmtpServer) -> None:
    config = _config(site, later_inbox.box.port)
    cfg = load_config(config)
    (spec,) = [s for s in load_jobs(cfg) if s.name == "daily"]
    clock = FakeClock(_midday())
    rt = Runtime(cfg, clock=clock)
    try:
        run = asyncio.ensure_future(run_now(rt, spec))
        await until(lambda: clock.sleepers >= 2, "the first retry's backoff")  # + heartbeat
        (kept,) = _files(site, "outbox")
        await clock.advance(1)
        await until(lambda: clock.sleepers >= 2, "the second retry's backoff")
        assert _files(site, "outbox") == [kept]  # the second attempt wrote nothing new
        later_inbox.start()  # the mail server is back for the third attempt
        await clock.advance(1)
        outcome = await run
    finally:
        await rt.aclose()
    assert outcome.status is RunStatus.SUCCESS and outcome.attempts == 3, outcome.error
    assert outcome.result is not None and outcome.result.details["reused"] is True
    (got,) = later_inbox.box.messages
    written = _message(site / "data" / "reports" / "sent" / kept.name)
    assert got.message["Message-ID"] == written["Message-ID"]
    assert got.message["X-Candlekeep-Period"] == written["X-Candlekeep-Period"]
    assert _files(site, "outbox") == []


async def test_a_run_that_failed_all_its_attempts_leaves_one_message_to_resend(
        site: Path, inbox: Inbox) -> None:
    config = _config(site, free_port())  # nothing listens there
    cfg = load_config(config)
    (spec,) = [s for s in load_jobs(cfg) if s.name == "daily"]
    clock = FakeClock(_midday())
    rt = Runtime(cfg, clock=clock)
    try:
        run = asyncio.ensure_future(run_now(rt, spec))
        for attempt in (1, 2):
            await until(lambda: clock.sleepers >= 2, f"the backoff after attempt {attempt}")
            await clock.advance(1)
        outcome = await run
    finally:
        await rt.aclose()
    assert outcome.status is RunStatus.FAILED and outcome.attempts == 3
    (kept,) = _files(site, "outbox")

    out = cli(_config(site, inbox.port), "report", "resend")
    assert out.returncode == 0, out.stderr
    (got,) = inbox.messages
    sent = _message(site / "data" / "reports" / "sent" / kept.name)
    assert got.message["Message-ID"] == sent["Message-ID"]


async def test_one_message_waits_per_report_period_and_recipients(site: Path,
                                                                  inbox: Inbox) -> None:
    """Two senders at once (a daemon's tick, a hand-sent report) keep one message; other
    recipients or the next period are other messages; resend sends each once."""
    cfg = load_config(_config(site, free_port()))
    clock = FakeClock(_midday())
    rt = Runtime(cfg, clock=clock)
    try:
        both = await asyncio.gather(send_report(rt, "daily"), send_report(rt, "daily"))
        assert [o.sent for o in both] == [False, False]
        assert both[0].path == both[1].path and [o.reused for o in both].count(True) == 1
        me = await send_report(rt, "daily", ["me@example.org"])
        clock.set(clock.now_ms() + DAY)
        tomorrow = await send_report(rt, "daily")
    finally:
        await rt.aclose()
    assert not me.reused and not tomorrow.reused
    kept = _files(site, "outbox")
    assert sorted(kept) == sorted([both[0].path, me.path, tomorrow.path])
    periods = {p: str(_message(p)["X-Candlekeep-Period"]) for p in kept}
    assert periods[both[0].path] == periods[me.path] != periods[tomorrow.path]

    out = cli(_config(site, inbox.port), "report", "resend")
    assert out.returncode == 0, out.stderr
    assert sorted(str(r.message["Message-ID"]) for r in inbox.messages) == sorted(
        str(_message(site / "data" / "reports" / "sent" / p.name)["Message-ID"])
        for p in kept)
    assert [r.rcpt_tos for r in inbox.messages].count(["me@example.org"]) == 1


async def test_the_outbox_keeps_the_newest_per_report_and_moves_older_ones_aside(
        site: Path, inbox: Inbox, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(_config(site, free_port(), window="1h", sections=["errors"]))
    clock = FakeClock(_midday())
    rt = Runtime(cfg, clock=clock)
    outcomes = []
    try:
        with caplog.at_level(logging.WARNING, logger="candlekeep.reports"):
            for _ in range(KEEP_PENDING + 2):  # an hourly report while the server is down
                outcomes.append(await send_report(rt, "daily"))
                clock.set(clock.now_ms() + HOUR)
    finally:
        await rt.aclose()
    written = [o.path.name for o in outcomes]
    assert len(set(written)) == KEEP_PENDING + 2
    assert [p.name for p in _files(site, "outbox")] == written[2:]
    aside = _files(site, "unsent")
    assert [p.name for p in aside] == written[:2]  # moved, never deleted
    assert [o.set_aside for o in outcomes] == [()] * KEEP_PENDING + [(aside[0],), (aside[1],)]
    moved = [r.getMessage() for r in caplog.records if "moved aside" in r.getMessage()]
    assert len(moved) == 2 and aside[0].name in moved[0]

    # resend sends what waits in the outbox; a message set aside is sent by naming it
    config = _config(site, inbox.port)
    out = cli(config, "report", "resend")
    assert out.returncode == 0, out.stderr
    assert len(inbox.messages) == KEEP_PENDING
    out = cli(config, "report", "resend", str(aside[0]))
    assert out.returncode == 0, out.stderr
    assert len(inbox.messages) == KEEP_PENDING + 1
    assert [p.name for p in _files(site, "unsent")] == [aside[1].name]
    assert aside[0].name in [p.name for p in _files(site, "sent")]


def _waiters(lock: Path) -> int:
    """Holders-to-be blocked on ``lock``'s flock (``->`` lines of /proc/locks)."""
    ino = os.stat(lock).st_ino
    return sum(1 for line in Path("/proc/locks").read_text().splitlines()
               if (f := line.split())[1] == "->" and f[6].rsplit(":", 1)[1] == str(ino))


def _free(lock: Path) -> bool:
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


async def test_a_sender_cancelled_while_waiting_for_the_lock_does_not_keep_it(
        site: Path, inbox: Inbox) -> None:
    """A job's timeout cancels a sender queued behind another one: the lock its thread
    takes afterwards is let go, or every later report of that name would wait forever."""
    cfg = load_config(_config(site, inbox.port))
    rt = Runtime(cfg, clock=FakeClock(_midday()))
    held = Mailroom.of(cfg.data_dir).lock("daily")
    held.acquire()  # another sender of the report, mid-send
    try:
        queued = asyncio.ensure_future(send_report(rt, "daily"))
        await until(lambda: _waiters(held.path) == 1, "the sender to wait for the lock")
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
    finally:
        held.release()
    try:
        await until(lambda: _free(held.path), "the cancelled sender to let go", timeout=10)
        out = await send_report(rt, "daily")
    finally:
        await rt.aclose()
    assert out.sent and len(inbox.messages) == 1
