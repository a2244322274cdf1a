"""Providers' health as last recorded (``provider_health``): ``candlekeep providers``,
``GET /providers``, ``health.json``, the ``list`` banner, ``/system/health`` and the
``provider_degraded`` alert all read it here."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
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


STALE_AFTER_MS = 3_600_000
"""A verdict older than this is stale: the checks stopped (no daemon, the job removed), so
it says what a provider was, not what it is."""


@dataclass(frozen=True, slots=True)
class ProviderView(ProviderHealth):
    """A provider's latest recorded health, with the node that checked it."""

    node: str
    checked_utc: str | None
    stale: bool
    """Checked more than ``STALE_AFTER_MS`` ago."""

    @property
    def unwell(self) -> bool:
        return self.status is not ProviderStatus.UP


_FIELDS = tuple(f.name for f in fields(ProviderHealth))


def view_of(d: dict[str, Any], node: str, now_ms: int) -> ProviderView:
    """A view of a recorded (or just found) ``ProviderHealth`` as JSON. Built from the
    dataclass's own fields, so a row another build wrote (a field since dropped, one added
    since) still reads: unknown keys are dropped, missing ones are None. Kept rows live for
    ``keep`` (a week), and one unreadable row would break every reader of this model."""
    kept: dict[str, Any] = {name: d.get(name) for name in _FIELDS}
    kept["status"] = ProviderStatus(kept["status"])
    kept["circuit"] = CircuitState(kept["circuit"])
    return ProviderView(**kept, node=node, checked_utc=iso_ms(kept["checked_at"]),
                        stale=now_ms - kept["checked_at"] > STALE_AFTER_MS)


def providers(reader: Reader, now_ms: int | None = None) -> list[ProviderView]:
    """Every source's latest check, by source name; staleness judged at ``now_ms`` (the
    wall clock when not given)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return [view_of(json.loads(detail), node, now) for node, detail in reader.rows(_LATEST)]


def unwell(reader: Reader) -> list[ProviderView]:
    """The providers whose latest check found them degraded or down (stale or not: an
    outage nobody re-checked is not a recovery)."""
    return [v for v in providers(reader) if v.unwell]
