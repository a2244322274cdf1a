"""Writing ``provider_health``: one row per source per ``providers_health`` check, and
pruning the old ones. Reads go through the read model (``queries.providers``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from candlekeep.queries.encode import plain
from candlekeep.sources.health import ProviderHealth
from candlekeep.state import ops_tables as o


def record(engine: Engine, found: Sequence[ProviderHealth], node: str,
           forget_before_ms: int) -> int:
    """Insert one row per provider checked and delete rows checked before
    ``forget_before_ms``; returns how many were deleted."""
    table = o.provider_health
    with engine.begin() as conn:
        if found:
            conn.execute(table.insert(), [
                {"source": h.source, "type": h.type, "status": h.status.value,
                 "score": h.score, "circuit": h.circuit.value, "calls": h.calls,
                 "error_rate": h.error_rate, "latency_p50_s": h.latency_p50_s,
                 "latency_p95_s": h.latency_p95_s, "requests": h.requests,
                 "rate_limited_rate": h.rate_limited_rate, "budget_used": h.budget_used,
                 "budget": h.budget, "node": node, "checked_at": h.checked_at,
                 "detail": json.dumps(plain(h), separators=(",", ":"))}
                for h in found])
        gone = conn.execute(table.delete().where(table.c.checked_at < forget_before_ms))
    return int(gone.rowcount or 0)
