"""Loading plug-ins from installed packages' entry points, for every registry that takes
them (job types, report sections).

A plug-in is used whole or not at all: one that fails to import, names the wrong kind of
object, or takes a name already registered is skipped, whatever its import registered is
undone, and the failure is logged and kept, so a broken package costs its own entries and
never the daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

Snapshot = TypeVar("Snapshot")


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that was skipped, and why."""

    kind: str
    """What the group registers, for people: ``job``, ``report section``."""
    entry_point: str
    target: str
    """What the entry point names, ``module:attribute``."""
    problem: str

    def __str__(self) -> str:
        return f"{self.kind} plug-in {self.entry_point!r} ({self.target}): {self.problem}"


def load_group(group: str, kind: str, load: Callable[[EntryPoint], None],
               snapshot: Callable[[], Snapshot], restore: Callable[[Snapshot], None],
               refusal: type[Exception], log: logging.Logger) -> list[PluginFailure]:
    """Run ``load`` for every entry point of ``group``; a plug-in whose ``load`` raises is
    rolled back to the registry's ``snapshot`` from before it, and logged on ``log``. A
    ``refusal`` exception's text is the problem as it stands; anything else is named with
    its type."""
    failures = []
    for ep in entry_points(group=group):
        before = snapshot()
        try:
            load(ep)
        except Exception as exc:  # a broken plug-in must not take the others down
            restore(before)
            problem = str(exc) if isinstance(exc, refusal) else f"{type(exc).__name__}: {exc}"
            failure = PluginFailure(kind, ep.name, ep.value, problem)
            failures.append(failure)
            log.error("skipped %s", failure)
    return failures
