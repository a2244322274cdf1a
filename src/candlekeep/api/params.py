"""Query parameters, validated before any handler runs: a value outside its pattern or
length is a 422 naming the parameter, never a query (nor a 500)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import Query

from candlekeep.core.timeframes import TIMEFRAMES
from candlekeep.state.statuses import GAP_STATUSES

NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._:/@+\-]*$"
"""Source, store, job names and symbols (``BTC/USDT:USDT``): no quotes, semicolons,
comment markers or control characters."""

GapStatus = StrEnum("GapStatus", {s.upper(): s for s in GAP_STATUSES})  # type: ignore[misc]

MAX_LIMIT = 500
MAX_OFFSET = 100_000
"""Paging reads an index from one end: the deepest page still costs a bounded read."""

Source = Annotated[str | None, Query(max_length=100, pattern=NAME,
                                     description="Only this configured source.")]
Symbol = Annotated[str | None, Query(max_length=100, pattern=NAME,
                                     description="Only this symbol (e.g. BTC/USDT).")]
Timeframe = Annotated[str | None, Query(pattern=f"^({'|'.join(TIMEFRAMES)})$",
                                        description="Only this timeframe.")]
Job = Annotated[str | None, Query(max_length=200, pattern=NAME,
                                  description="Only this job's runs.")]
Since = Annotated[str | None, Query(
    max_length=40, pattern=r"^(\d{1,15}|\d{1,6}(\.\d{1,3})?(ms|s|m|h|d|w)|"
                           r"\d{4}-\d{2}-\d{2}([T ][0-9:.]{2,15}(Z|[+-]\d{2}:\d{2})?)?)$",
    description="Runs scheduled since: a duration back from now (24h, 7d), an ISO time "
                "(2026-01-01T00:00:00Z) or epoch ms.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip.")]
