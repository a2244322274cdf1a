"""Durability by path, for files written with the temp-file-then-rename (or link) pattern.

A rename or link is durable only once its directory is synced, and a file written through
a closed handle only once the file itself is: both take this one call.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync the file or directory at ``path`` (opened read-only: a directory cannot be
    opened for writing)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the whole new one,
    never a part: a temporary file beside it, synced, renamed over it, the folder synced.
    Creates the folder. OSError propagates (callers name the path in their failure)."""
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)
