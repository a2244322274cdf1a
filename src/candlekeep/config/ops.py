"""The operations part of the configuration: the HTTP API, freshness rules, the mail server,
alerts and reports. Structure only; cross-references are checked by the loader."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from candlekeep.core.timeutil import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written as ``30s``, ``10m``, ``4h``."""

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- the HTTP API -----------------------------------------------------------------------


class ApiConfig(_Model):
    """``api:``: the daemon serves the API too; ``candlekeep serve`` reads it as defaults."""

    listen: str = "127.0.0.1:8765"
    token: SecretStr | None = None
    """Bearer token every route but ``/health`` and ``/metrics`` requires, when set."""
    insecure: bool = False
    """Allow a non-loopback address without a token (e.g. behind an authenticating proxy)."""

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"listen must be HOST:PORT (e.g. 127.0.0.1:8765), not {v!r}")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


# -- freshness --------------------------------------------------------------------------


def _quiet_window(v: str) -> str:
    if not _HHMM.match(v):
        raise ValueError(f"quiet hours are HH:MM-HH:MM in UTC (e.g. 22:00-06:00), not {v!r}")
    return v


QuietWindow = Annotated[str, BeforeValidator(lambda v: _quiet_window(str(v)))]


class SeriesFreshness(_Model):
    """A threshold for the series it matches (unset fields match any value)."""

    source: str | None = None
    symbol: str | None = None
    timeframe: str | None = None
    max_age: Duration | None = None
    """How long after the newest stored candle closed the series turns STALE."""
    candles: int | None = Field(default=None, ge=1)
    grace: Duration | None = None
    quiet_hours: list[QuietWindow] = Field(default_factory=list)


class DatasetFreshness(_Model):
    """A dataset watched for freshness: the newest value of its time column."""

    store: str
    dataset: str
    max_age: Duration
    quiet_hours: list[QuietWindow] = Field(default_factory=list)
    """UTC windows in which staleness is expected (datasets that change only when
    someone trades): a STALE verdict then reads OK, with a note."""


class FreshnessConfig(_Model):
    """``freshness:``: when data counts as stale. A series is STALE once its newest candle
    closed more than ``candles`` timeframes plus ``grace`` ago, unless a rule says else."""

    candles: int = Field(default=3, ge=1)
    grace: Duration = 300.0
    series: list[SeriesFreshness] = Field(default_factory=list)
    datasets: list[DatasetFreshness] = Field(default_factory=list)


# -- mail ----------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address; a host name may resolve to anything."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SmtpConfig(_Model):
    """``smtp:``: the mail server alerts and reports send through."""

    host: str
    port: int | None = Field(default=None, gt=0, lt=65536)
    """Default: 465 with ``security: ssl``, 587 with ``starttls``, 25 with ``none``."""
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(alias="from")
    timeout: Duration = 30.0

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("password")
    @classmethod
    def _not_in_clear(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # host and security come first, so they are validated (or missing) already
        host, security = info.data.get("host"), info.data.get("security")
        if v is not None and v.get_secret_value() and security == "none" and \
                isinstance(host, str) and not is_loopback(host):
            raise ValueError(f"security: none to {host} would send the password in clear "
                             "text; use starttls or ssl (security: starttls)")
        return v

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"ssl": 465, "starttls": 587, "none": 25}[self.security]


# -- alerts ----------------------------------------------------------------------------------


def _web_address(v: SecretStr) -> SecretStr:
    """An http:// or https:// URL with a host; the error never quotes it (it holds the
    channel's secret)."""
    try:
        parts = urlsplit(v.get_secret_value())
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError("url must be a full http:// or https:// address; write the one the "
                         "service gave you (e.g. https://hooks.slack.com/services/…)")
    return v


WebUrl = Annotated[SecretStr, AfterValidator(_web_address)]


class EmailChannel(_Model):
    type: Literal["email"]
    to: list[str] = Field(min_length=1)


class WebhookChannel(_Model):
    type: Literal["webhook"]
    url: WebUrl
    format: Literal["slack", "json"] = "slack"
    """``slack``: ``{"text": …}`` as Slack, Mattermost and Discord's /slack accept;
    ``json``: the whole alert as an object."""
    timeout: Duration = 10.0


class HeartbeatChannel(_Model):
    """A dead-man switch (healthchecks.io and alike): the URL is pinged after each
    successful run of ``jobs``, and ``<url>/fail`` after a failed one."""

    type: Literal["heartbeat"]
    url: WebUrl
    jobs: list[str] = Field(min_length=1)
    timeout: Duration = 10.0


ChannelConfig = Annotated[EmailChannel | WebhookChannel | HeartbeatChannel,
                          Field(discriminator="type")]


class AlertRule(_Model):
    """When to alert, and whom. ``jobs`` limits job rules to those jobs (default: all)."""

    on: Literal["job_failed", "consecutive_failures", "freshness", "gap_failed",
                "provider_degraded", "premove"]
    channels: list[str] = Field(min_length=1)
    jobs: list[str] | None = None
    count: int = Field(default=3, ge=2)
    """``consecutive_failures``: how many failed runs in a row."""
    repeat_every: Duration | None = None
    """At most one message per alert in this long (default: ``alerts.repeat_every``)."""


class AlertsConfig(_Model):
    repeat_every: Duration = 3600.0
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    rules: list[AlertRule] = Field(default_factory=list)


# -- reports --------------------------------------------------------------------------------


class ReportConfig(_Model):
    """One e-mail report (``reports.<name>``), sent by a ``report`` job or by hand."""

    to: list[str] = Field(min_length=1)
    subject: str = "candlekeep report"
    window: Duration = 86400.0
    sections: list[str] = Field(
        default_factory=lambda: ["freshness", "runs", "gaps", "coverage", "errors"])
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Settings per section, by section name (``params: {hyperliquid_targets: {table: …}}``);
    each section checks its own (``Section.params``) when the report is resolved."""
