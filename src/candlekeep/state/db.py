"""Access to the state DB. Every process (daemon, CLI, API) may open it at any time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from candlekeep.core.series import SeriesKey
from candlekeep.state import tables as t
from candlekeep.state.migrate import ensure_schema
from candlekeep.state.rows import GapRow, RunRow

if TYPE_CHECKING:
    import pyarrow as pa

    from candlekeep.state.reader import Reader


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's default would be psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, *, pooled: bool = False, lock_timeout_s: float = 10.0,
                statement_timeout_s: float = 120.0, connect_timeout_s: float = 10.0) -> Engine:
    """An engine for the state DB.

    SQLite: WAL (readers never block the daemon's writes), a connection per transaction
    unless ``pooled``. PostgreSQL: no call waits forever: lock and statement timeouts on
    every session, a connect timeout, and TCP keepalives plus a user timeout so a dead
    server or a silent network drop is noticed within seconds, not hours.
    """
    url = normalise_url(url)
    if url.startswith("sqlite"):
        if pooled:
            engine = sa.create_engine(url, connect_args={"timeout": 30,
                                                         "check_same_thread": False},
                                      poolclass=sa.pool.QueuePool, pool_size=1,
                                      max_overflow=4)
        else:
            engine = sa.create_engine(url, connect_args={"timeout": 30},
                                      poolclass=sa.pool.NullPool)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    options = (f"-c lock_timeout={int(lock_timeout_s * 1000)} "
               f"-c statement_timeout={int(statement_timeout_s * 1000)} "
               "-c idle_in_transaction_session_timeout=300000")
    connect_args = {"connect_timeout": max(1, round(connect_timeout_s)), "options": options,
                    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                    "keepalives_count": 3,
                    "tcp_user_timeout": int(max(lock_timeout_s, statement_timeout_s) * 1000)}
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                            connect_args=connect_args)


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """INSERT with ``on_conflict_do_nothing``/``on_conflict_do_update``, which both the
    SQLite and the PostgreSQL dialects offer (Core's plain insert has neither)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql.insert(table) if dialect == "postgresql"
            else sqlite.insert(table))


@contextlib.contextmanager
def reader_on(engine: Engine) -> Iterator[Reader]:
    """The listings' reader on a connection of ``engine``'s pool: a process that has the
    state DB open (a daemon, the API) reads with the very statements the CLI runs."""
    from candlekeep.state.reader import Reader

    conn = engine.raw_connection()
    try:
        yield Reader(conn, pyformat=engine.dialect.name == "postgresql")
    finally:
        conn.close()


def _gap_row(r: Any) -> GapRow:
    return GapRow(r.id, SeriesKey(r.source, r.symbol, r.timeframe), r.gap_start, r.gap_end,
                  r.detected_at, r.repaired_at, r.status, r.attempts, r.empty_attempts,
                  r.last_error)


class StateDB:
    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(url)
        ensure_schema(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()

    # -- checkpoints ---------------------------------------------------------------------

    def get_checkpoint(self, job: str, series: SeriesKey) -> int | None:
        c = t.checkpoints.c
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(c.position).where(
                    c.job == job, c.source == series.source, c.symbol == series.symbol,
                    c.timeframe == series.timeframe,
                )
            ).scalar_one_or_none()

    def set_checkpoint(self, job: str, series: SeriesKey, position: int, now_ms: int) -> None:
        c = t.checkpoints.c
        key = {"job": job, "source": series.source, "symbol": series.symbol,
               "timeframe": series.timeframe}
        with self.engine.begin() as conn:
            updated = conn.execute(
                t.checkpoints.update()
                .where(c.job == job, c.source == series.source, c.symbol == series.symbol,
                       c.timeframe == series.timeframe)
                .values(position=position, updated_at=now_ms)
            ).rowcount
            if not updated:
                conn.execute(t.checkpoints.insert().values(
                    **key, position=position, updated_at=now_ms))

    def clear_checkpoints(self, job: str, series: Iterable[SeriesKey] | None = None) -> None:
        c = t.checkpoints.c
        with self.engine.begin() as conn:
            if series is None:
                conn.execute(t.checkpoints.delete().where(c.job == job))
                return
            for s in series:
                conn.execute(t.checkpoints.delete().where(
                    c.job == job, c.source == s.source, c.symbol == s.symbol,
                    c.timeframe == s.timeframe))

    # -- gaps ----------------------------------------------------------------------------

    def record_gap_scan(
        self, scanned: Sequence[SeriesKey], found: pa.Table, now_ms: int
    ) -> dict[str, int]:
        """Reconcile the gaps table with a fresh scan of the ``scanned`` series.

        New ranges are inserted ``open``; known ones keep their status and history (a
        ``confirmed_empty`` gap stays so); an ``open`` or ``failed`` gap no longer found was
        filled by someone (ingest, another repair) and becomes ``repaired``.
        """
        found_rows = found.select(
            ["source", "symbol", "timeframe", "gap_start", "gap_end"]
        ).to_pylist() if found.num_rows else []
        found_keys = {}
        for r in found_rows:
            key = (r["source"], r["symbol"], r["timeframe"], _ms(r["gap_start"]))
            found_keys[key] = _ms(r["gap_end"])
        c = t.gaps.c
        counts = {"new": 0, "known": 0, "closed": 0, "resized": 0}
        scanned_set = set(scanned)
        with self.engine.begin() as conn:
            # Live gaps, plus repaired ones at exactly the starts found again (they reopen):
            # the repaired history grows forever and is not read wholesale.
            existing = list(conn.execute(sa.select(t.gaps).where(c.status != "repaired")))
            starts = sorted({k[3] for k in found_keys})
            for i in range(0, len(starts), 500):
                existing += conn.execute(sa.select(t.gaps).where(
                    c.status == "repaired", c.gap_start.in_(starts[i:i + 500])))
            known: dict[tuple[str, str, str, int], Any] = {}
            to_close: list[int] = []
            for r in existing:
                if SeriesKey(r.source, r.symbol, r.timeframe) not in scanned_set:
                    continue
                k = (r.source, r.symbol, r.timeframe, r.gap_start)
                known[k] = r
                if k not in found_keys and r.status in ("open", "failed"):
                    to_close.append(r.id)
            if to_close:
                conn.execute(t.gaps.update().where(c.id.in_(to_close)).values(
                    status="repaired", repaired_at=now_ms))
                counts["closed"] = len(to_close)
            inserts = []
            for k, gap_end in found_keys.items():
                row = known.get(k)
                if row is None:
                    inserts.append({"source": k[0], "symbol": k[1], "timeframe": k[2],
                                    "gap_start": k[3], "gap_end": gap_end,
                                    "detected_at": now_ms, "status": "open", "attempts": 0,
                                    "empty_attempts": 0})
                    continue
                counts["known"] += 1
                if row.gap_end != gap_end or row.status == "repaired":
                    # The hole shrank or reopened: what is missing now is what counts.
                    counts["resized"] += 1
                    values: dict[str, Any] = {"gap_end": gap_end}
                    if row.status == "repaired":
                        values.update(status="open", repaired_at=None, empty_attempts=0)
                    if row.status == "confirmed_empty" and gap_end > row.gap_end:
                        values.update(status="open", empty_attempts=0)
                    conn.execute(t.gaps.update().where(c.id == row.id).values(**values))
            if inserts:
                conn.execute(t.gaps.insert(), inserts)
                counts["new"] = len(inserts)
        return counts

    def list_gaps(
        self,
        status: str | Sequence[str] | None = None,
        series: SeriesKey | None = None,
        limit: int | None = None,
    ) -> list[GapRow]:
        c = t.gaps.c
        q = sa.select(t.gaps).order_by(c.source, c.symbol, c.timeframe, c.gap_start)
        if isinstance(status, str):
            q = q.where(c.status == status)
        elif status is not None:
            q = q.where(c.status.in_(list(status)))
        if series is not None:
            q = q.where(c.source == series.source, c.symbol == series.symbol,
                        c.timeframe == series.timeframe)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [_gap_row(r) for r in conn.execute(q)]

    def update_gap(self, gap_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(t.gaps.update().where(t.gaps.c.id == gap_id).values(**values))

    def update_gaps(self, updates: Sequence[tuple[int, dict[str, Any]]]) -> None:
        """Several gaps' new values in one transaction."""
        if not updates:
            return
        with self.engine.begin() as conn:
            for gap_id, values in updates:
                conn.execute(t.gaps.update().where(t.gaps.c.id == gap_id).values(**values))

    def gap_counts(self) -> dict[str, int]:
        c = t.gaps.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c.status, sa.func.count()).group_by(c.status))
            return {r[0]: r[1] for r in rows}

    # -- runs ----------------------------------------------------------------------------

    def reader(self) -> contextlib.AbstractContextManager[Reader]:
        """The listings' reader on a connection of this engine's pool."""
        return reader_on(self.engine)

    def list_runs(
        self, job: str | None = None, since_ms: int | None = None,
        status: str | None = None, limit: int | None = 200,
    ) -> list[RunRow]:
        """Run history, newest first (the same query ``candlekeep history`` runs)."""
        with self.reader() as reader:
            return reader.runs(job, since_ms, status, limit)


def _ms(value: Any) -> int:
    """Epoch ms from an Arrow-derived datetime or int."""
    if isinstance(value, int):
        return value
    return int(value.timestamp() * 1000)
