"""The configuration schema. Structure only: cross-references are checked by the loader."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from candlekeep.config.ops import (
    AlertsConfig,
    ApiConfig,
    FreshnessConfig,
    ReportConfig,
    SmtpConfig,
)
from candlekeep.config.scans import RegimeConfig, ScansConfig, UniverseConfig
from candlekeep.config.source_types import (
    SOURCE_TYPES,
    CcxtSourceConfig,
    HyperliquidSourceConfig,
    SimSourceConfig,
)
from candlekeep.config.store_types import (
    STORE_TYPES,
    BufferStoreConfig,
    ClickHouseStoreConfig,
    DuckDBStoreConfig,
    PostgresStoreConfig,
)
from candlekeep.core.timeframes import TIMEFRAMES
from candlekeep.core.timeutil import parse_duration, to_ms

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written as ``30s``, ``10m``, ``4h``."""


def _to_ms_or_none(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, int | str | date | datetime):
        return to_ms(value)
    return value


EpochMs = Annotated[int, BeforeValidator(_to_ms_or_none)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


if TYPE_CHECKING:
    StoreConfig = (DuckDBStoreConfig | PostgresStoreConfig | ClickHouseStoreConfig
                   | BufferStoreConfig)
    SourceConfig = CcxtSourceConfig | SimSourceConfig | HyperliquidSourceConfig
else:  # built from the type table, so a new store type is one row there
    StoreConfig = Annotated[
        Union[tuple(t.config for t in STORE_TYPES.values())],  # noqa: UP007
        Field(discriminator="type"),
    ]
    SourceConfig = Annotated[
        Union[tuple(t.config for t in SOURCE_TYPES.values())],  # noqa: UP007
        Field(discriminator="type"),
    ]


class AccountConfig(_Model):
    """An exchange account (a Hyperliquid wallet) whose state and history are kept.

    Wallet addresses are public, not secrets; API keys, where a source needs them, are."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    address: str
    source: str

    @field_validator("address")
    @classmethod
    def _hex_address(cls, v: str) -> str:
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", v):
            raise ValueError(f"{v!r} is not an address: use 0x followed by 40 hex digits")
        return v.lower()


class SeriesConfig(_Model):
    source: str
    symbols: list[str] = Field(min_length=1)
    timeframes: list[str] = Field(min_length=1)
    start: EpochMs | None = None
    end: EpochMs | None = None
    store: str | None = None
    fallback: list[str] = Field(default_factory=list)
    """Sources to fetch a range from when ``source`` fails it (its circuit open, or
    retries exhausted), healthiest first; their rows keep their own source name."""

    @field_validator("timeframes")
    @classmethod
    def _known_timeframes(cls, v: list[str]) -> list[str]:
        bad = [tf for tf in v if tf not in TIMEFRAMES]
        if bad:
            raise ValueError(
                f"unsupported timeframe {bad[0]!r}; valid: {', '.join(TIMEFRAMES)}")
        return v


class RetriesConfig(_Model):
    attempts: int = Field(default=1, ge=1, le=100)
    backoff: Duration = 30.0
    max_backoff: Duration = 600.0


class RetentionConfig(_Model):
    """How long the daemon keeps history; ``null`` keeps that kind forever."""

    runs: Duration | None = 90 * 86400.0
    skipped: Duration | None = 14 * 86400.0
    nodes: Duration | None = 7 * 86400.0


class SloConfig(_Model):
    """The share of a job's runs that must succeed within a rolling window."""

    target: float = Field(default=0.95, gt=0, le=1)
    window: Duration = 30 * 86400.0


class JobConfig(_Model):
    name: str = Field(min_length=1)
    type: str
    schedule: str | None = None
    description: str = ""
    enabled: bool = True
    timezone: str | None = None
    misfire: Literal["catch_up", "coalesce", "skip"] = "coalesce"
    misfire_grace: Duration | None = None
    max_concurrent: int = Field(default=1, ge=1)
    timeout: Duration | None = None
    retries: RetriesConfig = RetriesConfig()
    slo: SloConfig | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class Config(_Model):
    """A whole candlekeep.yaml, with paths already resolved against its folder."""

    config_path: Path | None = None
    data_dir: Path = Path("data")
    state: str | None = None
    timezone: str = "UTC"
    node: str | None = None
    max_concurrent_runs: int | None = Field(default=None, ge=1)
    retention: RetentionConfig = RetentionConfig()
    stores: dict[str, StoreConfig] = Field(default_factory=dict)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    series: list[SeriesConfig] = Field(default_factory=list)
    accounts: list[AccountConfig] = Field(default_factory=list)
    jobs: list[JobConfig] = Field(default_factory=list)
    api: ApiConfig | None = None
    freshness: FreshnessConfig = FreshnessConfig()
    smtp: SmtpConfig | None = None
    alerts: AlertsConfig = AlertsConfig()
    reports: dict[str, ReportConfig] = Field(default_factory=dict)
    universes: dict[str, UniverseConfig] = Field(default_factory=dict)
    regime: RegimeConfig = RegimeConfig()
    scans: ScansConfig = ScansConfig()

    @property
    def file(self) -> str:
        """The config file as error messages name it."""
        return str(self.config_path or "candlekeep.yaml")

    @property
    def state_url(self) -> str:
        return self.state or f"sqlite:///{self.data_dir / 'state.db'}"

    @property
    def default_store(self) -> str | None:
        return next(iter(self.stores), None)

    def store_for(self, series: SeriesConfig) -> str:
        name = series.store or self.default_store
        assert name is not None, "validated: a series always has a store"
        return name

    def account(self, name: str) -> AccountConfig | None:
        return next((a for a in self.accounts if a.name == name), None)

    def job(self, name: str) -> JobConfig | None:
        return next((j for j in self.jobs if j.name == name), None)
