"""Making a source from its config through the type table (config.source_types)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from candlekeep.config.source_types import SOURCE_TYPES
from candlekeep.core.errors import SourceError
from candlekeep.sources.circuit import CircuitBreaker, circuit_config

if TYPE_CHECKING:
    from candlekeep.core.clock import Clock
    from candlekeep.sources.base import Source


def make_source(name: str, cfg: Any, clock: Clock) -> Source:
    kind = SOURCE_TYPES.get(cfg.type)
    if kind is None:  # validated config never gets here
        raise SourceError(f"source {name}: unknown type {cfg.type!r}")
    module, _, attr = kind.factory.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    source: Source = cls.from_config(name, cfg, clock)
    override = getattr(cfg, "circuit", None)
    if override is not None:  # the source made its breaker from its type's defaults
        source.circuit = CircuitBreaker(name, circuit_config(cfg.type, override),
                                        clock=source.clock)
    return source
