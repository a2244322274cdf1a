"""Where rendered reports wait: ``<data_dir>/reports/outbox`` until the mail server took
them, ``sent/`` afterwards (the newest few per report), ``drafts/`` for dry runs, and
``unsent/`` for messages that waited too long.

A message is written to the outbox *before* it is handed to the server and moved out only
after the server accepted it, so a crash or an outage in between leaves it there for
``candlekeep report resend``: at least once, never silently lost.

The outbox holds at most ``KEEP_PENDING`` messages per report. An outage of a week would
otherwise have ``report resend`` send a week of hourly reports, most of them stale: older
messages are moved to ``unsent/`` (logged, and a warning of the run that moved them), where
they stay until someone sends one by name or deletes them.
"""

from __future__ import annotations

import email
import email.policy
import fcntl
import glob
import logging
import os
import re
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from enum import StrEnum
from pathlib import Path

from candlekeep.core.errors import CandlekeepError
from candlekeep.core.fsync import fsync_path
from candlekeep.core.timeutil import ms_to_datetime

log = logging.getLogger("candlekeep.reports")

KEEP = 30
"""Messages kept per report in ``sent/`` and in ``drafts/``; older ones are deleted."""
KEEP_PENDING = 7
"""Messages waiting per report in the outbox: a week of a daily report, what a resend after
an outage should still deliver. Older ones are moved to ``unsent/``, never deleted."""

_NAME = re.compile(r"^(?P<report>.+)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<seq>\d+))?\.eml$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Box(StrEnum):
    OUTBOX = "outbox"
    SENT = "sent"
    DRAFTS = "drafts"
    UNSENT = "unsent"
    """Set aside from the outbox (more than ``KEEP_PENDING`` waited): sent only by name."""


class ReportLock:
    """Held while a message of one report is looked for, written and sent, so that two
    senders (a daemon's retry, a report sent by hand, a resend) never keep two messages of
    one period nor send one twice. An ``flock`` on a file descriptor of its own, so it
    excludes threads as well as processes, and the kernel drops it if the holder dies;
    taken in a thread (it blocks), released from anywhere."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Idempotent: a holder gone early (cancelled) may release twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the flock

    def __enter__(self) -> ReportLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True, slots=True)
class Mailroom:
    """The report folders under one data dir."""

    root: Path

    @classmethod
    def of(cls, data_dir: Path) -> Mailroom:
        return cls(data_dir / "reports")

    def folder(self, box: Box) -> Path:
        return self.root / box.value

    def write(self, box: Box, report: str, message: EmailMessage, now_ms: int) -> Path:
        """Write ``message`` durably as ``<report>-<UTC time>[-n].eml`` in ``box``, after
        every message of that second (never overwriting one). Drafts are pruned to the
        newest ``KEEP``."""
        folder = self.folder(box)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{_safe(report)}-{ms_to_datetime(now_ms):%Y%m%dT%H%M%SZ}"
        tmp = folder / f".{stem}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(message.as_bytes())
            f.flush()
            os.fsync(f.fileno())
        try:
            path = _place(tmp, folder, stem)
        finally:
            tmp.unlink(missing_ok=True)
        if box is Box.DRAFTS:
            self._prune(folder, path)
        return path

    def lock(self, report: str) -> ReportLock:
        """The lock of ``report``'s messages in the outbox (see ``ReportLock``)."""
        folder = self.folder(Box.OUTBOX)
        return ReportLock(folder / f".{_safe(report)}.lock")

    def pending(self, report: str | None = None) -> list[Path]:
        """Messages waiting in the outbox (of one report, or all), oldest first."""
        folder = self.folder(Box.OUTBOX)
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if (m := _NAME.match(p.name))
                 and (report is None or m["report"] == _safe(report))]
        return sorted(found, key=_order)

    def bound(self, report: str) -> list[Path]:
        """Move the oldest messages of ``report`` beyond the newest ``KEEP_PENDING`` from
        the outbox to ``unsent/``; returns where they are now."""
        moved = []
        for old in self.pending(report)[:-KEEP_PENDING]:
            target = self._move(old, Box.UNSENT)
            log.warning("report message moved aside report=%s path=%s: more than %d waited "
                        "in the outbox; send it with: candlekeep report resend %s",
                        report, target, KEEP_PENDING, target)
            moved.append(target)
        return moved

    def delivered(self, path: Path) -> Path | None:
        """Move a message the server accepted from the outbox (or ``unsent/``) to ``sent/``
        (pruned to the newest ``KEEP`` of its report); a file from elsewhere is left where
        it is."""
        if path.resolve().parent not in (self.folder(Box.OUTBOX).resolve(),
                                          self.folder(Box.UNSENT).resolve()):
            return None
        sent = self.folder(Box.SENT)
        sent.mkdir(parents=True, exist_ok=True)
        target = sent / path.name
        os.replace(path, target)
        self._prune(sent, target)
        return target

    def _move(self, path: Path, box: Box) -> Path:
        """Move ``path`` into ``box`` under a name no file there has (its own, or the next
        number of its second), durably."""
        folder = self.folder(box)
        folder.mkdir(parents=True, exist_ok=True)
        m = _NAME.match(path.name)
        assert m is not None, "only kept messages are moved"
        target = _place(path, folder, f"{m['report']}-{m['stamp']}")
        path.unlink()
        fsync_path(path.parent)
        return target

    def _prune(self, folder: Path, newest: Path) -> None:
        m = _NAME.match(newest.name)
        if m is None:
            return
        same = sorted((p for p in folder.iterdir()
                       if (o := _NAME.match(p.name)) and o["report"] == m["report"]),
                      key=_order)
        for old in same[:-KEEP]:
            old.unlink(missing_ok=True)


def load_message(path: Path) -> EmailMessage:
    """A kept message, ready to send again; CandlekeepError naming the file otherwise."""
    msg = email.message_from_bytes(_read(path), policy=email.policy.default)
    if not isinstance(msg, EmailMessage) or not msg["To"] or not msg["From"]:
        raise CandlekeepError(f"{path} is not a message to resend (no From or To header)")
    return msg


def load_headers(path: Path) -> Message:
    """A kept message's headers only (its body, charts included, is not parsed)."""
    return BytesHeaderParser(policy=email.policy.default).parsebytes(_read(path))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CandlekeepError(f"cannot read {path}: {exc.strerror}") from None


def _order(path: Path) -> tuple[str, int, str]:
    """Write order: the second, then the number within it (``-10`` after ``-9``)."""
    m = _NAME.match(path.name)
    if m is None:
        return ("", 0, path.name)
    return (m["stamp"], int(m["seq"] or 1), m["report"])


def _safe(report: str) -> str:
    """A report name as file names carry it."""
    return _UNSAFE.sub("_", report)


def _place(src: Path, folder: Path, stem: str) -> Path:
    """Link ``src`` into ``folder`` as ``<stem>[-n].eml`` after every name of that stem
    already there (``os.link`` fails rather than replace one another process took
    meanwhile), and sync the folder."""
    taken = [_order(p)[1] for p in folder.glob(f"{glob.escape(stem)}*.eml")
             if _NAME.match(p.name)]
    n = max(taken, default=0) + 1
    while True:
        path = folder / (f"{stem}.eml" if n == 1 else f"{stem}-{n}.eml")
        try:
            os.link(src, path)
            break
        except FileExistsError:
            n += 1
    fsync_path(folder)
    return path
