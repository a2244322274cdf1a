"""Views as JSON-ready values: one conversion for the CLI's ``--json`` and the API, so the
two print the same shape for the same thing."""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any


@cache
def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def plain(value: Any) -> Any:
    """Dataclasses become dicts (recursively), sequences lists; enums stay ``StrEnum``
    members, which JSON writes as their values. (``dataclasses.asdict`` deep-copies every
    value, which costs more than the whole query behind a route.)"""
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: plain(getattr(value, name)) for name in _fields(type(value))}
    return value
