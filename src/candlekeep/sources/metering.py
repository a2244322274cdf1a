"""Which job run a request is made for: a meter in a context variable.

Kept apart from ``sources.base`` (and its pyarrow import) because every job run opens a
meter, including runs that never touch a source.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestMeter:
    """Requests made on behalf of one job run, across every task that run spawns.

    Sources are shared by concurrent jobs, so a job cannot read its cost off the source's
    totals; the meter rides in a context variable that child tasks inherit.
    """

    requests: int = 0
    weight: int = 0


_METER: ContextVar[RequestMeter | None] = ContextVar("candlekeep_request_meter", default=None)


@contextmanager
def metered() -> Iterator[RequestMeter]:
    meter = RequestMeter()
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)



def current_meter() -> RequestMeter | None:
    """The meter of the job run this task works for (None outside any run)."""
    return _METER.get()
