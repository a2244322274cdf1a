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
    # The process (one daemon, one CLI command) that owns the row; NULL for a retry
    # nobody owns yet. Only the owner finishes a run, and only while it is live.
    sa.Column("instance", sa.String(120), nullable=True),
    # The owner's lease, in the state DB's clock: the run is alive until then.
    sa.Column("lease_until", sa.BigInteger, nullable=True),
    # A waiting retry starts no earlier than this.
    sa.Column("not_before", sa.BigInteger, nullable=True),
    # The process group a command run started (jobs.procgroup identity), for clean-up.
    sa.Column("process", sa.String(200), nullable=True),
    # A tick runs once, whichever node claims it: claiming is inserting attempt 1.
    sa.UniqueConstraint("job", "scheduled_for", "attempt", name="uq_runs_tick_attempt"),
    sa.Index("ix_runs_job_started", "job", "started_at"),
    sa.Index("ix_runs_status", "status"),
    sa.Index("ix_runs_scheduled", "scheduled_for"),
    sa.Index("ix_runs_finished", "finished_at"),
    # Pages of history come newest first, (scheduled_for, attempt) descending: read from
    # an index's end, with or without a status, never sorted whole.
    sa.Index("ix_runs_scheduled_attempt", "scheduled_for", "attempt"),
    sa.Index("ix_runs_status_scheduled", "status", "scheduled_for", "attempt"),
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
    # Repaired gaps grow forever: "repaired in the last 24 h" reads only its time range.
    sa.Index("ix_gaps_status_repaired", "status", "repaired_at"),
    # A page of gaps in one status, in series order, and the oldest open gap: read in
    # order from these, never sorted whole.
    sa.Index("ix_gaps_status_series", "status", "source", "symbol", "timeframe", "gap_start"),
    sa.Index("ix_gaps_status_detected", "status", "detected_at"),
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

buffer_acks = sa.Table(
    "buffer_acks",
    metadata,
    # A buffer file that target has durably stored: a flush never writes it there again,
    # and deletes the file once every target of the buffer has a row here.
    sa.Column("buffer", sa.String(200), nullable=False),
    sa.Column("file", sa.String(200), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("acked_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("buffer", "file", "target", name="uq_buffer_acks_file_target"),
)

schema_version = sa.Table(
    "candlekeep_schema",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
)


from candlekeep.state import ops_tables as _ops_tables  # noqa: E402,F401
from candlekeep.state import scheduler_tables as _scheduler_tables  # noqa: E402,F401
