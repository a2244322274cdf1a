"""Opening a store from its config through the type table (config.store_types)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

from candlekeep.config.store_types import STORE_TYPES
from candlekeep.core.errors import StoreError

if TYPE_CHECKING:
    from candlekeep.core.clock import Clock
    from candlekeep.state.db import StateDB
    from candlekeep.stores.base import Store


class StoreEnv(Protocol):
    """What a store factory may reach besides its own config: other stores (a buffer's
    targets), the state DB (a buffer's acknowledgements) and the clock."""

    clock: Clock

    @property
    def state(self) -> StateDB: ...

    def store(self, name: str) -> Store: ...


def make_store(name: str, cfg: Any, env: StoreEnv) -> Store:
    kind = STORE_TYPES.get(cfg.type)
    if kind is None:  # validated config never gets here
        raise StoreError(f"store {name}: unknown type {cfg.type!r}")
    module, _, attr = kind.factory.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        extra = {"clickhouse": "clickhouse"}.get(cfg.type)
        fix = f" (pip install 'candlekeep[{extra}]')" if extra else ""
        raise StoreError(f"store {name} (type {cfg.type}) cannot be loaded: {exc}{fix}") from exc
    store: Store = cls.from_config(name, cfg, env)
    return store
