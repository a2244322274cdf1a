"""Reaching ClickHouse: the store URL, opening clients (one per concurrent caller, from
stores.pool), and driver errors turned into StoreErrors that name the config key and the fix,
never the password.

A clickhouse-connect client must not run two queries at once: over HTTP it refuses concurrent
queries in one session, and a chdb client serialises its calls on one engine handle. Jobs call
a store from several worker threads, so each call borrows a client of its own from the pool
(opened on demand, up to ``size``), as clickhouse-connect advises (its issue #295: "use a
separate client instance per thread"). HTTP clients are opened without a session id: nothing
here relies on session state, and a session-less client never meets SESSION_IS_LOCKED.

Clients carry no settings of their own: a user in readonly mode may not change any, and
queries that want one say so in their SQL (a SETTINGS clause costs nothing on either
transport, where a per-call setting under chdb costs a SET and a restore).

chdb (the embedded engine) runs one engine path per process, and a path opens in one process
at a time; every client on that path shares the engine, and when the last client closes the
engine shuts down, after which another path may open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import (
    ClickHouseError,
    DatabaseError,
    OperationalError,
)

from candlekeep.core.errors import StoreError
from candlekeep.core.text import redact_url

_DATABASE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OTHER_ENGINE = re.compile(r"already initialized with path '([^']*)'")
_SOCKET_REASON = re.compile(r"\[Errno -?\d+\] [^'\")]+|Failed to resolve '[^']*'")

# ClickHouse error codes the store reacts to
UNKNOWN_TABLE = 60
UNKNOWN_DATABASE = 81
ILLEGAL_FINAL = 181
SYNTAX_ERROR = 62
READONLY = 164
ACCESS_DENIED = 497
_AUTH_CODES = {192, 194, 516}  # UNKNOWN_USER, REQUIRED_PASSWORD, AUTHENTICATION_FAILED


@dataclass(frozen=True, slots=True)
class Target:
    """Where one store's data lives. ``chdb_path`` is set for the embedded engine (``None``
    for a server; ``":memory:"`` for an in-memory engine)."""

    store: str
    url: str
    database: str
    chdb_path: str | None

    def __repr__(self) -> str:  # the pool holds our bound ``open``: its repr shows this one
        return (f"Target(store={self.store!r}, url={self.redacted!r}, "
                f"database={self.database!r}, chdb_path={self.chdb_path!r})")

    @property
    def key(self) -> str:
        return f"stores.{self.store}.url"

    @property
    def redacted(self) -> str:
        return redact_url(self.url)

    @property
    def password(self) -> str:
        return "" if self.chdb_path else unquote(urlsplit(self.url).password or "")

    def scrub(self, text: str) -> str:
        """``text`` with the password (plain and URL-encoded) masked."""
        pw = self.password
        for secret in {pw, quote(pw, safe="")} if pw else ():
            text = text.replace(secret, "***")
        return text

    def open(self) -> Client:
        """A new client, or StoreError saying why there is none (and never the password)."""
        try:
            if self.chdb_path is not None:
                path = None if self.chdb_path == ":memory:" else self.chdb_path
                return clickhouse_connect.get_client(interface="chdb", path=path)
            parts = urlsplit(self.url)
            scheme = "https" if parts.scheme == "https" else "http"
            dsn = urlunsplit((scheme, parts.netloc, "", parts.query, ""))
            return clickhouse_connect.get_client(
                dsn=dsn, interface="https" if scheme == "https" else None,
                autogenerate_session_id=False)
        except ClickHouseError as exc:
            raise self.open_error(exc) from None
        except ImportError as exc:  # chdb is part of the extra, but may be missing
            raise StoreError(f"store {self.store} ({self.key}): {exc} (pip install "
                             "'candlekeep[clickhouse]')") from None

    def open_error(self, exc: ClickHouseError) -> StoreError:
        text = self.scrub(str(exc))
        if self.chdb_path is not None:
            other = _OTHER_ENGINE.search(text)
            if other:
                return StoreError(
                    f"store {self.store}: cannot open the embedded ClickHouse engine (chdb) at "
                    f"{self.chdb_path}: this process already runs it on {other.group(1)}, and "
                    f"chdb allows one engine path per process. Point every chdb store of one "
                    f"process at the same path ({self.key}; give each its own 'database:'), "
                    f"or use a ClickHouse server")
            if "Error initializing EmbeddedServer" in text:
                return StoreError(
                    f"store {self.store}: cannot open the embedded ClickHouse engine (chdb) at "
                    f"{self.chdb_path} ({self.key}): most likely another process has it open "
                    f"(one process at a time may use a chdb path); stop it, or use a ClickHouse "
                    f"server for data that several processes share ({text})")
            return StoreError(f"store {self.store}: cannot open the embedded ClickHouse engine "
                              f"(chdb) at {self.chdb_path} ({self.key}): {text}")
        code = getattr(exc, "code", None)
        if code in _AUTH_CODES:
            return self.auth_error(text)
        if isinstance(exc, DatabaseError) and code is not None:
            return self.error(exc)
        parts = urlsplit(self.url)
        reason = _SOCKET_REASON.search(text)
        return StoreError(
            f"store {self.store}: cannot reach ClickHouse at {parts.hostname}:"
            f"{parts.port or ('8443' if parts.scheme == 'https' else '8123')} ({self.key} = "
            f"{self.redacted}): {reason.group(0) if reason else text}. Check the host name and "
            "port, that the server runs and this machine may connect to it, and use https:// "
            "for a TLS port (8443; ClickHouse Cloud)")

    def auth_error(self, text: str) -> StoreError:
        user = urlsplit(self.url).username or "default"
        return StoreError(f"store {self.store}: ClickHouse rejected user {unquote(user)!r} "
                          f"({self.key} = {self.redacted}): check the user name and password "
                          f"in the URL ({text})")

    def error(self, exc: ClickHouseError, doing: str = "") -> StoreError:
        """A driver error met while working, with a fix where the code says which."""
        text = self.scrub(str(exc))
        code = getattr(exc, "code", None)
        if code in _AUTH_CODES:
            return self.auth_error(text)
        if code is None and self.chdb_path is None and isinstance(exc, OperationalError):
            return self.open_error(exc)  # a transport failure: the server went away
        where = f"store {self.store} ({self.redacted}, database {self.database})"
        what = f" {doing}" if doing else ""
        if code == ACCESS_DENIED:
            user = urlsplit(self.url).username or "default"
            return StoreError(f"{where}:{what} user {unquote(user)!r} lacks a privilege: {text}. "
                              "Ask an administrator to GRANT it to that user")
        return StoreError(f"{where}:{what} {text}")




def parse_url(store: str, url: str, database: str | None) -> Target:
    """The store's target from its URL (``database:`` overrides the URL's path); StoreError
    naming ``stores.<name>.url`` for a URL that cannot work."""
    key = f"stores.{store}.url"
    usage = "use http(s)://user:password@host:8123/database or chdb:///path"
    encode = "percent-encode / ? # @ in the user name and password: %2F %3F %23 %40"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise StoreError(f"store {store}: {key} = {redact_url(url)} has an invalid host or port; "
                         f"{usage} ({encode})") from None
    if parts.scheme == "chdb":
        location = unquote(parts.netloc + parts.path)
        if not location:
            raise StoreError(f"store {store}: {key} = {url} names no engine path; use "
                             "chdb:///absolute/path (or chdb://memory for a throwaway engine)")
        path = ":memory:" if location in ("memory", ":memory:") else location
        return Target(store, url, database or "default", path)
    if "@" in url.partition("://")[2] and "@" not in parts.netloc:  # "bob:12/x@host"
        raise StoreError(f"store {store}: {key} = {redact_url(url)}: the host ends at the first "
                         f"/ ? or #, so a password holding one cuts it short; {encode}")
    if parts.scheme not in ("http", "https", "clickhouse") or not parts.hostname:
        raise StoreError(f"store {store}: {key} = {redact_url(url)}: {usage}")
    in_url = unquote(parts.path.strip("/").split("/")[0]) or None
    name = database or in_url or "default"
    if not _DATABASE.match(name):
        raise StoreError(f"store {store}: database {name!r} (from {key}): use letters, digits "
                         "and _ (or set 'database:')")
    return Target(store, url, name, None)
