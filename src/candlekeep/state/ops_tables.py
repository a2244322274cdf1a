"""Operations tables: what the API, the dashboard, alerts and reports read, in the state DB
so every node and every process reads one answer."""

from __future__ import annotations

import sqlalchemy as sa

from candlekeep.state.tables import metadata

series_state = sa.Table(
    "series_state",
    metadata,
    # The newest stored candle of a series in a store, kept by the write path after every
    # upsert and reconciled with the store by each freshness check: the API reads this
    # instead of scanning candle tables per request.
    sa.Column("store", sa.String(200), primary_key=True),
    sa.Column("source", sa.String(200), primary_key=True),
    sa.Column("symbol", sa.String(200), primary_key=True),
    sa.Column("timeframe", sa.String(10), primary_key=True),
    sa.Column("first_ms", sa.BigInteger, nullable=True),
    sa.Column("last_ms", sa.BigInteger, nullable=True),
    # Exact at the last reconciliation, plus rows written since (an upper bound).
    sa.Column("rows", sa.BigInteger, nullable=False, default=0),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("scanned_at", sa.BigInteger, nullable=True),
)

freshness = sa.Table(
    "freshness",
    metadata,
    # The last freshness verdict per subject: a series (``kind`` series, subject
    # ``source:symbol:timeframe``) or a dataset (``kind`` dataset, subject its name).
    sa.Column("kind", sa.String(20), primary_key=True),
    sa.Column("store", sa.String(200), primary_key=True),
    sa.Column("subject", sa.String(500), primary_key=True),
    sa.Column("newest_ms", sa.BigInteger, nullable=True),
    sa.Column("age_ms", sa.BigInteger, nullable=True),
    sa.Column("threshold_ms", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("checked_at", sa.BigInteger, nullable=False),
    # When the subject entered its current status: transitions are what alerts act on.
    sa.Column("status_since", sa.BigInteger, nullable=False),
)

alert_state = sa.Table(
    "alert_state",
    metadata,
    # One row per alert that has fired (``key`` names rule and subject, e.g.
    # ``freshness:main:binance:BTC/USDT:1m``): repeats are limited and a recovery is sent
    # once, across every node, by conditional updates of this row.
    sa.Column("key", sa.String(600), primary_key=True),
    sa.Column("rule", sa.String(40), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),  # firing | resolved
    sa.Column("first_at", sa.BigInteger, nullable=False),
    sa.Column("last_sent_at", sa.BigInteger, nullable=True),
    sa.Column("sent", sa.Integer, nullable=False, default=0),
    sa.Column("resolved_at", sa.BigInteger, nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
)

provider_health = sa.Table(
    "provider_health",
    metadata,
    # One row per source per ``providers_health`` check (``sources.health``): the history
    # of a provider's circuit, error and 429 rates, latency and budget, pruned by the job.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # up | degraded | down
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("circuit", sa.String(20), nullable=False),
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("error_rate", sa.Float, nullable=True),
    sa.Column("latency_p50_s", sa.Float, nullable=True),
    sa.Column("latency_p95_s", sa.Float, nullable=True),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("rate_limited_rate", sa.Float, nullable=True),
    sa.Column("budget_used", sa.BigInteger, nullable=True),
    sa.Column("budget", sa.BigInteger, nullable=True),
    sa.Column("node", sa.String(200), nullable=False),
    sa.Column("checked_at", sa.BigInteger, nullable=False),
    # The whole ProviderHealth as JSON (reasons, last error, limiter snapshot, …).
    sa.Column("detail", sa.Text, nullable=False),
    # The latest row per source: read from this index's end, never sorted whole.
    sa.Index("ix_provider_health_source_checked", "source", "checked_at"),
    sa.Index("ix_provider_health_checked", "checked_at"),
)
