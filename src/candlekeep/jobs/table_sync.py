"""The ``sync`` job type: copy tables incrementally from one configured store to another.

This module holds what registering the job type needs (its params); the copying lives in
``table_sync_copy`` and is imported when a run starts, because registering job types
happens on every ``candlekeep list``, which must not load pyarrow.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from candlekeep.jobs.base import JobContext, JobResult, Params
from candlekeep.jobs.registry import job_type

_NAME = r"^[a-z_][a-z0-9_]{0,62}$"
"""Table and column names a dataset accepts (core.datasets)."""


class SyncTable(Params):
    """One table to copy. ``cursor``: the column whose value grows as rows are added or
    changed (inferred when not set); ``key``: for a source table without a primary or
    sorting key; ``target``: another name in the target store."""

    name: str = Field(pattern=_NAME)
    cursor: str | None = Field(default=None, pattern=_NAME)
    target: str | None = Field(default=None, pattern=_NAME)
    key: tuple[str, ...] | None = Field(default=None, min_length=1)

    @property
    def target_name(self) -> str:
        return self.target or self.name


class SyncParams(Params):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)
    tables: tuple[SyncTable, ...] = Field(min_length=1)
    batch_rows: int = Field(default=100_000, ge=1)

    @field_validator("tables", mode="before")
    @classmethod
    def _bare_names(cls, value: Any) -> Any:
        """``tables: [candles, fills]`` is short for ``[{name: candles}, {name: fills}]``."""
        if isinstance(value, list | tuple):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _one_writer_per_target(self) -> SyncParams:
        targets = [t.target_name for t in self.tables]
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise ValueError(f"target table {twice[0]!r} is written by two items; "
                             "give one of them another `target:`")
        if self.from_ == self.to:
            onto_itself = [t.name for t in self.tables if t.target_name == t.name]
            if onto_itself:
                raise ValueError(f"table {onto_itself[0]!r} would be copied onto itself; "
                                 "set `target:` or another store in `to:`")
        return self


@job_type("sync", SyncParams, "Copy tables incrementally between two stores, by a cursor "
          "column.")
async def sync(ctx: JobContext, p: SyncParams) -> JobResult:
    from candlekeep.jobs.table_sync_copy import sync_tables

    return await sync_tables(ctx, p)
