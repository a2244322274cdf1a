"""Where rendered reports wait: ``<data_dir>/reports/outbox`` until the mail server took
them, ``sent/`` afterwards (the newest few per report), ``drafts/`` for dry runs.

A message is written to the outbox *before* it is handed to the server and moved out only
after the server accepted it, so a crash or an outage in between leaves it there for
``candlekeep report resend``: at least once, never silently lost.
"""

from __future__ import annotations

import email
import email.policy
import glob
import os
import re
from dataclasses import dataclass
from email.message import EmailMessage
from enum import StrEnum
from pathlib import Path

from candlekeep.core.errors import CandlekeepError
from candlekeep.core.fsync import fsync_path
from candlekeep.core.timeutil import ms_to_datetime

KEEP = 30
"""Messages kept per report in ``sent/`` and in ``drafts/``; older ones are deleted."""

_NAME = re.compile(r"^(?P<report>.+)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<seq>\d+))?\.eml$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Box(StrEnum):
    OUTBOX = "outbox"
    SENT = "sent"
    DRAFTS = "drafts"


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
        stem = f"{_UNSAFE.sub('_', report)}-{ms_to_datetime(now_ms):%Y%m%dT%H%M%SZ}"
        tmp = folder / f".{stem}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(message.as_bytes())
            f.flush()
            os.fsync(f.fileno())
        taken = [_order(p)[1] for p in folder.glob(f"{glob.escape(stem)}*.eml")
                 if _NAME.match(p.name)]
        n = max(taken, default=0) + 1
        try:
            while True:
                path = folder / (f"{stem}.eml" if n == 1 else f"{stem}-{n}.eml")
                try:
                    os.link(tmp, path)  # atomic, and fails rather than replace
                    break
                except FileExistsError:  # another process took it meanwhile
                    n += 1
            fsync_path(folder)
        finally:
            tmp.unlink(missing_ok=True)
        if box is Box.DRAFTS:
            self._prune(folder, path)
        return path

    def pending(self) -> list[Path]:
        """Messages waiting in the outbox, oldest first."""
        folder = self.folder(Box.OUTBOX)
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=_order)

    def delivered(self, path: Path) -> Path | None:
        """Move a message the server accepted from the outbox to ``sent/`` (pruned to the
        newest ``KEEP`` of its report); a file from elsewhere is left where it is."""
        if path.resolve().parent != self.folder(Box.OUTBOX).resolve():
            return None
        sent = self.folder(Box.SENT)
        sent.mkdir(parents=True, exist_ok=True)
        target = sent / path.name
        os.replace(path, target)
        self._prune(sent, target)
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
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CandlekeepError(f"cannot read {path}: {exc.strerror}") from None
    msg = email.message_from_bytes(data, policy=email.policy.default)
    if not isinstance(msg, EmailMessage) or not msg["To"] or not msg["From"]:
        raise CandlekeepError(f"{path} is not a message to resend (no From or To header)")
    return msg


def _order(path: Path) -> tuple[str, int, str]:
    """Write order: the second, then the number within it (``-10`` after ``-9``)."""
    m = _NAME.match(path.name)
    if m is None:
        return ("", 0, path.name)
    return (m["stamp"], int(m["seq"] or 1), m["report"])
