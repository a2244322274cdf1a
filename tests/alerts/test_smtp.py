"""The mail sender on a mail server that never answers: sends stall on threads of their
own, never on the pool every ``asyncio.to_thread`` (the state DB's reads among them)
shares, and each ends in its thread, naming the server."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

from candlekeep.alerts.smtp import SEND_THREADS, MailError, send_message_async
from candlekeep.config.ops import SmtpConfig
from tests.alerts.conftest import SilentServer
from tests.waiting import until

STALLED = 40
"""More sends than any default pool has threads (at most 32)."""


def mail() -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = "[candlekeep] job ingest failed"
    msg["To"] = "ops@example.org"
    msg.set_content("Job ingest failed.")
    return msg


async def test_stalled_mail_leaves_the_shared_threads_free(silent_server: SilentServer
                                                           ) -> None:
    cfg = SmtpConfig.model_validate({"host": "127.0.0.1", "port": silent_server.port,
                                     "security": "none", "from": "ck@example.org",
                                     "timeout": "10s"})
    sends = [asyncio.ensure_future(send_message_async(cfg, mail())) for _ in range(STALLED)]
    await until(lambda: silent_server.connections >= SEND_THREADS, "the sends to connect")
    read = asyncio.ensure_future(asyncio.to_thread(lambda: "state DB read"))
    done, _ = await asyncio.wait([read, *sends], return_when=asyncio.FIRST_COMPLETED)
    assert done == {read}, "a thread-pool call waited for stalled mail sends"
    assert silent_server.connections == SEND_THREADS  # the rest wait their turn
    silent_server.hang_up()
    failed = await asyncio.gather(*sends, return_exceptions=True)
    assert silent_server.connections == STALLED
    for exc in failed:
        assert isinstance(exc, MailError) and not exc.maybe_delivered
        assert f"mail server 127.0.0.1:{silent_server.port} failed" in str(exc)
