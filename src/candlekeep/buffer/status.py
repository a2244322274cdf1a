"""What a buffer holds and what each target still lacks: the read model behind
``candlekeep buffer status`` and a dry-run flush."""

from __future__ import annotations

from dataclasses import dataclass

from candlekeep.buffer import acks
from candlekeep.buffer.store import BufferStore


@dataclass(frozen=True, slots=True)
class TargetLag:
    """Pending files (and their rows) the target has not acknowledged."""

    target: str
    files: int
    rows: int


@dataclass(frozen=True, slots=True)
class BufferStatus:
    name: str
    path: str
    files: int
    rows: int
    bytes: int
    oldest_ms: int | None
    """When the oldest pending file was written."""
    quarantined: int
    lags: list[TargetLag]

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "path": self.path, "files": self.files, "rows": self.rows,
                "bytes": self.bytes, "oldest_ms": self.oldest_ms,
                "quarantined": self.quarantined,
                "targets": {lag.target: {"files": lag.files, "rows": lag.rows}
                            for lag in self.lags}}


def buffer_status(buffer: BufferStore) -> BufferStatus:
    folder = buffer.folder
    files = folder.pending()
    have = acks.acked(buffer.state, buffer.ack_key) if files else {}
    lags = []
    for target in buffer.target_names:
        lacking = [f for f in files if target not in have.get(f.name, set())]
        lags.append(TargetLag(target, len(lacking), sum(f.rows for f in lacking)))
    return BufferStatus(
        name=buffer.name, path=str(folder.path), files=len(files),
        rows=sum(f.rows for f in files), bytes=sum(folder.size(f) for f in files),
        oldest_ms=files[0].written_ms if files else None,
        quarantined=len(folder.quarantined()), lags=lags)
