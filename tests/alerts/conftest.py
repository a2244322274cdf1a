"""Real parts for alert tests: a mail server (aiosmtpd, with STARTTLS or implicit TLS and
AUTH, on a certificate made here; it may hold its answer to a message), a silent TCP
server, and an HTTP server (uvicorn) recording what webhooks and heartbeats receive, all
on loopback ports the OS picks."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SMTP_USER = "alerts@example.org"
SMTP_PASSWORD = "s3cret-Mail-Pa55"


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for 127.0.0.1 (clients trust it through SSL_CERT_FILE)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "candlekeep test")])
    now = dt.datetime.now(dt.UTC)
    crt = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - dt.timedelta(days=1))
           .not_valid_after(now + dt.timedelta(days=2))
           .add_extension(x509.SubjectAlternativeName(
               [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    out = Cert(folder / "cert.pem", folder / "key.pem")
    out.cert.write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return out


@dataclass
class MailServer:
    port: int
    security: str
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)
    """Per message: whether it came over TLS begun by STARTTLS."""
    hold: asyncio.Event | None = None
    """When set: each message is kept, and answered only once this event is set (a
    server that has the message but never says so in time)."""

    def smtp_config(self, **extra: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {"host": "127.0.0.1", "port": self.port,
                               "security": self.security, "from": "candlekeep@example.org",
                               "timeout": "5s"}
        if self.security != "none":
            cfg.update(username=SMTP_USER, password=SMTP_PASSWORD)
        return {**cfg, **extra}

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        self.tls.append(session.ssl is not None)
        raw = envelope.original_content or b""
        self.messages.append(message_from_bytes(raw, policy=policy.default))  # type: ignore[arg-type]
        if self.hold is not None:
            await self.hold.wait()
        return "250 OK"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                     mechanism: str, auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == SMTP_USER
              and auth_data.password.decode() == SMTP_PASSWORD)
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok)


MailFactory = Callable[..., Awaitable[MailServer]]


@pytest.fixture
async def mail_server(cert: Cert, monkeypatch: pytest.MonkeyPatch
                      ) -> AsyncIterator[MailFactory]:
    """Start a mail server: ``security`` starttls (TLS required before AUTH), ssl
    (implicit TLS) or none (plain, no AUTH)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(cert.cert))
    servers: list[asyncio.AbstractServer] = []
    holds: list[asyncio.Event] = []

    async def start(security: str, *, hold: bool = False) -> MailServer:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert.cert, cert.key)
        box = MailServer(0, security, hold=asyncio.Event() if hold else None)
        if box.hold is not None:
            holds.append(box.hold)
        tls = security != "none"

        def protocol() -> SMTP:
            with warnings.catch_warnings():  # implicit TLS is TLS, whatever aiosmtpd thinks
                warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
                return SMTP(box, hostname="mail.test", authenticator=box.authenticate,
                            auth_required=tls, auth_require_tls=security == "starttls",
                            tls_context=ctx if security == "starttls" else None,
                            require_starttls=security == "starttls")

        server = await asyncio.get_running_loop().create_server(
            protocol, "127.0.0.1", 0, ssl=ctx if security == "ssl" else None)
        servers.append(server)
        box.port = server.sockets[0].getsockname()[1]
        return box

    yield start
    for h in holds:
        h.set()
    for s in servers:
        s.close()
        await s.wait_closed()


@dataclass
class SilentServer:
    """Accepts connections and never says a word, until ``hang_up``: then it closes every
    connection, those to come at once."""

    port: int = 0
    connections: int = 0
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        gone = asyncio.ensure_future(reader.read())  # the client giving up ends it too
        told = asyncio.ensure_future(self.hung_up.wait())
        await asyncio.wait([gone, told], return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        told.cancel()
        writer.close()

    def hang_up(self) -> None:
        self.hung_up.set()


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    box = SilentServer()
    server = await asyncio.start_server(box.serve, "127.0.0.1", 0)
    box.port = server.sockets[0].getsockname()[1]
    yield box
    box.hang_up()
    server.close()
    await server.wait_closed()


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    body: bytes


@dataclass
class HttpServer:
    """Records every request; answers each path with the status set for it (200)."""

    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        self.hits.append(Hit(scope["method"], scope["path"], body))
        code = self.status.get(scope["path"], 200)
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok" if code < 300 else b"nope"})


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    app = HttpServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue from now on, before uvicorn accepts them
    app.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    yield app
    server.should_exit = True
    await task
    sock.close()
