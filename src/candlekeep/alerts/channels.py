"""Delivering to one channel: e-mail through ``alerts.smtp``, a webhook POST, a dead-man
heartbeat ping. Each delivery is bounded by its channel's timeout (an e-mail by smtplib's
own, on every step), and what it raises (ChannelError) names the channel, never its URL or
the mail password: webhook and heartbeat URLs carry their secret in the path."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from candlekeep.alerts import render
from candlekeep.alerts.message import Message
from candlekeep.alerts.smtp import MailError, send_message_async
from candlekeep.config.ops import (
    ChannelConfig,
    EmailChannel,
    HeartbeatChannel,
    SmtpConfig,
    WebhookChannel,
)
from candlekeep.core.errors import CandlekeepError
from candlekeep.core.text import clean_text


class ChannelError(CandlekeepError):
    """A channel could not deliver; the text is safe to log. ``maybe_delivered``: it may
    have all the same (the line failed after the message went out), so the alert counts
    as told rather than be sent twice."""

    def __init__(self, text: str, *, maybe_delivered: bool = False) -> None:
        super().__init__(text)
        self.maybe_delivered = maybe_delivered


class _HideUrls(logging.Filter):
    """httpx logs every request's full URL at INFO: the alert URLs are replaced by their
    scheme and host before any handler sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.urls and isinstance(record.args, tuple):
            record.args = tuple(_redacted(a) if str(a) in self.urls else a
                                for a in record.args)
        return True


def _redacted(url: object) -> str:
    u = httpx.URL(str(url))
    return f"{u.scheme}://{u.host}/…"


_HIDE = _HideUrls()
logging.getLogger("httpx").addFilter(_HIDE)


def _scrub(text: str, secrets: list[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        if s:
            text = text.replace(s, "…")
    return clean_text(text, 500) or ""


def fail_url(url: str) -> str:
    """healthchecks.io's failure signal: ``<url>/fail`` (query string kept)."""
    u = httpx.URL(url)
    return str(u.copy_with(path=u.path.rstrip("/") + "/fail"))


async def _post(name: str, url: str, timeout: float, **body: Any) -> None:
    secrets = [url]
    try:
        target = httpx.URL(url)
        _HIDE.urls.add(str(target))
        secrets += [s for s in (str(target), target.path, target.query.decode()) if len(s) > 1]
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            reply = await asyncio.wait_for(client.post(target, **body), timeout)
    except (TimeoutError, httpx.TimeoutException):
        raise ChannelError(f"channel {name!r}: no answer within {timeout:g}s") from None
    except Exception as exc:  # httpx.HTTPError, InvalidURL, a TLS error: none may leak the URL
        raise ChannelError(f"channel {name!r}: {type(exc).__name__}: "
                           f"{_scrub(str(exc), secrets)}") from None
    if reply.status_code >= 300:
        raise ChannelError(f"channel {name!r}: HTTP {reply.status_code} "
                           f"{_scrub(reply.text[:200], secrets)}".rstrip())


async def deliver(name: str, channel: ChannelConfig, message: Message,
                  smtp: SmtpConfig | None) -> None:
    """Send ``message`` through the named channel (not a heartbeat; see ``ping``)."""
    if isinstance(channel, EmailChannel):
        if smtp is None:
            raise ChannelError(f"channel {name!r}: no mail server configured (smtp:)")
        mail = render.email(message, channel.to, smtp.sender)
        try:
            await send_message_async(smtp, mail)
        except MailError as exc:
            raise ChannelError(f"channel {name!r}: {exc}",
                               maybe_delivered=exc.maybe_delivered) from None
        return
    if isinstance(channel, WebhookChannel):
        payload = render.slack(message) if channel.format == "slack" else render.as_json(message)
        await _post(name, channel.url.get_secret_value(), channel.timeout, json=payload)
        return
    raise ChannelError(f"channel {name!r} is a {channel.type} channel; rules cannot use it")


async def ping(name: str, channel: HeartbeatChannel, ok: bool, body: str) -> None:
    """The dead-man switch: the URL after a success, ``<url>/fail`` after a failure; the
    body (a line about the run) shows in the service's event log."""
    url = channel.url.get_secret_value()
    await _post(name, url if ok else fail_url(url), channel.timeout,
                content=body.encode("utf-8"))
