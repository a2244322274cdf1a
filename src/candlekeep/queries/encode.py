"""Views as JSON-ready values: one conversion for the CLI's ``--json`` and the API, so the
two print the same shape for the same thing."""

from __future__ import annotations

import dataclasses
from typing import Any


def plain(value: Any) -> Any:
    """Dataclasses become dicts (recursively), sequences lists; enums stay ``StrEnum``
    members, which JSON writes as their values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
