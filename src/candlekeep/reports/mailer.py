"""Sending a report: collect, render, keep in the outbox, hand to the mail server, file
as sent. And sending a kept message again."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING

from candlekeep.alerts.smtp import MailError, send_message, send_message_async
from candlekeep.config.ops import SmtpConfig
from candlekeep.core.errors import CandlekeepError, ConfigError
from candlekeep.reports.collect import Report, collect
from candlekeep.reports.outbox import Box, Mailroom, load_message
from candlekeep.reports.render import render
from candlekeep.reports.sections import resolve

if TYPE_CHECKING:
    from candlekeep.config.models import Config
    from candlekeep.jobs.runtime import Runtime


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


def check(config: Config, report: str, to: Sequence[str] | None = None) -> tuple[str, ...]:
    """Everything about ``reports.<report>`` that can be wrong before anything is read:
    the report, its sections, the recipients. Returns the recipients."""
    resolve(config, report)
    file = str(config.config_path or "candlekeep.yaml")
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
    given). A dry run writes the message to ``drafts/`` and sends nothing."""
    cfg = runtime.config
    recipients = check(cfg, report, to)
    smtp = _smtp(cfg)
    now = runtime.clock.now_ms()
    rep, msg = await asyncio.to_thread(_prepare, runtime, report, recipients, now)
    room = Mailroom.of(cfg.data_dir)
    box = Box.DRAFTS if dry_run else Box.OUTBOX
    path = await asyncio.to_thread(room.write, box, report, msg, now)
    outcome = Outcome(report, rep.subject, recipients, path, False, problems=rep.problems)
    if dry_run:
        return outcome
    try:
        await send_message_async(smtp, msg)
    except MailError as exc:
        return Outcome(report, rep.subject, recipients, path, False, str(exc), rep.problems)
    moved = await asyncio.to_thread(room.delivered, path)
    return Outcome(report, rep.subject, recipients, moved or path, True,
                   problems=rep.problems)


def _prepare(runtime: Runtime, report: str, to: Sequence[str],
             now_ms: int) -> tuple[Report, EmailMessage]:
    rep = collect(runtime, report, to, now_ms)
    return rep, render(rep)


def resend(config: Config, path: Path) -> EmailMessage:
    """Send a kept message as it was written (same Message-ID, so a client that got it
    already shows it once) and file it as sent; MailError leaves it where it is."""
    msg = load_message(path)
    send_message(_smtp(config), msg)
    Mailroom.of(config.data_dir).delivered(path)
    return msg


def _smtp(config: Config) -> SmtpConfig:
    if config.smtp is None:
        raise CandlekeepError("no mail server is configured: add smtp: {host: …, from: …}")
    return config.smtp
