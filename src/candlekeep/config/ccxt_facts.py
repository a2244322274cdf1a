"""What config validation needs to know about CCXT: its exchange ids and each exchange's
timeframes, without importing CCXT on every start.

Importing CCXT takes a third of a second, more than the rest of ``candlekeep list``
together, and the answers only change with CCXT's version. So they are kept in a small
file per CCXT version under the user's cache folder (``$XDG_CACHE_HOME/candlekeep``,
else ``~/.cache/candlekeep``), filled in the first time a question needs CCXT itself.
A cache that cannot be read or written is simply not used.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_facts: dict[str, Any] | None = None


def _path() -> Path | None:
    try:
        version = metadata.version("ccxt")
    except metadata.PackageNotFoundError:
        return None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "candlekeep" / f"ccxt-{version}.json"


def _load() -> dict[str, Any]:
    global _facts
    if _facts is None:
        _facts = {}
        path = _path()
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                raw = json.loads(path.read_text())
                if isinstance(raw, dict):
                    _facts = raw
    return _facts


def _save(facts: dict[str, Any]) -> None:
    path = _path()
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(facts, fh)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file


def exchange_ids() -> list[str]:
    """Every exchange id this CCXT knows."""
    with _lock:
        facts = _load()
        ids = facts.get("exchanges")
        if not isinstance(ids, list):
            import ccxt

            ids = list(ccxt.exchanges)
            facts["exchanges"] = ids
            _save(facts)
        return ids


def timeframes(exchange: str) -> set[str]:
    """The timeframes CCXT says ``exchange`` serves (empty: unknown, don't judge)."""
    with _lock:
        facts = _load()
        known = facts.setdefault("timeframes", {})
        if exchange not in known:
            import ccxt

            cls = getattr(ccxt, exchange, None)
            known[exchange] = sorted((cls().timeframes or {}) if cls is not None else {})
            _save(facts)
        return set(known[exchange])
