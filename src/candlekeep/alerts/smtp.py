"""Sending one e-mail through the configured server (``smtp:``), for alerts and reports.

smtplib in a thread: one message now and then needs no async SMTP client, and smtplib is
what every mail server has been tested against.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage

from candlekeep.config.ops import SmtpConfig
from candlekeep.core.errors import CandlekeepError


class MailError(CandlekeepError):
    """The server could not be reached or refused the message; names the server, never
    the password."""


def server_name(cfg: SmtpConfig) -> str:
    return f"{cfg.host}:{cfg.effective_port}"


def send_message(cfg: SmtpConfig, message: EmailMessage) -> None:
    """Deliver ``message`` (its From defaults to ``smtp.from``); MailError on failure."""
    if "From" not in message:
        message["From"] = cfg.sender
    context = ssl.create_default_context()
    try:
        if cfg.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.effective_port,
                                                   timeout=cfg.timeout, context=context)
        else:
            client = smtplib.SMTP(cfg.host, cfg.effective_port, timeout=cfg.timeout)
        with client:
            if cfg.security == "starttls":
                client.starttls(context=context)
            if cfg.username:
                password = cfg.password.get_secret_value() if cfg.password else ""
                client.login(cfg.username, password)
            client.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"mail server {server_name(cfg)} failed: "
                        f"{type(exc).__name__}: {_clean(exc, cfg)}") from None


async def send_message_async(cfg: SmtpConfig, message: EmailMessage) -> None:
    await asyncio.to_thread(send_message, cfg, message)


def _clean(exc: BaseException, cfg: SmtpConfig) -> str:
    text = str(exc)
    if cfg.password is not None:
        secret = cfg.password.get_secret_value()
        if secret:
            text = text.replace(secret, "***")
    return text
