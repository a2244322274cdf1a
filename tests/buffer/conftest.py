"""A buffer store ``buf`` in front of two database stores ``a`` and ``b``, from a config file
on disk so that child processes open exactly what the test opens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from candlekeep.buffer.store import BufferStore
from candlekeep.config import load_config
from candlekeep.jobs.runtime import Runtime

WriteConfig = Callable[..., Path]
OpenRuntime = Callable[[Path], Runtime]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """``write_config(b=None, **buffer_extra)``: the config file; ``b`` replaces target
    ``b``'s store config (default: a DuckDB file)."""

    def write(b: dict[str, Any] | None = None, **buffer_extra: Any) -> Path:
        cfg = {
            "data_dir": "data",
            "stores": {
                "buf": {"type": "buffer", "path": "data/buf", "targets": ["a", "b"],
                        **buffer_extra},
                "a": {"type": "duckdb", "path": "data/a.duckdb"},
                "b": b or {"type": "duckdb", "path": "data/b.duckdb"},
            },
        }
        path = tmp_path / "candlekeep.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    made: list[Runtime] = []
    yield made
    import asyncio

    for rt in made:
        asyncio.run(rt.aclose())


@pytest.fixture
def open_runtime(runtimes: list[Runtime]) -> OpenRuntime:
    def make(config: Path) -> Runtime:
        rt = Runtime(load_config(config))
        runtimes.append(rt)
        return rt

    return make


@pytest.fixture
def rt(write_config: WriteConfig, open_runtime: OpenRuntime) -> Runtime:
    return open_runtime(write_config())


@pytest.fixture
def buf(rt: Runtime) -> BufferStore:
    store = rt.store("buf")
    assert isinstance(store, BufferStore)
    return store

