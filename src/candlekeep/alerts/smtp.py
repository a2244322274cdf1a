"""Sending one e-mail through the configured server (``smtp:``), for alerts and reports.

smtplib in a thread: one message now and then needs no async SMTP client, and smtplib is
what every mail server has been tested against. Its socket timeout (``smtp.timeout``)
bounds every step of a send, so a send always ends in its thread; nothing waits on it for
less, since a send given up on while its thread goes on may still deliver. Sends run on a
few threads of their own: a mail server that stalls holds those, not the default pool
every ``asyncio.to_thread`` (the state DB reads among them) shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage

from candlekeep.config.ops import SmtpConfig
from candlekeep.core.errors import CandlekeepError

SEND_THREADS = 4
"""Mail sends in flight at once; more wait their turn."""

_SENDERS = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="candlekeep-smtp")


class MailError(CandlekeepError):
    """The server could not be reached or refused the message; names the server, never
    the password. ``maybe_delivered``: the line failed while the message was on its way
    (no answer to its end), so the server may have it."""

    def __init__(self, text: str, *, maybe_delivered: bool = False) -> None:
        super().__init__(text)
        self.maybe_delivered = maybe_delivered


def server_name(cfg: SmtpConfig) -> str:
    return f"{cfg.host}:{cfg.effective_port}"


def send_message(cfg: SmtpConfig, message: EmailMessage) -> None:
    """Deliver ``message`` (its From defaults to ``smtp.from``); MailError on failure."""
    if "From" not in message:
        message["From"] = cfg.sender
    context = ssl.create_default_context()
    client: smtplib.SMTP | None = None
    sending = False
    try:
        if cfg.security == "ssl":
            client = smtplib.SMTP_SSL(cfg.host, cfg.effective_port, timeout=cfg.timeout,
                                      context=context)
        else:
            client = smtplib.SMTP(cfg.host, cfg.effective_port, timeout=cfg.timeout)
        if cfg.security == "starttls":
            client.starttls(context=context)
        if cfg.username:
            client.login(cfg.username, cfg.password.get_secret_value() if cfg.password else "")
        sending = True
        client.send_message(message)
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
        raise _failed(cfg, exc, maybe_delivered=False) from None  # the server said no
    except (OSError, smtplib.SMTPException) as exc:
        raise _failed(cfg, exc, maybe_delivered=sending) from None
    else:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            client.quit()  # delivered: a server slow to say goodbye changes nothing
    finally:
        if client is not None:
            client.close()


async def send_message_async(cfg: SmtpConfig, message: EmailMessage) -> None:
    await asyncio.get_running_loop().run_in_executor(_SENDERS, send_message, cfg, message)


def _failed(cfg: SmtpConfig, exc: BaseException, *, maybe_delivered: bool) -> MailError:
    # smtplib reports a reply that never came as a disconnection caused by the timeout
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        what = f"gave no answer within {cfg.timeout:g}s"
    else:
        what = f"failed: {type(exc).__name__}: {_clean(exc, cfg)}"
    tail = "; the message may have been delivered" if maybe_delivered else ""
    return MailError(f"mail server {server_name(cfg)} {what}{tail}",
                     maybe_delivered=maybe_delivered)


def _clean(exc: BaseException, cfg: SmtpConfig) -> str:
    text = str(exc)
    if cfg.password is not None:
        secret = cfg.password.get_secret_value()
        if secret:
            text = text.replace(secret, "***")
    return text
