"""A buffer folder: one Parquet file per acknowledged batch, written so that a crash leaves
the whole file or nothing, and named so that names sort in the order files were written.

Layout under the buffer's ``path``::

    00001737000000000000123-4711-5000.parquet   pending: <sequence>-<pid>-<rows>
    .tmp-4711-9f3c….parquet                      being written (never read; swept later)
    quarantine/<file>.parquet                    unreadable or no longer fits its dataset
    quarantine/<file>.parquet.reason.txt         why
    .buffer-id                                   this folder's identity (see below)

The sequence is a nanosecond time taken under the folder's name lock (``locks.NameClock``),
so it orders files exactly and also tells how old a file is. Each file carries its dataset
(name, schema, key, version, time) in the Parquet metadata, so a flush can write any dataset,
registered in its process or not.

Which files a flush may take (``flushable``): ``os.listdir`` is not atomic against renames
into the folder, so a listing taken while writers rename files in can hold file n+1 and miss
file n; flushing n+1 and later n would let the older rows overwrite the newer. So a flush
first reads the last sequence handed out (``NameClock.mark``), then lists, and keeps only
files up to that mark. That is complete and gapless because a writer takes its number and
renames its file under the one name lock, and the mark is read under that lock: every file
numbered up to the mark was already in place before the listing began, and stays there
while it runs (only a flush, holding the flush lock, removes or moves pending files; a
listing returns every entry that is there throughout). Files past the mark may have been
renamed in mid-listing with a predecessor missed; the next flush takes them.

The folder's identity (``identity``) is a random id written once into ``.buffer-id``: the
state DB's acknowledgements are keyed by it, so hosts that share one state DB, each with its
own local folder under the same store name, never read or drop each other's.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from candlekeep.buffer.locks import NameClock
from candlekeep.core.datasets import Dataset, known
from candlekeep.core.errors import StoreError
from candlekeep.core.fsync import fsync_path

QUARANTINE = "quarantine"
IDENTITY = ".buffer-id"
REASON_SUFFIX = ".reason.txt"
TEMP_PREFIX = ".tmp-"
_META_KEY = b"candlekeep.dataset"
_FORMAT = 1
_NAME = re.compile(r"^(\d{20})-(\d+)-(\d+)\.parquet$")
_TEMP = re.compile(r"^\.tmp-(\d+)-[0-9a-f]+\.(parquet|txt)$")
_ID = re.compile(r"^[0-9a-f]{32}$")
TEMP_MAX_AGE_S = 3600.0
"""A temporary file this old is an abandoned write, even if its writer's pid is alive again
(reused): no single batch takes an hour to write."""


@dataclass(frozen=True, slots=True, order=True)
class BufferFile:
    """A pending (or quarantined) file; ordered by name, which is write order."""

    name: str
    seq: int
    rows: int

    @staticmethod
    def parse(name: str) -> BufferFile | None:
        m = _NAME.match(name)
        return BufferFile(name, int(m.group(1)), int(m.group(3))) if m else None

    @staticmethod
    def make(seq: int, rows: int) -> BufferFile:
        return BufferFile(f"{seq:020d}-{os.getpid()}-{rows}.parquet", seq, rows)

    @property
    def written_ms(self) -> int:
        return self.seq // 1_000_000


class BadFile(Exception):
    """A buffer file that cannot be flushed as it is; the message says why."""


@dataclass(frozen=True, slots=True)
class Quarantined:
    file: BufferFile
    bytes: int
    reason: str


def encode(dataset: Dataset, table: pa.Table) -> pa.Table:
    """``table`` with its dataset in the schema metadata."""
    info = {
        "format": _FORMAT,
        "name": dataset.name,
        "key": list(dataset.key),
        "version": dataset.version,
        "time": dataset.time,
        "schema": base64.b64encode(dataset.schema.serialize().to_pybytes()).decode(),
    }
    return table.replace_schema_metadata({_META_KEY: json.dumps(info).encode()})


def decode(table: pa.Table) -> tuple[Dataset, pa.Table]:
    """The dataset a file holds and its rows in that dataset's types; BadFile if the file
    was not written by a buffer or no longer fits the dataset as this process knows it."""
    raw = (table.schema.metadata or {}).get(_META_KEY)
    if raw is None:
        raise BadFile("no candlekeep dataset in its metadata: not written by a buffer")
    try:
        info = json.loads(raw)
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(info["schema"])))
        written = Dataset(info["name"], schema, tuple(info["key"]), info.get("version"),
                          info.get("time"))
    except (ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        raise BadFile(f"its dataset metadata is unreadable: {exc}") from None
    dataset = known(written.name) or written
    if dataset.key != written.key:
        raise BadFile(f"dataset {dataset.name} is now keyed on ({', '.join(dataset.key)}), "
                      f"the file on ({', '.join(written.key)})")
    try:
        rows = dataset.conform(table.replace_schema_metadata(None))
    except StoreError as exc:
        raise BadFile(f"it no longer fits dataset {dataset.name}: {exc}") from None
    return dataset, rows


class BufferFolder:
    """The files of one buffer store; every method is safe against other processes
    writing the same folder."""

    def __init__(self, buffer: str, path: Path) -> None:
        self.buffer = buffer
        self.path = path
        self._names = NameClock(path, self._highest_seq)
        self._id: str | None = None

    # ---- writing

    def write(self, dataset: Dataset, table: pa.Table) -> BufferFile:
        """Write ``table`` as one new pending file and return once it is durable: written,
        fsynced, renamed into place, and the rename fsynced too."""
        tmp = self.path / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}.parquet"
        try:
            make_dir(self.path)
            pq.write_table(encode(dataset, table), tmp, compression="lz4",
                           write_statistics=False)
            fsync_path(tmp)
            with self._names.claim() as seq:
                file = BufferFile.make(seq, table.num_rows)
                os.rename(tmp, self.path / file.name)
            fsync_path(self.path)
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StoreError(
                f"buffer {self.buffer}: cannot write a batch of {table.num_rows} rows of "
                f"{dataset.name} under {self.path}: {_cause(exc)}; nothing of it was stored "
                "(free disk space or make the folder writable, then run the job again)"
            ) from exc
        return file

    def check_writable(self) -> None:
        """Raise StoreError unless a batch could be written now."""
        probe = self.path / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}.parquet"
        try:
            make_dir(self.path)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"buffer {self.buffer}: cannot write under {self.path}: "
                             f"{_cause(exc)} (make the folder writable)") from exc

    def identity(self) -> str:
        """This folder's id, created (durably, once, whichever process comes first) on
        first use."""
        if self._id is None:
            path = self.path / IDENTITY
            try:
                self._id = _read_id(path) or _create_id(self.path, path)
            except OSError as exc:
                raise StoreError(f"buffer {self.buffer}: cannot read or create {path}: "
                                 f"{_cause(exc)} (make the folder writable)") from exc
        return self._id

    def _highest_seq(self) -> int:
        files = [*self.pending(), *(q.file for q in self.quarantined())]
        return max((f.seq for f in files), default=0)

    # ---- reading

    def pending(self) -> list[BufferFile]:
        """Files waiting to be flushed, oldest first."""
        return self._files(self.path)

    def flushable(self) -> list[BufferFile]:
        """Pending files a flush may take, oldest first, with none missing between them:
        only files up to the name mark read before listing (see the module docstring).
        Call it holding the flush lock."""
        mark = self._names.mark()
        return [f for f in self.pending() if f.seq <= mark]

    def _files(self, folder: Path) -> list[BufferFile]:
        return sorted(f for f in map(BufferFile.parse, _names(self.buffer, folder)) if f)

    def read(self, file: BufferFile) -> tuple[Dataset, pa.Table]:
        """BadFile when the file is damaged or no longer fits; StoreError when the folder
        cannot be read (which moving the file would not cure)."""
        path = self.path / file.name
        try:
            table = pq.ParquetFile(path).read()
        except OSError as exc:
            if exc.errno is not None:  # the file system, not the file's content
                raise StoreError(f"buffer {self.buffer}: cannot read {path}: "
                                 f"{_cause(exc)}") from exc
            raise BadFile(f"unreadable Parquet: {exc}") from None
        except pa.ArrowException as exc:
            raise BadFile(f"unreadable Parquet: {exc}") from None
        if table.num_rows != file.rows:
            raise BadFile(f"holds {table.num_rows} rows, its name says {file.rows}")
        return decode(table)

    def size(self, file: BufferFile) -> int:
        try:
            return (self.path / file.name).stat().st_size
        except FileNotFoundError:
            return 0

    # ---- after a flush

    def delete(self, files: Sequence[BufferFile]) -> None:
        for f in files:
            (self.path / f.name).unlink(missing_ok=True)
        if files:
            fsync_path(self.path)

    def sweep_temps(self) -> int:
        """Remove temporary files of writes that died (their process is gone, or they are
        older than any write takes); returns how many."""
        removed = 0
        now = time.time()
        folders = (self.path, self.path / QUARANTINE)
        for folder, name in ((f, n) for f in folders for n in _names(self.buffer, f)):
            m = _TEMP.match(name)
            if m is None:
                continue
            path = folder / name
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age > TEMP_MAX_AGE_S or not _alive(int(m.group(1))):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # ---- quarantine

    def quarantine(self, file: BufferFile, reason: str) -> None:
        """Move a file out of the pending set, with its reason beside it (written first, so
        a quarantined file always has one)."""
        folder = self.path / QUARANTINE
        folder.mkdir(exist_ok=True)
        note = folder / (file.name + REASON_SUFFIX)
        when = datetime.now(UTC).isoformat(timespec="seconds")
        text = (f"{reason}\n\nquarantined {when}; after fixing the cause: "
                f"candlekeep buffer quarantine retry {file.name}\n")
        _write_atomic(note, text.encode())
        os.rename(self.path / file.name, folder / file.name)
        fsync_path(folder)
        fsync_path(self.path)

    def quarantined(self) -> list[Quarantined]:
        folder = self.path / QUARANTINE
        out = []
        for f in self._files(folder):
            note = folder / (f.name + REASON_SUFFIX)
            try:
                reason = note.read_text().split("\n\n", 1)[0]
            except FileNotFoundError:
                reason = "(no reason file)"
            try:
                size = (folder / f.name).stat().st_size
            except FileNotFoundError:
                continue
            out.append(Quarantined(f, size, reason))
        return out

    def unquarantine(self, names: Iterable[str] | None = None) -> list[BufferFile]:
        """Move quarantined files (all, or those named) back to pending. Call it holding
        the flush lock, so a flush never sees a half-moved set."""
        held = {q.file.name: q.file for q in self.quarantined()}
        wanted = list(held) if names is None else list(dict.fromkeys(Path(n).name
                                                                     for n in names))
        unknown = [n for n in wanted if n not in held]
        if unknown:
            raise StoreError(f"buffer {self.buffer}: not in quarantine: {', '.join(unknown)} "
                             f"(quarantined: {', '.join(held) or 'none'})")
        folder = self.path / QUARANTINE
        moved = []
        try:
            for name in wanted:
                os.rename(folder / name, self.path / name)
                (folder / (name + REASON_SUFFIX)).unlink(missing_ok=True)
                moved.append(held[name])
        except OSError as exc:
            raise StoreError(
                f"buffer {self.buffer}: cannot move {exc.filename} back to pending: "
                f"{_cause(exc)}; moved before it: {', '.join(f.name for f in moved) or 'none'}"
                " (see candlekeep buffer quarantine list, then retry)") from exc
        finally:
            if moved:
                fsync_path(self.path)
                fsync_path(folder)
        return moved

    def close(self) -> None:
        self._names.close()


def _names(buffer: str, folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"buffer {buffer}: cannot list {folder}: {_cause(exc)}") from exc


def make_dir(path: Path) -> None:
    """``mkdir -p`` whose new folders survive a power cut: each one's entry in its parent
    is fsynced, so a file later made durable in it is not lost with its folder."""
    missing = []
    at = path
    while not at.exists():
        missing.append(at)
        if at.parent == at:
            break
        at = at.parent
    path.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        fsync_path(made.parent)


def _read_id(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not _ID.match(text):
        raise StoreError(f"{path} holds no buffer id ({text[:40]!r}); it is written once "
                         "when a buffer folder is first used: restore it from a backup, or "
                         "delete it if no acknowledgement in the state DB needs keeping")
    return text


def _create_id(folder: Path, path: Path) -> str:
    """Link a fully written, fsynced file into place: never a half-written id, and the
    first of two racing processes wins (the other reads its id)."""
    make_dir(folder)
    new = secrets.token_hex(16)
    tmp = folder / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}.txt"
    with open(tmp, "w") as f:
        f.write(new + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return _read_id(path) or _create_id(folder, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(folder)
    return new


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}.txt")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _cause(exc: OSError) -> str:
    if exc.errno:
        code = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{exc.strerror or os.strerror(exc.errno)} [{code}]"
    return str(exc)
