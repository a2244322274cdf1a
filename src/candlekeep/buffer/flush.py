"""Flushing a buffer: pending files, oldest first, into every target, each acknowledged per
file and target; a file is deleted once every target has it.

Why it is safe to kill at any moment: a target's acknowledgement is recorded only after its
upsert committed, so a killed flush at worst writes a file to a target again, and upserts are
idempotent. Files go to a target strictly in name order and a target stops at its first
failure, so a later write of a key never lands before an earlier one; the same holds across
flushes, because what a target lacks is always the files after what it has. A file is deleted
before its acknowledgements, never after: a leftover row only names a missing file, while a
file without rows would be written to every target again, after newer files. A flush takes
only the files its listing is sure to hold without a gap (``BufferFolder.flushable``): a
listing racing writers can miss an older file while it holds a newer one.

Consecutive files of one dataset (and one column set) are concatenated into one upsert per
target, up to ``max_rows``: one transaction instead of dozens. The upsert de-duplicates the
concatenation with the last row winning, which is the later file's row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from candlekeep.buffer import acks
from candlekeep.buffer.files import BadFile, BufferFile, make_dir
from candlekeep.buffer.locks import exclusive
from candlekeep.buffer.store import BufferStore
from candlekeep.core.datasets import Dataset
from candlekeep.core.errors import StoreError

log = logging.getLogger("candlekeep.buffer")

MAX_ROWS = 500_000
"""Rows per coalesced upsert: large enough for one transaction to carry many small files,
small enough to hold in memory twice (the concatenation and the store's prepared copy)."""
WAIT_S = 60.0
"""How long a flush waits for another flush of the same buffer to finish."""


@dataclass
class TargetFlush:
    """One target in one flush; ``waiting_*`` is what it still lacks afterwards."""

    rows: int = 0
    files: int = 0
    error: str | None = None
    waiting_files: int = 0
    waiting_rows: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"rows": self.rows, "files": self.files, "error": self.error,
                "waiting_files": self.waiting_files, "waiting_rows": self.waiting_rows}


@dataclass
class FlushReport:
    buffer: str
    targets: dict[str, TargetFlush] = field(default_factory=dict)
    deleted: int = 0
    quarantined: dict[str, str] = field(default_factory=dict)
    """File → why."""
    pending: int = 0
    busy_pid: int | None = None
    """Set when another flush held the buffer for the whole wait (0: pid unknown)."""
    stopped: bool = False

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.targets.values())

    def as_dict(self) -> dict[str, object]:
        return {"targets": {n: t.as_dict() for n, t in self.targets.items()},
                "deleted": self.deleted, "quarantined": dict(self.quarantined),
                "pending": self.pending, "busy_pid": self.busy_pid, "stopped": self.stopped}


@dataclass(frozen=True, slots=True)
class _Item:
    file: BufferFile
    dataset: Dataset
    table: pa.Table


def flush(buffer: BufferStore, targets: Sequence[str] | None = None, *,
          max_rows: int = MAX_ROWS, wait_s: float = WAIT_S,
          stop: Callable[[], bool] | None = None,
          progress: Callable[[int], None] | None = None) -> FlushReport:
    """Write the buffer's pending files into ``targets`` (default: all of them).

    A target that fails is recorded in the report and skipped for the rest of this flush;
    the others go on. ``stop`` is asked between upserts; ``progress`` hears how many files
    were dealt with after each group.
    """
    chosen = list(buffer.target_names if targets is None else targets)
    unknown = [t for t in chosen if t not in buffer.target_names]
    if unknown:
        raise StoreError(f"buffer {buffer.name}: {', '.join(unknown)} is not one of its "
                         f"targets ({', '.join(buffer.target_names)})")
    report = FlushReport(buffer.name, {t: TargetFlush() for t in chosen})
    folder = buffer.folder
    try:
        make_dir(folder.path)
        with exclusive(folder.path, wait_s) as holder:
            if holder is not None:
                report.busy_pid = holder
                return report
            folder.sweep_temps()
            _Flush(buffer, chosen, report, max_rows, stop, progress).run()
    except OSError as exc:
        raise StoreError(f"buffer {buffer.name}: cannot flush {folder.path}: {exc}") from exc
    return report


def retry(buffer: BufferStore, names: Sequence[str] | None = None, *,
          wait_s: float = WAIT_S) -> list[BufferFile]:
    """Move quarantined files (all, or those named) back to pending, under the flush lock
    so that no flush sees half of them."""
    make_dir(buffer.folder.path)
    with exclusive(buffer.folder.path, wait_s) as holder:
        if holder is not None:
            raise StoreError(f"buffer {buffer.name} is being flushed by "
                             f"{f'process {holder}' if holder else 'another process'}; "
                             "try again when it has finished")
        return buffer.folder.unquarantine(names)


class _Flush:
    def __init__(self, buffer: BufferStore, chosen: list[str], report: FlushReport,
                 max_rows: int, stop: Callable[[], bool] | None,
                 progress: Callable[[int], None] | None) -> None:
        self.buffer = buffer
        self.chosen = chosen
        self.report = report
        self.max_rows = max_rows
        self.stop = stop or (lambda: False)
        self.progress = progress or (lambda n: None)
        self.all_targets = set(buffer.target_names)
        self.acks: acks.Acks = {}
        self.written: dict[str, dict[str, Dataset]] = {t: {} for t in chosen}
        self.key = buffer.ack_key

    def run(self) -> None:
        b, state = self.buffer, self.buffer.state
        files = b.folder.flushable()
        self.acks = acks.acked(state, self.key)
        self._forget_stale(files)
        done = [f for f in files if self._complete(f)]  # killed after the last ack
        todo = [f for f in files if not self._complete(f) and self._lacking(f)]
        self._delete(done)
        for group in self._groups(todo):
            for target in self.chosen:
                self._write(target, group)
            self._delete([i.file for i in group if self._complete(i.file)])
            self.progress(len(group))
            if self.stop():
                self.report.stopped = True
                break
        self._flushed()
        self._tally(b.folder.pending())

    def _lacking(self, f: BufferFile) -> list[str]:
        have = self.acks.get(f.name, set())
        return [t for t in self.chosen if t not in have and self.report.targets[t].error is None]

    def _complete(self, f: BufferFile) -> bool:
        return self.all_targets <= self.acks.get(f.name, set())

    def _forget_stale(self, files: list[BufferFile]) -> None:
        """Rows of files deleted by a flush killed before it dropped their rows."""
        present = {f.name for f in files} | {q.file.name for q in
                                             self.buffer.folder.quarantined()}
        stale = [name for name in self.acks if name not in present]
        if stale:
            acks.forget(self.buffer.state, self.key, stale)
            for name in stale:
                del self.acks[name]

    def _groups(self, files: list[BufferFile]) -> Iterator[list[_Item]]:
        """Runs of files of one dataset and column set, up to ``max_rows`` rows; files that
        cannot be read are quarantined on the way."""
        group: list[_Item] = []
        rows = 0
        for f in files:
            if not self._lacking(f):  # every chosen target that needs it has failed
                continue
            item = self._read(f)
            if item is None:
                continue
            if group and (not _same_shape(group[0], item) or rows + f.rows > self.max_rows):
                yield group
                group, rows = [], 0
            group.append(item)
            rows += f.rows
        if group:
            yield group

    def _read(self, f: BufferFile) -> _Item | None:
        folder = self.buffer.folder
        try:
            dataset, table = folder.read(f)
        except BadFile as exc:
            reason = str(exc)
            folder.quarantine(f, reason)
            self.report.quarantined[f.name] = reason
            log.error("buffer=%s quarantined file=%s reason=%s", self.buffer.name, f.name, reason)
            return None
        return _Item(f, dataset, table)

    def _write(self, target: str, group: list[_Item]) -> None:
        tally = self.report.targets[target]
        if tally.error is not None:
            return
        part = [i for i in group if target not in self.acks.get(i.file.name, set())]
        if not part:
            return
        dataset = part[0].dataset
        try:
            store = self.buffer.target(target)
            rows = store.upsert(dataset, pa.concat_tables([i.table for i in part]))
        except Exception as exc:  # any failure of one target must leave the others going
            tally.error = _describe(exc)
            log.error("buffer=%s target=%s failed error=%s", self.buffer.name, target,
                      tally.error)
            return
        files = [i.file for i in part]
        acks.record(self.buffer.state, self.key, target, files, self.buffer.now_ms())
        for f in files:
            self.acks.setdefault(f.name, set()).add(target)
        tally.rows += rows
        tally.files += len(files)
        self.written[target][dataset.name] = dataset

    def _delete(self, files: list[BufferFile]) -> None:
        if not files:
            return
        self.buffer.folder.delete(files)
        acks.forget(self.buffer.state, self.key, [f.name for f in files])
        for f in files:
            self.acks.pop(f.name, None)
        self.report.deleted += len(files)

    def _flushed(self) -> None:
        """Tell each target that took every file it lacked which datasets it received."""
        for target, datasets in self.written.items():
            tally = self.report.targets[target]
            if not datasets or tally.error is not None or self.report.stopped:
                continue
            try:
                self.buffer.target(target).flushed(list(datasets.values()))
            except Exception as exc:  # the rows are stored; the hook's failure is reported
                tally.error = f"after the flush: {_describe(exc)}"
                log.error("buffer=%s target=%s flushed-hook failed error=%s",
                          self.buffer.name, target, tally.error)

    def _tally(self, files: list[BufferFile]) -> None:
        self.report.pending = len(files)
        for target, tally in self.report.targets.items():
            lacking = [f for f in files if target not in self.acks.get(f.name, set())]
            tally.waiting_files = len(lacking)
            tally.waiting_rows = sum(f.rows for f in lacking)


def _same_shape(a: _Item, b: _Item) -> bool:
    return a.dataset == b.dataset and a.table.schema.equals(b.table.schema)


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
