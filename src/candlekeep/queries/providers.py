"""Providers' health as last recorded (``provider_health``): ``candlekeep providers``,
``GET /providers``, ``health.json``, the ``list`` banner, ``/system/health`` and the
``provider_degraded`` alert all read it here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from candlekeep.core.timeutil import iso_ms
from candlekeep.sources.circuit import CircuitState
from candlekeep.sources.health import ProviderHealth, ProviderStatus

if TYPE_CHECKING:
    from candlekeep.state.reader import Reader

_LATEST = (
    "SELECT p.node, p.detail FROM provider_health p WHERE p.id IN ("
    "SELECT (SELECT x.id FROM provider_health x WHERE x.source = s.source "
    "ORDER BY x.checked_at DESC, x.id DESC LIMIT 1) "
    "FROM (SELECT DISTINCT source FROM provider_health) s) ORDER BY p.source")
"""The newest row of each source, from the (source, checked_at) index's end."""


@dataclass(frozen=True, slots=True)
class ProviderView(ProviderHealth):
    """A provider's latest recorded health, with the node that checked it."""

    node: str
    checked_utc: str | None

    @property
    def unwell(self) -> bool:
        return self.status is not ProviderStatus.UP


def _view(node: str, detail: str) -> ProviderView:
    d: dict[str, Any] = json.loads(detail)
    d["status"] = ProviderStatus(d["status"])
    d["circuit"] = CircuitState(d["circuit"])
    return ProviderView(**d, node=node, checked_utc=iso_ms(d["checked_at"]))


def providers(reader: Reader) -> list[ProviderView]:
    """Every source's latest check, by source name."""
    return [_view(node, detail) for node, detail in reader.rows(_LATEST)]


def unwell(reader: Reader) -> list[ProviderView]:
    """The providers whose latest check found them degraded or down."""
    return [v for v in providers(reader) if v.unwell]
