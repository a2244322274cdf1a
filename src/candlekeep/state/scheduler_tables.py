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
    # What the job is, as the node that last registered it configured it (JSON without
    # params), and a digest of that plus the params: nodes whose own digest differs do
    # not claim the job.
    sa.Column("spec", sa.Text, nullable=True),
    sa.Column("spec_hash", sa.String(64), nullable=True),
    sa.Column("spec_by", sa.String(200), nullable=True),
    sa.Column("spec_at", sa.BigInteger, nullable=True),
)

scheduler_schedules = sa.Table(
    "scheduler_schedules",
    metadata,
    # One row per schedule a job has had, from ``since``: SLOs count each period's ticks
    # with the schedule of the time, from the job's first appearance.
    sa.Column("job", sa.String(200), primary_key=True),
    sa.Column("since", sa.BigInteger, primary_key=True),
    sa.Column("schedule", sa.String(200), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
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
    sa.Column("instance", sa.String(120), nullable=True),
    sa.Column("lease_until", sa.BigInteger, nullable=True),
    # Measured at each heartbeat: the state DB's clock minus this node's.
    sa.Column("skew_ms", sa.BigInteger, nullable=True),
    # JSON list of jobs this node does not claim because its config differs.
    sa.Column("conflicts", sa.Text, nullable=True),
)

NODE_STATUSES = ("running", "stopped", "dead")
