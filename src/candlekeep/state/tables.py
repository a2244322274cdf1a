"""Table definitions of the state DB (SQLAlchemy Core). Times are epoch milliseconds UTC."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(200), nullable=False),
    sa.Column("scheduled_for", sa.BigInteger, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, default=1),
    sa.Column("node", sa.String(200), nullable=False),
    sa.Column("trigger", sa.String(20), nullable=False, default="schedule"),
    sa.Column("started_at", sa.BigInteger, nullable=True),
    sa.Column("finished_at", sa.BigInteger, nullable=True),
    sa.Column("heartbeat_at", sa.BigInteger, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("rows_written", sa.BigInteger, nullable=False, default=0),
    sa.Column("requests", sa.BigInteger, nullable=False, default=0),
    sa.Column("error", sa.Text, nullable=True),
    # A tick runs once, whichever node claims it: claiming is inserting attempt 1.
    sa.UniqueConstraint("job", "scheduled_for", "attempt", name="uq_runs_tick_attempt"),
    sa.Index("ix_runs_job_started", "job", "started_at"),
    sa.Index("ix_runs_status", "status"),
)

gaps = sa.Table(
    "gaps",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("symbol", sa.String(200), nullable=False),
    sa.Column("timeframe", sa.String(10), nullable=False),
    sa.Column("gap_start", sa.BigInteger, nullable=False),
    sa.Column("gap_end", sa.BigInteger, nullable=False),
    sa.Column("detected_at", sa.BigInteger, nullable=False),
    sa.Column("repaired_at", sa.BigInteger, nullable=True),
    sa.Column("status", sa.String(20), nullable=False, default="open"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("empty_attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.UniqueConstraint("source", "symbol", "timeframe", "gap_start", name="uq_gaps_series_start"),
    sa.Index("ix_gaps_status", "status"),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("job", sa.String(200), primary_key=True),
    sa.Column("source", sa.String(200), primary_key=True),
    sa.Column("symbol", sa.String(200), primary_key=True),
    sa.Column("timeframe", sa.String(10), primary_key=True),
    # Open time just past the last durable candle: where the next fetch starts.
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

GAP_STATUSES = ("open", "repaired", "confirmed_empty", "failed")
# ``waiting``: a retry sitting out its backoff; it holds the job's slot so nothing overlaps it.
RUN_STATUSES = ("running", "waiting", "success", "failed", "skipped", "timed_out", "cancelled",
                "abandoned")

from candlekeep.state import scheduler_tables as _scheduler_tables  # noqa: E402,F401
