"""Sending a report: collect, render, keep in the outbox, hand to the mail server, file
as sent. And sending a kept message again.

One message per report, period and recipients: under the report's outbox lock, a sender
first looks for a message of that period still waiting, and sends it rather than render
another. A retry of a report the mail server refused sends the very message the failed
attempt kept (same Message-ID), and ``report resend`` finds one message, not one per
attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING

from candlekeep.alerts.smtp import MailError, send_message, send_message_async
from candlekeep.config.ops import SmtpConfig
from candlekeep.core.errors import CandlekeepError, ConfigError
from candlekeep.reports.collect import Report, collect, period
from candlekeep.reports.outbox import Box, Mailroom, ReportLock, load_headers, load_message
from candlekeep.reports.render import PERIOD_HEADER, REPORT_HEADER, render
from candlekeep.reports.sections import resolve

if TYPE_CHECKING:
    from candlekeep.config.models import Config
    from candlekeep.jobs.runtime import Runtime

log = logging.getLogger("candlekeep.reports")


@dataclass(frozen=True, slots=True)
class Outcome:
    report: str
    subject: str
    to: tuple[str, ...]
    path: Path
    """Where the message is now: ``sent/``, the outbox (not sent) or ``drafts/``."""
    sent: bool
    error: str | None = None
    """Why the mail server did not take it (names the server, never the password)."""
    problems: list[str] = field(default_factory=list)
    """Sections that could not be read (the report went out without them)."""
    reused: bool = False
    """The message an earlier attempt of this period kept, sent instead of a new one."""
    set_aside: tuple[Path, ...] = ()
    """Older messages of the report moved from the outbox to ``unsent/`` (it was full)."""


def check(config: Config, report: str, to: Sequence[str] | None = None) -> tuple[str, ...]:
    """Everything about ``reports.<report>`` that can be wrong before anything is read:
    the report, its sections, the recipients. Returns the recipients."""
    resolve(config, report)
    file = config.file
    where = "--to" if to else f"reports.{report}.to"
    addresses = tuple(to) if to else tuple(config.reports[report].to)
    for i, addr in enumerate(addresses):
        parsed = getaddresses([addr])
        if len(parsed) != 1 or "@" not in parsed[0][1] or " " in parsed[0][1]:
            raise ConfigError(file, f"{where}[{i}]" if not to else where,
                              f"not an e-mail address: {addr!r}",
                              "write one address per entry, e.g. ops@example.com")
    return addresses


async def send_report(runtime: Runtime, report: str, to: Sequence[str] | None = None, *,
                      dry_run: bool = False) -> Outcome:
    """Send ``reports.<report>`` now (to ``to`` instead of its configured recipients when
    given), or the message of this period that still waits in the outbox. A dry run
    writes a new message to ``drafts/`` and sends nothing."""
    cfg = runtime.config
    recipients = check(cfg, report, to)
    smtp = _smtp(cfg)
    now = runtime.clock.now_ms()
    if not dry_run:
        return await _deliver(runtime, smtp, report, recipients, now)
    rep, msg = await asyncio.to_thread(_prepare, runtime, report, recipients, now)
    path = await asyncio.to_thread(Mailroom.of(cfg.data_dir).write, Box.DRAFTS, report, msg,
                                   now)
    return Outcome(report, rep.subject, recipients, path, False, problems=rep.problems)


async def _deliver(runtime: Runtime, smtp: SmtpConfig, report: str, to: tuple[str, ...],
                   now_ms: int) -> Outcome:
    """Keep and send one message of the period. The report's lock is held throughout, so
    a second sender of this report waits, then finds the message sent or still kept."""
    room = Mailroom.of(runtime.config.data_dir)
    async with _holding(room.lock(report)):
        out, msg = await asyncio.to_thread(_keep, runtime, room, report, to, now_ms)
        try:
            await send_message_async(smtp, msg)
        except MailError as exc:
            return replace(out, error=str(exc))
        moved = await asyncio.to_thread(room.delivered, out.path)
        return replace(out, path=moved or out.path, sent=True)


@contextlib.asynccontextmanager
async def _holding(lock: ReportLock) -> AsyncIterator[None]:
    """Hold ``lock``, taken in a thread. A sender cancelled while it waits (a job's
    timeout) releases the lock once the thread has it, rather than leave it held for the
    rest of the process."""
    taking = asyncio.ensure_future(asyncio.to_thread(lock.acquire))
    try:
        await asyncio.shield(taking)
    except asyncio.CancelledError:
        taking.add_done_callback(lambda _: lock.release())
        raise
    try:
        yield
    finally:
        lock.release()


def _keep(runtime: Runtime, room: Mailroom, report: str, to: tuple[str, ...],
          now_ms: int) -> tuple[Outcome, EmailMessage]:
    """The message of this period still in the outbox, or a new one written there (the
    outbox then bounded)."""
    path = _waiting(room, report, period(runtime.config, report, now_ms), to)
    if path is not None:
        log.info("report sending the kept message report=%s path=%s", report, path)
        msg = load_message(path)
        return Outcome(report, str(msg["Subject"]), to, path, False, reused=True), msg
    rep, msg = _prepare(runtime, report, to, now_ms)
    path = room.write(Box.OUTBOX, report, msg, now_ms)
    return Outcome(report, rep.subject, to, path, False, problems=rep.problems,
                   set_aside=tuple(room.bound(report))), msg


def _waiting(room: Mailroom, report: str, period: str, to: Sequence[str]) -> Path | None:
    """The outbox's message of ``report`` for ``period`` and recipients ``to``, if any."""
    for path in reversed(room.pending(report)):
        try:
            h = load_headers(path)
        except CandlekeepError:
            continue  # unreadable: not a message this sender wrote
        if (h[REPORT_HEADER] == report and h[PERIOD_HEADER] == period
                and _addresses([str(h["To"] or "")]) == _addresses(to)):
            return path
    return None


def _prepare(runtime: Runtime, report: str, to: Sequence[str],
             now_ms: int) -> tuple[Report, EmailMessage]:
    rep = collect(runtime, report, to, now_ms)
    return rep, render(rep)


def resend(config: Config, path: Path) -> EmailMessage | None:
    """Send a kept message as it was written (same Message-ID, so a client that got it
    already shows it once) and file it as sent; MailError leaves it where it is. None when
    it was sent meanwhile (a retry of its report sent it while this waited for the lock)."""
    msg = load_message(path)
    room = Mailroom.of(config.data_dir)
    with room.lock(str(msg[REPORT_HEADER] or path.stem)):
        if not path.exists():
            return None
        send_message(_smtp(config), msg)
        room.delivered(path)
    return msg


def _addresses(fields: Sequence[str]) -> set[str]:
    return {addr.lower() for _, addr in getaddresses(list(fields))}


def _smtp(config: Config) -> SmtpConfig:
    if config.smtp is None:
        raise CandlekeepError("no mail server is configured: add smtp: {host: …, from: …}")
    return config.smtp
