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
