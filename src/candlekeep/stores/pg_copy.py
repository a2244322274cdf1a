"""PostgreSQL's binary COPY format, written from Arrow columns with numpy.

psycopg's ``Copy.write_row`` encodes value by value in Python (about 14 s for a million
candles); this writes whole chunks of rows with array operations.

A binary COPY row is a 16-bit field count, then per field a 32-bit length (-1: NULL) and the
value's bytes, all big-endian. Rows whose fields all have the same lengths (same NULLs, same
string lengths) share one byte layout, so a numpy structured dtype with big-endian fields
describes them and the values are copied in column by column. Candle batches hold a handful
of such layouts per chunk (a few symbol lengths, a NULL or not in the optional columns); rows
are written grouped by layout, which COPY does not mind (the order of rows in a table is not
data). A chunk with more layouts than that pays off for (long free-text columns of varying
length) is written by scattering bytes to their computed positions instead.

Types without a binary encoder here (decimals, and anything else Arrow can turn into a
string) are sent as text; the INSERT that reads the staging table casts every column to its
target column's type anyway.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

CHUNK_ROWS = 1 << 16
"""Rows encoded at a time: keeps the working buffers in cache and the memory bounded."""

_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, PostgreSQL's epoch, in Unix microseconds
_PG_EPOCH_DAYS = 10_957
_US_PER = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1}

# (staging type, big-endian numpy dtype) of the fixed-width types
_FIXED: dict[pa.DataType, tuple[str, str]] = {
    pa.float64(): ("DOUBLE PRECISION", ">f8"),
    pa.float32(): ("REAL", ">f4"),
    pa.int64(): ("BIGINT", ">i8"),
    pa.int32(): ("INTEGER", ">i4"),
    pa.int16(): ("SMALLINT", ">i2"),
    pa.int8(): ("SMALLINT", ">i2"),
    pa.uint8(): ("SMALLINT", ">i2"),
    pa.uint16(): ("INTEGER", ">i4"),
    pa.uint32(): ("BIGINT", ">i8"),
    pa.bool_(): ("BOOLEAN", "u1"),
    pa.date32(): ("DATE", ">i4"),
}

# Beyond this many layouts per row of a chunk, building one dtype per layout costs more
# than scattering the chunk's bytes one by one.
_ROWS_PER_LAYOUT = 64


def stage_type(t: pa.DataType) -> str:
    """The column type a staging table declares for Arrow type ``t``: what the bytes written
    here are, in PostgreSQL's terms."""
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if t in _FIXED:
        return _FIXED[t][0]
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTEA"
    return "TEXT"


@dataclass(frozen=True, slots=True)
class _Piece:
    """One column of one chunk, ready to write: the field length of each row (-1: NULL; an
    int when all rows share it) and either fixed-width values (``dtype`` is their big-endian
    wire type) or variable-length bytes (row i: ``data[starts[i]:starts[i] + length]``)."""

    lengths: np.ndarray | int
    dtype: str = ""
    values: np.ndarray | None = None
    data: np.ndarray | None = None
    starts: np.ndarray | None = None

    def lengths_of(self, rows: np.ndarray | slice) -> np.ndarray | int:
        return self.lengths if isinstance(self.lengths, int) else self.lengths[rows]


def _piece(arr: pa.Array) -> _Piece:
    t = arr.type
    valid = _valid(arr)
    if pa.types.is_timestamp(t):
        raw = _ints(arr.cast(pa.int64()))
        us = raw // 1000 if t.unit == "ns" else raw * _US_PER[t.unit]
        return _fixed(us - _PG_EPOCH_US, ">i8", valid)
    if pa.types.is_date64(t):
        days = _ints(arr.cast(pa.int64())) // 86_400_000
        return _fixed(days - _PG_EPOCH_DAYS, ">i4", valid)
    if t in _FIXED:
        if t == pa.date32():
            return _fixed(_ints(arr.cast(pa.int32())) - _PG_EPOCH_DAYS, ">i4", valid)
        if t == pa.bool_():
            return _fixed(_ints(arr.cast(pa.uint8())), "u1", valid)
        return _fixed(_ints(arr), _FIXED[t][1], valid)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        arr = arr.cast(pa.large_string())  # sent as text, cast by the INSERT
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64 if large else np.int32)[arr.offset:arr.offset + n + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1].astype(np.int64)
    lengths = np.diff(offsets).astype(np.int32)
    if valid is not None:
        lengths[~valid] = -1
    return _Piece(_constant(lengths), data=data, starts=starts)


def _valid(arr: pa.Array) -> np.ndarray | None:
    if arr.null_count == 0:
        return None
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _ints(arr: pa.Array) -> np.ndarray:
    """The values of a numeric array (anything under a NULL), without copying when it can."""
    if arr.null_count:
        arr = pc.fill_null(arr, pa.scalar(0, arr.type))
    return np.asarray(arr.to_numpy(zero_copy_only=False))


def _fixed(values: np.ndarray, dtype: str, valid: np.ndarray | None) -> _Piece:
    width = np.dtype(dtype).itemsize
    lengths: np.ndarray | int = width
    if valid is not None:
        lengths = np.where(valid, width, -1).astype(np.int32)
    return _Piece(lengths, dtype=dtype, values=values)


def _constant(lengths: np.ndarray) -> np.ndarray | int:
    if len(lengths) and int(lengths.min()) == int(lengths.max()):
        return int(lengths[0])
    return lengths


def copy_chunks(table: pa.Table, chunk_rows: int = CHUNK_ROWS,
                scatter: bool = False) -> Iterator[bytes | memoryview]:
    """``table`` as binary COPY data (header, rows, trailer), in pieces to write one by one.
    ``scatter`` forces the byte-scatter writer (for tests of both writers)."""
    table = table.combine_chunks()
    arrays = [c.chunk(0) if c.num_chunks else pa.array([], c.type) for c in table.columns]
    yield HEADER
    for start in range(0, table.num_rows, chunk_rows):
        pieces = [_piece(a.slice(start, chunk_rows)) for a in arrays]
        m = min(chunk_rows, table.num_rows - start)
        yield _scatter(pieces, m) if scatter else _by_layout(pieces, m)
    yield TRAILER


def _layout_codes(pieces: list[_Piece], m: int) -> np.ndarray | None:
    """One int64 per row naming its layout (the tuple of its field lengths), or None when
    the layouts are too many to number in 63 bits."""
    code = np.zeros(m, np.int64)
    space = 1
    for p in pieces:
        if isinstance(p.lengths, int):
            continue
        lo, hi = int(p.lengths.min()), int(p.lengths.max())
        size = hi - lo + 1
        if space > (1 << 62) // size:
            return None
        code = code * size + (p.lengths - lo)
        space *= size
    return code


def _by_layout(pieces: list[_Piece], m: int) -> bytes | memoryview:
    if all(isinstance(p.lengths, int) for p in pieces):
        return _write_layout(pieces, slice(None), m)
    code = _layout_codes(pieces, m)
    if code is None:
        return _scatter(pieces, m)
    order = np.argsort(code, kind="stable")
    sorted_codes = code[order]
    cuts = np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1
    if (len(cuts) + 1) * _ROWS_PER_LAYOUT > m:
        return _scatter(pieces, m)
    bounds = [0, *cuts.tolist(), m]
    return b"".join(_write_layout(pieces, order[a:b], b - a)
                    for a, b in itertools.pairwise(bounds))


def _write_layout(pieces: list[_Piece], rows: np.ndarray | slice, m: int) -> memoryview:
    """Rows that share one layout, as one structured array."""
    first = 0 if isinstance(rows, slice) else int(rows[0])
    lengths = [p.lengths if isinstance(p.lengths, int) else int(p.lengths[first])
               for p in pieces]
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for i, (p, length) in enumerate(zip(pieces, lengths, strict=True)):
        fields.append((f"l{i}", ">i4"))
        if length > 0:
            fields.append((f"v{i}", p.dtype or f"S{length}"))
    rec = np.empty(m, np.dtype(fields))
    rec["n"] = len(pieces)
    for i, (p, length) in enumerate(zip(pieces, lengths, strict=True)):
        rec[f"l{i}"] = length
        if length <= 0:
            continue
        if p.values is not None:
            rec[f"v{i}"] = p.values[rows]
        else:
            rec[f"v{i}"] = _var_values(p, rows, m, length)
    return rec.view(np.uint8).data


def _var_values(p: _Piece, rows: np.ndarray | slice, m: int, length: int) -> np.ndarray:
    """The bytes of rows that all have ``length`` of them, as ``S<length>`` values."""
    assert p.data is not None and p.starts is not None
    if isinstance(rows, slice):  # the whole chunk, so its bytes lie back to back
        first = int(p.starts[0])
        return p.data[first:first + m * length].view(f"S{length}")
    idx = p.starts[rows][:, None] + np.arange(length)
    values: np.ndarray = p.data[idx].view(f"S{length}").reshape(m)
    return values


def _scatter(pieces: list[_Piece], m: int) -> bytes:
    """Any mix of layouts: every byte goes to its computed position."""
    lengths = [np.broadcast_to(np.asarray(p.lengths, np.int64), (m,)) for p in pieces]
    cell = [4 + np.maximum(ln, 0) for ln in lengths]
    row_size = 2 + np.sum(cell, axis=0)
    row_start = np.concatenate(([0], np.cumsum(row_size)[:-1]))
    out = np.empty(int(row_size.sum()), np.uint8)
    _put(out, row_start, np.full(m, len(pieces), ">i2"))
    pos = row_start + 2
    for p, ln, size in zip(pieces, lengths, cell, strict=True):
        _put(out, pos, ln.astype(">i4"))
        have = ln > 0
        if p.values is not None:
            _put(out, (pos + 4)[have], p.values[have].astype(p.dtype))
        elif bool(have.any()):
            assert p.data is not None and p.starts is not None
            n_bytes = ln[have]
            total = int(n_bytes.sum())
            first = np.concatenate(([0], np.cumsum(n_bytes)[:-1]))
            shift = np.arange(total) - np.repeat(first, n_bytes)
            src = np.repeat(p.starts[have], n_bytes) + shift
            dst = np.repeat((pos + 4)[have], n_bytes) + shift
            out[dst] = p.data[src]
        pos = pos + size
    return out.tobytes()


def _put(out: np.ndarray, positions: np.ndarray, values: np.ndarray) -> None:
    """Write each big-endian value's bytes at its position."""
    width = values.dtype.itemsize
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(len(values), width)
    out[positions[:, None] + np.arange(width)] = raw
