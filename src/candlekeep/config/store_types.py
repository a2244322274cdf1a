"""Store types, in one table: a ``type:`` name → its config model and its factory.

Adding a backend is one new module under ``candlekeep.stores`` with a ``from_config``
factory, its config model here and one row in STORE_TYPES. Factories are named by import
path and imported only when a store of that type is opened, so reading config never loads
a database driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class _StoreModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DuckDBStoreConfig(_StoreModel):
    type: Literal["duckdb"]
    path: str = "candles.duckdb"


class PostgresStoreConfig(_StoreModel):
    """``dsn`` may carry a password; it is a secret: never logged, never in an error."""

    type: Literal["postgresql"]
    dsn: SecretStr
    db_schema: str = Field(default="public", alias="schema", pattern=r"^[a-z_][a-z0-9_]*$")

    @field_validator("dsn")
    @classmethod
    def _postgres_url(cls, v: SecretStr) -> SecretStr:
        scheme = urlsplit(v.get_secret_value()).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ValueError("use a URL like postgresql://user@host:5432/dbname "
                             "(the password from ${PGPASSWORD} or ~/.pgpass)")
        return v


class ClickHouseStoreConfig(_StoreModel):
    """``url``: ``http(s)://user:pass@host:8123/db`` for a server (ClickHouse Cloud too), or
    ``chdb:///path`` for the embedded engine (one engine path per process)."""

    type: Literal["clickhouse"]
    url: SecretStr
    database: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    optimize_after_flush: bool = False

    @field_validator("url")
    @classmethod
    def _clickhouse_url(cls, v: SecretStr) -> SecretStr:
        scheme = urlsplit(v.get_secret_value()).scheme
        if scheme not in ("http", "https", "chdb", "clickhouse"):
            raise ValueError("use http(s)://user:password@host:8123/database or chdb:///path")
        return v


class BufferStoreConfig(_StoreModel):
    """A write-ahead buffer: writes land as Parquet files under ``path``; the ``flush`` job
    upserts them into every target."""

    type: Literal["buffer"]
    path: str
    targets: list[str] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class StoreType:
    config: type[BaseModel]
    factory: str  # "module:Class" whose ``from_config(name, cfg, env)`` opens the store


STORE_TYPES: dict[str, StoreType] = {
    "duckdb": StoreType(DuckDBStoreConfig, "candlekeep.stores.duckdb_store:DuckDBStore"),
    "postgresql": StoreType(PostgresStoreConfig,
                            "candlekeep.stores.postgres_store:PostgresStore"),
    "clickhouse": StoreType(ClickHouseStoreConfig,
                            "candlekeep.stores.clickhouse_store:ClickHouseStore"),
    "buffer": StoreType(BufferStoreConfig, "candlekeep.buffer.store:BufferStore"),
}
