"""Query results from PostgreSQL as Arrow tables, without Python rows.

A ``COPY (query) TO STDOUT`` in CSV is parsed by Arrow's multi-threaded CSV reader straight
into the dataset's types. CSV rather than binary: Arrow reads it natively, and it tells NULL
(an unquoted empty field) from an empty string (``""``). Sessions run with ``TimeZone=UTC``,
``DateStyle=ISO`` and ``extra_float_digits=3``, so timestamps parse as written and floats
come back bit for bit. ``bytea`` arrives as ``\\x``-prefixed hex and is decoded here.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

_HEX = np.full(256, 0, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def copy_out(conn: psycopg.Connection[Any], query: str, params: list[Any],
             schema: pa.Schema) -> pa.Table:
    """Rows of ``query`` (its columns in ``schema`` order) as a table of ``schema``."""
    parts: list[bytes] = []
    with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT CSV)",
                                        params) as copy:
        parts.extend(bytes(block) for block in copy)
    if not parts:
        return schema.empty_table()
    return parse_csv(b"".join(parts), schema)


def _wire_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", t.tz)  # the server's precision; cast to the unit later
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return pa.string()
    return t


def parse_csv(data: bytes, schema: pa.Schema) -> pa.Table:
    table = pcsv.read_csv(
        io.BytesIO(data),
        read_options=pcsv.ReadOptions(column_names=schema.names),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(
            column_types={f.name: _wire_type(f.type) for f in schema},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
            true_values=["t"],
            false_values=["f"],
        ),
    )
    columns = []
    for field, column in zip(schema, table.columns, strict=True):
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            column = _unhex(column.combine_chunks())
        # a foreign table's sub-millisecond digits are cut to the dataset's unit
        columns.append(column.cast(field.type, safe=not pa.types.is_timestamp(field.type)))
    return pa.Table.from_arrays(columns, schema=schema)


def _unhex(text: pa.Array) -> pa.Array:
    """``\\x0a1b…`` strings (PostgreSQL's bytea output) as binary values."""
    if len(text) == 0:
        return pa.array([], pa.binary())
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset:text.offset + len(text) + 1]
    data = text.buffers()[2]
    chars = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    lengths = np.maximum(np.diff(offsets) - 2, 0)
    keep = np.repeat(offsets[:-1] + 2, lengths) + (
        np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    digits = _HEX[chars[keep]]
    raw = (digits[0::2] << 4) | digits[1::2]
    out_offsets = np.concatenate(([0], np.cumsum(lengths // 2))).astype(np.int32)
    values = pa.Array.from_buffers(pa.binary(), len(text),
                                   [None, pa.py_buffer(out_offsets), pa.py_buffer(raw)])
    return pc.if_else(text.is_valid(), values, pa.scalar(None, pa.binary()))
