"""The scheduler's own tables, in the state DB's metadata so StateDB creates them.

Ticks and runs are data: ``runs`` (in tables.py) is the history, these two are what makes
catch-up after downtime exact and lets several daemons share one state DB.
"""

from __future__ import annotations

import sqlalchemy as sa

from candlekeep.state.tables import metadata

scheduler_jobs = sa.Table(
    "scheduler_jobs",
    metadata,
    sa.Column("job", sa.String(200), primary_key=True),
    sa.Column("schedule", sa.String(200), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=True),
    # Every tick at or before this instant has been accounted for: claimed (a run row),
    # recorded as skipped, or coalesced into a later run. Claiming locks this row.
    sa.Column("last_tick", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=True),
)

scheduler_nodes = sa.Table(
    "scheduler_nodes",
    metadata,
    sa.Column("node", sa.String(200), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("heartbeat_at", sa.BigInteger, nullable=False),
    sa.Column("stopped_at", sa.BigInteger, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),  # running | stopped | dead
    sa.Column("lease_ms", sa.BigInteger, nullable=False),
    sa.Column("version", sa.String(40), nullable=True),
)

NODE_STATUSES = ("running", "stopped", "dead")
