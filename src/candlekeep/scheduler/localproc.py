"""Is a process on this host alive, and is it candlekeep? (PID files and node rows.)"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_candlekeep(pid: int) -> bool:
    """Whether ``pid`` runs candlekeep (True where that cannot be checked)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return pid_alive(pid) if not Path("/proc").is_dir() else False
    except OSError:
        return True
    return b"candlekeep" in cmdline


def instance_dead(instance: str) -> bool:
    """Whether the process behind an instance id (``host/pid/token``) is certainly gone:
    it ran on this host and its PID is dead or now something else. Unknown is alive."""
    parts = instance.split("/")
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid = parts[0], int(parts[1])
    if host != socket.gethostname()[:80] or pid == os.getpid():
        return False
    return not pid_alive(pid) or not is_candlekeep(pid)
